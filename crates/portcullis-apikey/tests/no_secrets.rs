//! No secret in any event, log or error: an API key and a user token go through every path
//! (create, use, a checksum-mangled key, revoke, refusals of every kind), with the audit layer
//! writing a real JSON Lines file and every tracing event captured at TRACE; then everything is
//! searched for the secrets.

mod support;

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use axum::{Router, body::Body, routing::get};
use http::{Request, StatusCode};
use portcullis_apikey::{ApiKeyVerifier, KeyFormat, KeyHasher, MemoryStore, api};
use portcullis_audit::{AuditLayer, Auditor, AuditorConfig, JsonlSink, JsonlWriter};
use portcullis_authn::AuthenticateLayer;
use portcullis_authz::{OrgContextLayer, RequireScopesLayer};
use portcullis_core::{
    AuthError, OrgId, OrgMembership, Principal, PrincipalKind, ScopeSet, Verification,
    VerifyCredential,
};
use serde_json::json;
use tower::ServiceExt;

const USER_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.user-token-secret-part.c2lnbmF0dXJlLXNlY3JldA";

struct Users;

impl VerifyCredential for Users {
    fn verify(&self, credential: &str) -> Verification {
        Verification::Ready(if credential == USER_TOKEN {
            Ok(Principal::builder(PrincipalKind::User, "user_admin")
                .org(OrgMembership::new(OrgId::new("org_a").unwrap()))
                .scopes(ScopeSet::parse(["api_keys:manage", "comps:read"]).unwrap())
                .build())
        } else {
            Err(AuthError::invalid_token("the access token is invalid"))
        })
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_in_no_event_log_or_error() {
    let logs = Captured::default();
    let writer = logs.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish(),
    );

    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let (auditor, task) = Auditor::start(
        JsonlWriter::new(JsonlSink::open(&audit_path).unwrap()),
        AuditorConfig::new(dir.path().join("audit.spool")),
    )
    .unwrap();
    let secret = [0x5a; 32];
    let hasher = KeyHasher::new(1, &secret).unwrap();
    let keys = ApiKeyVerifier::new(KeyFormat::default(), hasher.clone(), MemoryStore::new());
    let comps = Router::new()
        .route("/orgs/{org}/comps", get(|| async { "comps" }))
        .route_layer(RequireScopesLayer::all(["comps:read"]))
        .route_layer(OrgContextLayer::new());
    let app = api::router(keys.clone(), Arc::new(auditor.clone()))
        .merge(comps)
        .layer(AuthenticateLayer::new(Arc::new((keys.clone(), Users))))
        .layer(AuditLayer::new(auditor.clone()));

    let mut bodies = String::new();
    let send = async |method: &str, path: &str, token: &str, body: Option<serde_json::Value>| {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let res = app
            .clone()
            .oneshot(
                b.body(body.map_or_else(Body::empty, |v| Body::from(v.to_string())))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = res.status();
        let bytes = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    };

    // Create: the only answer allowed to show the key.
    let (status, created) = send(
        "POST",
        "/api/v1/api-keys",
        USER_TOKEN,
        Some(json!({"name":"ci","scopes":["comps:read"],"expires_in_days":1})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let mut mangled = key.clone();
    let last = mangled.pop().unwrap();
    mangled.push(if last == 'a' { 'b' } else { 'a' });

    for (method, path, token, expected) in [
        ("GET", "/orgs/org_a/comps", key.as_str(), StatusCode::OK),
        (
            "GET",
            "/orgs/org_b/comps",
            key.as_str(),
            StatusCode::FORBIDDEN,
        ),
        (
            "GET",
            "/api/v1/api-keys",
            key.as_str(),
            StatusCode::FORBIDDEN,
        ),
        (
            "GET",
            "/orgs/org_a/comps",
            mangled.as_str(),
            StatusCode::UNAUTHORIZED,
        ),
        ("GET", "/api/v1/api-keys", USER_TOKEN, StatusCode::OK),
        (
            "GET",
            "/orgs/org_b/comps",
            USER_TOKEN,
            StatusCode::FORBIDDEN,
        ),
        (
            "GET",
            "/orgs/org_a/comps",
            &USER_TOKEN[..USER_TOKEN.len() - 2],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "DELETE",
            &format!("/api/v1/api-keys/{id}"),
            USER_TOKEN,
            StatusCode::NO_CONTENT,
        ),
        (
            "GET",
            "/orgs/org_a/comps",
            key.as_str(),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let (status, body) = send(method, path, token, None).await;
        assert_eq!(status, expected, "{method} {path}");
        bodies.push_str(&body);
    }

    auditor.flush().await;
    drop(app);
    drop(auditor);
    task.join().await;
    let audit = std::fs::read_to_string(&audit_path).unwrap();
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        audit.lines().count() >= 7,
        "the refusals and the key lifecycle were audited"
    );
    assert!(!logs.is_empty(), "tracing output was captured");

    let digest: String = hasher
        .digest(&key)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let key_body = &key[10..key.len() - 4]; // without the display start and last four
    let secrets = [
        ("the key", key_body.to_owned()),
        ("the mangled key", mangled[10..mangled.len() - 4].to_owned()),
        ("the user token", "user-token-secret-part".to_owned()),
        ("the token signature", "c2lnbmF0dXJlLXNlY3JldA".to_owned()),
        ("the key digest", digest),
        ("the hashing secret", "5a5a5a5a5a5a5a5a".to_owned()),
    ];
    for (what, secret) in &secrets {
        for (place, text) in [
            ("the audit trail", &audit),
            ("the logs", &logs),
            ("the responses", &bodies),
        ] {
            assert!(!text.contains(secret.as_str()), "{what} appears in {place}");
        }
    }
}
