//! The management API on SQLite and PostgreSQL, behind a real authentication stack: API keys
//! first, then a static verifier standing in for user JWTs.

mod support;

use std::sync::Arc;

use axum::{Router, body::Body, routing::get};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use portcullis_apikey::{ApiKeyVerifier, KeyFormat, KeyHasher, api};
use portcullis_authn::AuthenticateLayer;
use portcullis_authz::{OrgContextLayer, RequireScopesLayer};
use portcullis_core::{
    AuthError, OrgId, OrgMembership, Principal, PrincipalKind, ScopeSet, Verification,
    VerifyCredential,
};
use portcullis_test_support::RecordingSink;
use serde_json::{Value, json};
use support::{Backend, store};
use tower::ServiceExt;

/// Users by token: `admin-a` (org_a, manage + comps:read), `member-a` (org_a, comps:read),
/// `admin-b` (org_b, manage + comps:read).
struct Users;

impl VerifyCredential for Users {
    fn verify(&self, credential: &str) -> Verification {
        let user = |sub: &str, org: &str, scopes: &[&str]| {
            Principal::builder(PrincipalKind::User, sub)
                .org(OrgMembership::new(OrgId::new(org).unwrap()).role("admin"))
                .scopes(ScopeSet::parse(scopes).unwrap())
                .build()
        };
        Verification::Ready(match credential {
            "admin-a" => Ok(user(
                "user_admin_a",
                "org_a",
                &["api_keys:manage", "comps:read"],
            )),
            "member-a" => Ok(user("user_member_a", "org_a", &["comps:read"])),
            "admin-b" => Ok(user(
                "user_admin_b",
                "org_b",
                &["api_keys:manage", "comps:read"],
            )),
            _ => Err(AuthError::invalid_token("the access token is invalid")),
        })
    }
}

