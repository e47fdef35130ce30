//! The upstream and issuer of `scripts/loadtest`: answers every request with a small fixed body,
//! serves a fresh RS256 key as JWKS, and prints one token of that issuer on standard output.
//!
//! `cargo run --release -p portcullis-gateway --example bench_upstream -- 127.0.0.1:9101`

use std::time::{SystemTime, UNIX_EPOCH};

use axum::{Json, Router, routing::get};
use portcullis_gateway::issuer::LocalIssuer;
use serde_json::json;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9101".into());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("the address is free");
    let issuer = format!("http://{}", listener.local_addr().expect("bound"));

    let key = LocalIssuer::generate("bench");
    let jwks = key.jwks();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let token = key.sign(&json!({
        "iss": issuer, "sub": "user_bench", "sid": "sess_bench", "iat": now, "nbf": now,
        "exp": now + 4 * 3600, "org_id": "org_a", "org_role": "org:member",
        "org_permissions": ["org:comps:read"],
    }));
    println!("ISSUER={issuer}");
    println!("TOKEN={token}");

    let app = Router::new()
        .route(
            "/.well-known/jwks.json",
            get(move || async move { Json(jwks) }),
        )
        .fallback(|| async { "ok\n" });
    axum::serve(listener, app).await.expect("the server runs");
}
