//! `AuthenticateLayer` alone in a plain tower stack: no axum, a `Full<Bytes>` body.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use portcullis_authn::AuthenticateLayer;
use portcullis_core::{AuthError, Principal, PrincipalKind, Verification, VerifyCredential};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn, util::BoxCloneService};

/// Knows `ready` (answered at once), `slow` (answered after a yield), `down` (an outage), and
/// remembers `remembered` and `remembered_expired`, which it would no longer verify.
struct TestVerifier;

impl VerifyCredential for TestVerifier {
    fn verify(&self, credential: &str) -> Verification {
        let user = |id: &str| Principal::builder(PrincipalKind::User, id).build();
        match credential {
            "ready" => Verification::Ready(Ok(user("user_ready"))),
            "slow" => Verification::Pending(Box::pin(async move {
                tokio::task::yield_now().await;
                Ok(user("user_slow"))
            })),
            "down" => {
                Verification::Pending(Box::pin(async { Err(AuthError::unavailable("store")) }))
            }
            _ => Verification::Ready(Err(AuthError::invalid_token("the access token is invalid"))),
        }
    }

    fn recall(&self, credential: &[u8]) -> Option<Result<Principal, AuthError>> {
        match credential {
            b"remembered" => Some(Ok(Principal::builder(
                PrincipalKind::User,
                "user_remembered",
            )
            .build())),
            b"remembered_expired" => {
                Some(Err(AuthError::invalid_token("the access token expired")))
            }
            _ => None,
        }
    }
}

type Body = Full<Bytes>;

fn stack(
    reached: Arc<AtomicUsize>,
) -> impl tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone {
    ServiceBuilder::new()
        .layer(AuthenticateLayer::new(Arc::new(TestVerifier)).realm("test-api"))
        .service(service_fn(move |req: Request<Body>| {
            let reached = reached.clone();
            async move {
                reached.fetch_add(1, Ordering::SeqCst);
                let who = req
                    .extensions()
                    .get::<Principal>()
                    .unwrap()
                    .subject()
                    .to_owned();
                Ok::<_, Infallible>(Response::new(Full::from(who)))
            }
        }))
}

fn req(auth: Option<&str>) -> Request<Body> {
    let mut b = Request::get("/").header("x-request-id", "req-42");
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    b.body(Body::default()).unwrap()
}

async fn text(res: Response<Body>) -> String {
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn ready_and_pending_verifications_insert_the_principal() {
    let reached = Arc::new(AtomicUsize::new(0));
    for (credential, who) in [
        ("ready", "user_ready"),
        ("slow", "user_slow"),
        ("remembered", "user_remembered"),
    ] {
        let res = stack(reached.clone())
            .oneshot(req(Some(&format!("Bearer {credential}"))))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(text(res).await, who);
    }
    assert_eq!(reached.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn refusals_never_reach_the_service() {
    let reached = Arc::new(AtomicUsize::new(0));
    let cases = [
        (None, StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            Some("Bearer nope"),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            Some("Basic abc"),
            StatusCode::UNAUTHORIZED,
            "invalid_request",
        ),
        (
            Some("Bearer down"),
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
        ),
        // What the verifier remembers is answered from memory, refusals included.
        (
            Some("Bearer remembered_expired"),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        // Anything it does not remember still has its characters checked.
        (
            Some("Bearer remembered@"),
            StatusCode::UNAUTHORIZED,
            "invalid_request",
        ),
    ];
    for (auth, status, error) in cases {
        let res = stack(reached.clone()).oneshot(req(auth)).await.unwrap();
        assert_eq!(res.status(), status, "{auth:?}");
        let refusal = res.extensions().get::<AuthError>().cloned().unwrap();
        assert_eq!(refusal.code(), error);
        let headers = res.headers().clone();
        let body: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
        assert_eq!(body["error"], error);
        assert_eq!(body["request_id"], "req-42");
        if status == StatusCode::UNAUTHORIZED {
            let www = headers["www-authenticate"].to_str().unwrap();
            assert!(www.starts_with(r#"Bearer realm="test-api""#), "{www}");
        } else {
            assert_eq!(headers["retry-after"], "5");
        }
    }
    assert_eq!(reached.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_service_made_ready_is_the_one_called() {
    let reached = Arc::new(AtomicUsize::new(0));
    let mut svc = stack(reached.clone());
    for credential in ["slow", "ready", "slow"] {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(req(Some(&format!("Bearer {credential}"))))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(reached.load(Ordering::SeqCst), 3);
}

#[test]
fn futures_are_send() {
    fn assert_send<T: Send>() {}
    type Inner = BoxCloneService<Request<Body>, Response<Body>, Infallible>;
    assert_send::<portcullis_authn::ResponseFuture<Inner, Body>>();
    assert_send::<portcullis_authn::Authenticate<Inner, Arc<TestVerifier>>>();
}

#[tokio::test]
async fn the_credential_header_is_marked_sensitive() {
    let svc = ServiceBuilder::new()
        .layer(AuthenticateLayer::new(Arc::new(TestVerifier)))
        .service(service_fn(|req: Request<Body>| async move {
            let sensitive = req.headers()["authorization"].is_sensitive();
            Ok::<_, Infallible>(Response::new(Full::from(sensitive.to_string())))
        }));
    let res = svc.oneshot(req(Some("Bearer ready"))).await.unwrap();
    assert_eq!(text(res).await, "true");
}
