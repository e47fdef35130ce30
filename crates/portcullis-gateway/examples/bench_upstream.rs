//! The upstream and issuer of `scripts/loadtest`: answers every request with a small fixed body,
//! serves a fresh RS256 key as JWKS, and prints one token of that issuer on standard output.
//!
//! `cargo run --release -p portcullis-gateway --example bench_upstream -- 127.0.0.1:9101`

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::{
    rand::SystemRandom,
    rsa::{KeyPair, KeySize, PublicKeyComponents},
    signature::{KeyPair as _, RSA_PKCS1_SHA256},
};
use axum::{Json, Router, routing::get};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::json;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9101".into());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("the address is free");
    let issuer = format!("http://{}", listener.local_addr().expect("bound"));

    let key = KeyPair::generate(KeySize::Rsa2048).expect("key generation works");
    let public = PublicKeyComponents::<Vec<u8>>::from(key.public_key());
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "bench", "use": "sig", "alg": "RS256",
        "n": b64(&public.n), "e": b64(&public.e)}]});
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let claims = json!({
        "iss": issuer, "sub": "user_bench", "sid": "sess_bench", "iat": now, "nbf": now,
        "exp": now + 4 * 3600, "org_id": "org_a", "org_role": "org:member",
        "org_permissions": ["org:comps:read"],
    });
    let header = json!({"alg": "RS256", "kid": "bench", "typ": "JWT"});
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        message.as_bytes(),
        &mut sig,
    )
    .expect("signing works");
    println!("ISSUER={issuer}");
    println!("TOKEN={message}.{}", b64(&sig));

    let app = Router::new()
        .route(
            "/.well-known/jwks.json",
            get(move || async move { Json(jwks) }),
        )
        .fallback(|| async { "ok\n" });
    axum::serve(listener, app).await.expect("the server runs");
}
