//! An axum service behind the Portcullis layers, with its own local issuer; see the README.

use std::{
    net::SocketAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::{
    rand::SystemRandom,
    rsa::{KeyPair, KeySize, PublicKeyComponents},
    signature::{KeyPair as _, RSA_PKCS1_SHA256},
};
use axum::{Json, Router, routing::get};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use portcullis::{
    AuthenticateLayer, OrgContextLayer, OrgId, Principal, RequireScopesLayer,
    jwt::{Issuer, JwtVerifier},
};
use serde_json::{Value, json};

const KID: &str = "demo-1";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sign(key: &KeyPair, claims: &Value) -> String {
    let header = json!({"alg": "RS256", "kid": KID, "typ": "JWT"});
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
    format!("{message}.{}", b64(&sig))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,portcullis=debug".into()),
        )
        .init();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let issuer = format!("http://{addr}");

    let key = KeyPair::generate(KeySize::Rsa2048).expect("key generation works");
    let public = PublicKeyComponents::<Vec<u8>>::from(key.public_key());
    let jwks = json!({"keys": [{"kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256",
        "n": b64(&public.n), "e": b64(&public.e)}]});

    let verifier = JwtVerifier::builder()
        .issuer(Issuer::new(issuer.clone()))
        .build()
        .expect("valid configuration");

    let app = Router::new()
        .route(
            "/api/v1/orgs/{org}/comps",
            get(|p: Principal, org: OrgId| async move {
                Json(json!({"org": org, "subject": p.subject(), "scopes": p.scopes()}))
            }),
        )
        .route_layer(RequireScopesLayer::all(["comps:read"]))
        .route(
            "/api/v1/orgs/{org}/reports",
            axum::routing::post(|org: OrgId| async move { Json(json!({"created_in": org})) })
                .route_layer(RequireScopesLayer::all(["reports:write"])),
        )
        .route_layer(OrgContextLayer::new())
        .route(
            "/api/v1/me",
            get(|p: Principal| async move {
                Json(json!({"subject": p.subject(), "org": p.org_id(), "role": p.org_role(), "scopes": p.scopes()}))
            }),
        )
        .layer(AuthenticateLayer::new(verifier))
        .route("/.well-known/jwks.json", get(move || async move { Json(jwks) }));

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |sub: &str, org: &str, role: &str, perms: &[&str]| {
        sign(
            &key,
            &json!({
                "iss": issuer, "sub": sub, "sid": format!("sess_{sub}"), "iat": now, "nbf": now,
                "exp": now + 3600, "org_id": org, "org_role": format!("org:{role}"),
                "org_permissions": perms.iter().map(|p| format!("org:{p}")).collect::<Vec<_>>(),
            }),
        )
    };
    let admin = token(
        "user_admin",
        "org_a",
        "admin",
        &["comps:read", "reports:write", "api_keys:manage"],
    );
    let viewer = token("user_viewer", "org_a", "read_only", &["comps:read"]);
    let other = token(
        "user_other",
        "org_b",
        "admin",
        &["comps:read", "reports:write"],
    );
    let base = format!("http://{addr}/api/v1/orgs/org_a");
    println!("Portcullis demo on http://{addr} (tokens valid for an hour)\n");
    println!(
        "# 200: an admin of org_a reads comps\ncurl -i {base}/comps -H 'Authorization: Bearer {admin}'\n"
    );
    println!(
        "# 403 insufficient_scope: a read_only member of org_a writes a report\ncurl -i -X POST {base}/reports -H 'Authorization: Bearer {viewer}'\n"
    );
    println!(
        "# 403 org_forbidden: an admin of org_b reads org_a\ncurl -i {base}/comps -H 'Authorization: Bearer {other}'\n"
    );
    println!(
        "# 401: no credential, then a garbled one\ncurl -i {base}/comps\ncurl -i {base}/comps -H 'Authorization: Bearer not.a.token'\n"
    );

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("the port is free");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("the server runs");
}
