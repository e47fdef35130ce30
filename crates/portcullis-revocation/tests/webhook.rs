//! The receiver through its public router: a delivery whose audit event cannot be written is
//! answered 503 and not applied, and Svix's retry of it is applied (not taken for a replay).

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::body::Body;
use http::{Request, StatusCode};
use portcullis_apikey::SqlStore;
use portcullis_core::{OrgId, OrgMembership, Principal, PrincipalKind};
use portcullis_revocation::{RevocationList, RevocationStore, signature::SigningSecret, webhook};
use portcullis_test_support::RecordingSink;
use tower::ServiceExt;

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn delivery(id: &str, payload: &str) -> Request<Body> {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let signature = SigningSecret::new(WHSEC)
        .unwrap()
        .sign(id, ts, payload.as_bytes());
    Request::post(webhook::PATH)
        .header("svix-id", id)
        .header("svix-timestamp", ts.to_string())
        .header("svix-signature", signature)
        .body(Body::from(payload.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn an_unaudited_delivery_is_not_applied_and_its_retry_is() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    let store = RevocationStore::open(
        SqlStore::connect(&url).await.unwrap(),
        RevocationList::new(),
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let sink = Arc::new(RecordingSink::default());
    let app = webhook::router(WHSEC, store.clone(), sink.clone()).unwrap();
    let payload = r#"{"type":"session.ended","object":"event","data":{"id":"sess_1","user_id":"user_1","status":"ended"}}"#;
    let alice = Principal::builder(PrincipalKind::User, "user_1")
        .session_id("sess_1")
        .org(OrgMembership::new(OrgId::new("org_a").unwrap()))
        .issued_at(1)
        .build();

    sink.set_down(true);
    let res = app
        .clone()
        .oneshot(delivery("msg_1", payload))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        store.list().check(&alice).is_ok(),
        "nothing happened unaudited"
    );

    sink.set_down(false);
    let res = app
        .clone()
        .oneshot(delivery("msg_1", payload))
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::NO_CONTENT,
        "Svix's retry is applied"
    );
    assert!(store.list().check(&alice).is_err());
    assert!(sink.events().iter().any(|e| e.action == "session.ended"));

    let res = app.oneshot(delivery("msg_1", payload)).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::BAD_REQUEST,
        "a third delivery is a replay"
    );
}
