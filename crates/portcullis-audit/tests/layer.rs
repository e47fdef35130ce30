//! The audit layer in front of the whole stack, recording into a real JSON Lines file.

use std::sync::Arc;

use axum::{Router, body::Body, routing::get};
use http::{Request, StatusCode};
use portcullis_audit::{AuditLayer, Auditor, AuditorConfig, JsonlSink, JsonlWriter, verify};
use portcullis_authn::AuthenticateLayer;
use portcullis_authz::{OrgContextLayer, RequireScopesLayer};
use portcullis_core::{
    AuthError, OrgId, OrgMembership, Principal, PrincipalKind, ScopeSet, Verification,
    VerifyCredential,
};
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "secret-token-of-alice-0123456789";

struct Alice;

impl VerifyCredential for Alice {
    fn verify(&self, credential: &str) -> Verification {
        Verification::Ready(if credential == TOKEN {
            Ok(Principal::builder(PrincipalKind::User, "user_alice")
                .org(OrgMembership::new(OrgId::new("org_a").unwrap()))
                .scopes(ScopeSet::parse(["comps:read"]).unwrap())
                .session_id("sess_1")
                .build())
        } else {
            Err(AuthError::invalid_token("the access token is invalid"))
        })
    }
}

async fn call(
    app: &Router,
    path: &str,
    auth: Option<&str>,
    rid: Option<&str>,
) -> (StatusCode, String, Value) {
    let mut b = Request::get(path);
    if let Some(a) = auth {
        b = b.header("authorization", format!("Bearer {a}"));
    }
    if let Some(r) = rid {
        b = b.header("x-request-id", r);
    }
    let res = app
        .clone()
        .oneshot(b.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let echoed = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        echoed,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_recorded_once_with_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (auditor, task) = Auditor::start(
        JsonlWriter::new(JsonlSink::open(&path).unwrap()),
        AuditorConfig::new(dir.path().join("audit.spool")),
    )
    .unwrap();
    let app = Router::new()
        .route("/orgs/{org}/comps", get(|| async { "comps" }))
        .route(
            "/orgs/{org}/reports",
            get(|| async { "reports" }).route_layer(RequireScopesLayer::all(["reports:read"])),
        )
        .route_layer(OrgContextLayer::new())
        .layer(AuthenticateLayer::new(Arc::new(Alice)))
        .layer(AuditLayer::new(auditor.clone()));

    let (status, rid_missing, body) = call(&app, "/orgs/org_a/comps", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["request_id"],
        rid_missing.as_str(),
        "one id for the header and the body"
    );
    let (status, rid, _) = call(
        &app,
        "/orgs/org_a/comps",
        Some("forged"),
        Some("client-rid-1"),
    )
    .await;
    assert_eq!(
        (status, rid.as_str()),
        (StatusCode::UNAUTHORIZED, "client-rid-1")
    );
    let (status, _, _) = call(&app, "/orgs/org_b/comps", Some(TOKEN), Some("rid-org")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(&app, "/orgs/org_a/reports", Some(TOKEN), Some("rid-scope")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, rid_ok, _) = call(&app, "/orgs/org_a/comps", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        rid_ok.len(),
        36,
        "a UUIDv7 is given when the client sends none"
    );

    auditor.flush().await;
    drop(app);
    drop(auditor);
    task.join().await;
    let content = std::fs::read_to_string(&path).unwrap();
    assert!(
        !content.contains(TOKEN) && !content.contains("forged"),
        "no credential in the trail"
    );
    let events: Vec<Value> = content
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events.len(),
        4,
        "one event per refusal, none for the allowed request"
    );
    let by_rid = |rid: &str| {
        events
            .iter()
            .find(|e| e["request"]["id"] == rid)
            .unwrap()
            .clone()
    };

    let e = by_rid(&rid_missing);
    assert_eq!(
        (e["action"].as_str(), e["reason"].as_str()),
        (Some("authn.failed"), Some("unauthorized"))
    );
    assert!(e.get("actor").is_none());
    assert_eq!(by_rid("client-rid-1")["reason"], "invalid_token");
    let e = by_rid("rid-org");
    assert_eq!(e["action"], "org.forbidden");
    assert_eq!(e["outcome"], "denied");
    assert_eq!(e["actor"]["id"], "user_alice");
    assert_eq!(e["actor"]["session"], "sess_1");
    assert_eq!(e["org_id"], "org_a");
    assert_eq!(e["request"]["path"], "/orgs/org_b/comps");
    let e = by_rid("rid-scope");
    assert_eq!(e["action"], "authz.denied");
    assert_eq!(e["scopes_required"], serde_json::json!(["reports:read"]));
    assert_eq!(e["scopes_missing"], serde_json::json!(["reports:read"]));
    assert!(verify(&path).is_ok());
}

/// The real JSON Lines writer behind a switch.
struct Switch {
    inner: portcullis_audit::JsonlWriter,
    down: std::sync::atomic::AtomicBool,
}

impl portcullis_audit::EventWriter for Switch {
    fn write<'a>(
        &'a self,
        events: &'a [portcullis_core::audit::AuditEvent],
    ) -> portcullis_audit::WriteFuture<'a> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err("down".to_owned())));
        }
        self.inner.write(events)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_decisions_are_recorded_before_the_service_runs() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let writer = Arc::new(Switch {
        inner: JsonlWriter::new(JsonlSink::open(&path).unwrap()),
        down: std::sync::atomic::AtomicBool::new(false),
    });
    let mut config = AuditorConfig::new(dir.path().join("audit.spool"));
    config.sensitive_timeout = std::time::Duration::from_millis(300);
    let (auditor, task) = Auditor::start(writer.clone(), config).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let routes = || {
        let ran = ran.clone();
        Router::new()
            .route(
                "/orgs/{org}/comps",
                axum::routing::delete(move || {
                    ran.fetch_add(1, Ordering::SeqCst);
                    async { "deleted" }
                })
                .route_layer(RequireScopesLayer::all(["comps:read"]).sensitive()),
            )
            .route(
                "/orgs/{org}/reports",
                axum::routing::delete(|| async { "deleted" })
                    .route_layer(RequireScopesLayer::all(["reports:write"]).sensitive()),
            )
            .route_layer(OrgContextLayer::new())
            .layer(AuthenticateLayer::new(Arc::new(Alice)))
    };
    let app = routes().layer(AuditLayer::new(auditor.clone()));
    let delete = |path: &str, rid: &str| {
        Request::delete(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("x-request-id", rid)
            .body(Body::empty())
            .unwrap()
    };

    let res = app
        .clone()
        .oneshot(delete("/orgs/org_a/comps", "rid-allowed"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(ran.load(Ordering::SeqCst), 1);

    writer.down.store(true, Ordering::SeqCst);
    let res = app
        .clone()
        .oneshot(delete("/orgs/org_a/comps", "rid-down"))
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "no record, no action"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 1, "the service did not run");
    writer.down.store(false, Ordering::SeqCst);

    let res = app
        .clone()
        .oneshot(delete("/orgs/org_a/reports", "rid-denied"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // Without the audit layer a sensitive route cannot run at all.
    let bare = routes();
    let res = bare
        .oneshot(delete("/orgs/org_a/comps", "rid-bare"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(ran.load(Ordering::SeqCst), 1);

    auditor.flush().await;
    drop(app);
    drop(auditor);
    task.join().await;
    let events: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |rid: &str| {
        events
            .iter()
            .filter(|e| e["request"]["id"] == rid)
            .cloned()
            .collect::<Vec<_>>()
    };
    let allowed = find("rid-allowed");
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0]["action"], "authz.allowed");
    assert_eq!(allowed[0]["sensitive"], true);
    assert_eq!(allowed[0]["actor"]["id"], "user_alice");
    assert!(
        find("rid-down")
            .iter()
            .all(|e| e["action"] != "authz.allowed"),
        "no success record of what did not happen"
    );
    let denied = find("rid-denied");
    assert_eq!(
        (
            denied[0]["action"].as_str(),
            denied[0]["sensitive"].as_bool()
        ),
        (Some("authz.denied"), Some(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_all_records_granted_requests_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (auditor, task) = Auditor::start(
        JsonlWriter::new(JsonlSink::open(&path).unwrap()),
        AuditorConfig::new(dir.path().join("audit.spool")),
    )
    .unwrap();
    let app = Router::new()
        .route("/orgs/{org}/comps", get(|| async { "comps" }))
        .route_layer(OrgContextLayer::new())
        .layer(AuthenticateLayer::new(Arc::new(Alice)))
        .layer(AuditLayer::new(auditor.clone()).level(portcullis_core::audit::AuditLevel::All));
    let req = |auth: &str| {
        Request::get("/orgs/org_a/comps")
            .header("authorization", format!("Bearer {auth}"))
            .header("user-agent", "curl/8.5.0")
            .body(Body::empty())
            .unwrap()
    };
    // What axum's `into_make_service_with_connect_info` puts on each request.
    let req = |auth: &str| {
        let mut r = req(auth);
        r.extensions_mut().insert(axum::extract::ConnectInfo(
            "127.0.0.1:4242".parse::<std::net::SocketAddr>().unwrap(),
        ));
        r
    };
    assert_eq!(
        app.clone().oneshot(req(TOKEN)).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        app.clone().oneshot(req("wrong")).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    auditor.flush().await;
    drop(app);
    drop(auditor);
    task.join().await;
    let events: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["action"], "authn.succeeded");
    assert_eq!(events[0]["category"], "authentication");
    assert_eq!(events[0]["actor"]["id"], "user_alice");
    assert_eq!(events[0]["credential"]["kind"], "jwt");
    assert_eq!(events[0]["request"]["user_agent"], "curl/8.5.0");
    assert_eq!(events[0]["request"]["client_address"], "127.0.0.1:4242");
    assert_eq!(events[1]["action"], "authn.failed");
    assert_eq!(events[1]["request"]["user_agent"], "curl/8.5.0");
}
