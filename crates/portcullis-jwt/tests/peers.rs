//! Tokens minted by other implementations: node `jose` (RS256, PS256, ES256, EdDSA) and a real
//! OpenID provider (`oidc-provider`) on loopback, through discovery, its JWKS, and a key rotation.
//! The peers are installed by `tests/peers/install.sh`, which the test command runs.

mod support;

use std::{path::PathBuf, process::Stdio, time::Duration};

use http::StatusCode;
use portcullis_jwt::{Issuer, JwtVerifier};
use serde_json::{Value, json};
use support::*;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tower::ServiceExt;

fn peers() -> PathBuf {
    portcullis_test_support::node_peers()
}

/// Ask `mint.mjs` for a fresh key pair and a token signed with it.
async fn mint(alg: &str, claims: &Value) -> (Value, String) {
    let request = json!({"alg": alg, "kid": format!("jose-{alg}"), "claims": claims});
    let answer = portcullis_test_support::node_peer("mint.mjs", &request).await;
    (
        answer["jwks"].clone(),
        answer["token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn tokens_from_node_jose_verify() {
    for alg in ["RS256", "PS256", "ES256", "EdDSA"] {
        let server = JwksServer::start(json!({"keys": []})).await;
        let claims = claims(&server.issuer());
        let (jwks, token) = mint(alg, &claims).await;
        server.set(jwks);
        let verifier = JwtVerifier::builder()
            .issuer(Issuer::new(server.issuer()))
            .build()
            .unwrap();
        let p = verifier
            .verify_token(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(p.subject(), "user_1", "{alg}");
        assert_eq!(p.org_id().unwrap(), "org_a");
        assert_eq!(p.scopes().to_string(), "comps:read reports:write");
        // The same token with one flipped signature byte is refused.
        let (msg, sig) = token.rsplit_once('.').unwrap();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        let bad = format!("{msg}.{flipped}{}", &sig[1..]);
        assert!(verifier.verify_token(&bad).await.is_err(), "{alg}");
    }
}

struct Provider {
    child: Child,
    issuer: String,
}

async fn generate_key() -> Value {
    let out = Command::new("node")
        .arg(peers().join("oidc.mjs"))
        .env("GEN_KEYS_FILE", "1")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["keys"][0].clone()
}

async fn start_provider(keys_file: &std::path::Path, port: u16) -> Provider {
    let mut child = Command::new("node")
        .arg(peers().join("oidc.mjs"))
        .env("PORT", port.to_string())
        .env("KEYS_FILE", keys_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the provider starts")
        .unwrap()
        .unwrap();
    let issuer = line.strip_prefix("READY ").expect("READY line").to_owned();
    Provider { child, issuer }
}

async fn access_token(issuer: &str) -> String {
    let res = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth("svc", Some("svc-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&resource=urn%3Aportcullis%3Atest&scope=comps%3Aread")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let body: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn openid_provider_discovery_jwks_and_rotation() {
    let dir = std::env::temp_dir().join(format!("portcullis-oidc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys_file = dir.join("keys.json");
    let old_key = generate_key().await;
    std::fs::write(&keys_file, json!({"keys": [old_key]}).to_string()).unwrap();

    let mut provider = start_provider(&keys_file, 0).await;
    let issuer = provider.issuer.clone();
    let port: u16 = issuer.rsplit(':').next().unwrap().parse().unwrap();
    let verifier = JwtVerifier::builder()
        .issuer(
            Issuer::new(issuer.clone())
                .discovery()
                .audience("urn:portcullis:test")
                .token_type("at+jwt"),
        )
        .jwks_cooldown(Duration::from_millis(200))
        .build()
        .unwrap();
    let (app, _) = app(verifier.clone());

    let old_token = access_token(&issuer).await;
    let p = verifier.verify_token(&old_token).await.unwrap();
    assert_eq!(p.subject(), "svc");
    assert_eq!(p.org_id().unwrap(), "org_oidc");
    assert_eq!(p.org_role(), Some("member"));
    assert_eq!(p.scopes().to_string(), "comps:read");
    let res = app
        .clone()
        .oneshot(get_with("/orgs/org_oidc/comps", &old_token))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // Rotate: the provider now signs with a new key and still publishes the old one.
    let new_key = generate_key().await;
    std::fs::write(&keys_file, json!({"keys": [new_key, old_key]}).to_string()).unwrap();
    provider.child.kill().await.unwrap();
    let mut provider = start_provider(&keys_file, port).await;
    assert_eq!(provider.issuer, issuer);
    tokio::time::sleep(Duration::from_millis(250)).await;

    let new_token = access_token(&issuer).await;
    assert_ne!(
        serde_json::from_slice::<Value>(&base64_decode(new_token.split('.').next().unwrap()))
            .unwrap()["kid"],
        old_key["kid"]
    );
    let res = app
        .clone()
        .oneshot(get_with("/orgs/org_oidc/comps", &new_token))
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "a token of the rotated key is accepted"
    );
    let res = app
        .clone()
        .oneshot(get_with("/orgs/org_oidc/comps", &old_token))
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the old key keeps working while published"
    );
    // Another org in the path is still refused.
    let res = app
        .oneshot(get_with("/orgs/org_other/comps", &new_token))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    provider.child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}