fn app(keys: ApiKeyVerifier, audit: Arc<RecordingSink>) -> Router {
    let comps = Router::new()
        .route(
            "/orgs/{org}/comps",
            get(|p: Principal| async move { p.subject().to_owned() }),
        )
        .route_layer(RequireScopesLayer::all(["comps:read"]))
        .route_layer(OrgContextLayer::new());
    api::router(keys.clone(), audit)
        .merge(comps)
        .layer(AuthenticateLayer::new(Arc::new((keys, Users))))
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value, String) {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"));
    let body = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let res = app.clone().oneshot(b.body(body).unwrap()).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

async fn management(backend: Backend, name: &str) {
    let keys = ApiKeyVerifier::new(
        KeyFormat::default(),
        KeyHasher::new(1, &[3; 32]).unwrap(),
        store(&backend, name).await,
    );
    let audit = Arc::new(RecordingSink::default());
    let app = app(keys, audit.clone());
    let new = |scopes: Value, days: Value| json!({"name": "ci deploy", "scopes": scopes, "expires_in_days": days});

    // Create: 201 with the plaintext, once.
    let (status, created, _) = send(
        &app,
        "POST",
        "/api/v1/api-keys",
        "admin-a",
        Some(new(json!(["comps:read"]), json!(30))),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("pc_sk_"));
    assert_eq!(created["org_id"], "org_a");
    assert_eq!(created["scopes"], json!(["comps:read"]));
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));
    for field in ["created_at", "expires_at", "name"] {
        assert!(created[field].is_string(), "{field}");
    }

    // Use it.
    let (status, body, _) = send(&app, "GET", "/orgs/org_a/comps", &key, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // List: the caller's org only, never a secret.
    let (status, listed, text) = send(&app, "GET", "/api/v1/api-keys", "admin-a", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);
    assert_eq!(listed["keys"][0]["id"], id.as_str());
    assert!(!text.contains(&key[10..]), "the listing shows no plaintext");
    assert!(listed["keys"][0].get("digest").is_none() && listed["keys"][0].get("key").is_none());
    let (_, other_org, _) = send(&app, "GET", "/api/v1/api-keys", "admin-b", None).await;
    assert_eq!(other_org["keys"], json!([]));

    // Refusals.
    let (status, body, _) = send(
        &app,
        "POST",
        "/api/v1/api-keys",
        "admin-a",
        Some(new(json!(["comps:write"]), json!(30))),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "escalation: {body}");
    assert_eq!(body["required"], json!(["comps:write"]));
    for (why, body) in [
        ("no expiry", json!({"name": "x", "scopes": ["comps:read"]})),
        ("zero days", new(json!(["comps:read"]), json!(0))),
        ("over the cap", new(json!(["comps:read"]), json!(366))),
        ("no scopes", new(json!([]), json!(1))),
        ("bad scope", new(json!(["Comps"]), json!(1))),
        (
            "unknown field",
            json!({"name": "x", "scopes": ["comps:read"], "expires_in_days": 1, "org_id": "org_b"}),
        ),
    ] {
        let (status, body, _) = send(&app, "POST", "/api/v1/api-keys", "admin-a", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {body}");
        assert_eq!(body["error"], "invalid_request");
    }
    let (status, _, _) = send(
        &app,
        "POST",
        "/api/v1/api-keys",
        "admin-a",
        Some(json!({"name": "x".repeat(20_000), "scopes": [], "expires_in_days": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, body, _) = send(&app, "GET", "/api/v1/api-keys", "member-a", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "insufficient_scope");
    // A key cannot manage keys unless it has the scope.
    let (status, _, _) = send(&app, "GET", "/api/v1/api-keys", &key, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Revoke: another org gets 404; the owner 204, and the key is refused at once.
    let path = format!("/api/v1/api-keys/{id}");
    let (status, _, _) = send(&app, "DELETE", &path, "admin-b", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send(&app, "GET", "/orgs/org_a/comps", &key, None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "still valid after another org's attempt"
    );
    let (status, _, _) = send(&app, "DELETE", &path, "admin-a", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = send(&app, "GET", "/orgs/org_a/comps", &key, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&app, "DELETE", "/api/v1/api-keys/key_nope", "admin-a", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Audit: creation and revocation, attributed, with no secret anywhere.
    let events = audit.events();
    let json = serde_json::to_string(&events).unwrap();
    assert!(!json.contains(&key[6..]), "no plaintext in events");
    let actions: Vec<&str> = events.iter().map(|e| &*e.action).collect();
    assert!(
        actions.contains(&"api_key.created") && actions.contains(&"api_key.revoked"),
        "{actions:?}"
    );
    let created_event = events
        .iter()
        .find(|e| e.action == "api_key.created")
        .unwrap();
    assert_eq!(created_event.actor.as_ref().unwrap().id, "user_admin_a");
    assert_eq!(created_event.target.as_ref().unwrap().id, id);
    assert!(created_event.sensitive);
}

async fn audit_outage_fails_closed(backend: Backend, name: &str) {
    let keys = ApiKeyVerifier::new(
        KeyFormat::default(),
        KeyHasher::new(1, &[3; 32]).unwrap(),
        store(&backend, name).await,
    );
    let audit = Arc::new(RecordingSink::default());
    let app = app(keys, audit.clone());
    let body = json!({"name": "k", "scopes": ["comps:read"], "expires_in_days": 1});
    let (status, created, _) = send(
        &app,
        "POST",
        "/api/v1/api-keys",
        "admin-a",
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    audit.set_down(true);
    let (status, res, _) = send(&app, "POST", "/api/v1/api-keys", "admin-a", Some(body)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{res}");
    let path = format!("/api/v1/api-keys/{}", created["id"].as_str().unwrap());
    let (status, _, _) = send(&app, "DELETE", &path, "admin-a", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // Neither action happened.
    let (_, listed, _) = send(&app, "GET", "/api/v1/api-keys", "admin-a", None).await;
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);
    let (status, _, _) = send(
        &app,
        "GET",
        "/orgs/org_a/comps",
        created["key"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn management_on_sqlite() {
    management(Backend::Sqlite, "api").await;
}

#[tokio::test]
async fn management_on_postgres() {
    management(Backend::Postgres, "api").await;
}

#[tokio::test]
async fn audit_outage_on_sqlite() {
    audit_outage_fails_closed(Backend::Sqlite, "audit").await;
}

#[tokio::test]
async fn audit_outage_on_postgres() {
    audit_outage_fails_closed(Backend::Postgres, "audit").await;
}
