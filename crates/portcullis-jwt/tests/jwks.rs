//! JWKS outages: known keys keep working while the endpoint fails; with no keys the answer is
//! 503, and verification recovers by itself once the endpoint returns.

mod support;

use std::{sync::atomic::Ordering, time::Duration};

use http::StatusCode;
use portcullis_core::{AuthError, VerifyCredential};
use portcullis_jwt::{Issuer, JwtVerifier};
use support::*;
use tower::ServiceExt;

#[tokio::test]
async fn cold_cache_with_failing_endpoint_is_503_then_recovers() {
    let server = JwksServer::start(jwks_of(&[&keys()[0]])).await;
    server.failing.store(true, Ordering::SeqCst);
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::new(server.issuer()))
        .build()
        .unwrap();
    let (app, _) = app(verifier.clone());
    let t = keys()[0].token(&claims(&server.issuer()));
    let res = app
        .clone()
        .oneshot(get_with("/orgs/org_a/comps", &t))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body_json(res).await["error"], "temporarily_unavailable");
    assert!(!verifier.is_ready());
    // Retried at most once a second while down.
    let _ = app
        .clone()
        .oneshot(get_with("/orgs/org_a/comps", &t))
        .await
        .unwrap();
    assert_eq!(server.fetches(), 1);

    server.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = app
        .oneshot(get_with("/orgs/org_a/comps", &t))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "recovers by itself");
    assert!(verifier.is_ready());
}

#[tokio::test]
async fn known_keys_keep_working_while_the_endpoint_fails() {
    let server = JwksServer::start(jwks_of(&[&keys()[0]])).await;
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::new(server.issuer()))
        .jwks_cooldown(Duration::from_millis(50))
        .token_cache_bytes(0)
        .build()
        .unwrap();
    verifier.prefetch().await.unwrap();
    server.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(60)).await;
    // An unknown kid causes a (failing) refetch: an outage answer, since the key may exist; the
    // known key still verifies afterwards.
    let unknown = keys()[0].token_with(
        serde_json::json!({"kid": "rotated"}),
        &claims(&server.issuer()),
    );
    assert!(matches!(
        verifier.verify_token(&unknown).await,
        Err(AuthError::Unavailable { .. })
    ));
    assert_eq!(server.fetches(), 2);
    let t = keys()[0].token(&claims(&server.issuer()));
    assert_eq!(verifier.verify_token(&t).await.unwrap().subject(), "user_1");
}

#[tokio::test]
async fn discovery_must_name_the_same_issuer() {
    let server = JwksServer::start(jwks_of(&[&keys()[0]])).await;
    *server.discovery_issuer.lock().unwrap() = Some("https://impostor.example.com".into());
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::new(server.issuer()).discovery())
        .build()
        .unwrap();
    let t = keys()[0].token(&claims(&server.issuer()));
    assert!(matches!(
        verifier.verify_token(&t).await,
        Err(AuthError::Unavailable { .. })
    ));
    assert_eq!(
        server.fetches(),
        0,
        "the JWKS of an impostor is never fetched"
    );
}

#[tokio::test]
async fn a_cached_token_expires_with_its_exp() {
    let server = JwksServer::start(jwks_of(&[&keys()[0]])).await;
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::new(server.issuer()))
        .leeway(Duration::ZERO)
        .build()
        .unwrap();
    let t = keys()[0].token(&with(
        claims(&server.issuer()),
        serde_json::json!({"exp": now() + 2}),
    ));
    assert!(verifier.recall(t.as_bytes()).is_none(), "not verified yet");
    assert!(verifier.verify_token(&t).await.is_ok());
    assert!(verifier.verify_token(&t).await.is_ok(), "from the cache");
    let recalled = verifier.recall(t.as_bytes()).expect("remembered");
    assert!(recalled.is_ok());
    let mut altered = t.clone().into_bytes();
    altered[10] ^= 1;
    assert!(verifier.recall(&altered).is_none(), "only the very bytes");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert!(
        matches!(verifier.recall(t.as_bytes()), Some(Err(_))),
        "never past exp"
    );
    assert!(
        verifier.verify_token(&t).await.is_err(),
        "never past exp, cached or not"
    );
}

#[tokio::test]
async fn known_keys_stop_working_past_max_stale() {
    let server = JwksServer::start(jwks_of(&[&keys()[0]])).await;
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::new(server.issuer()))
        .jwks_max_stale(Duration::from_millis(100))
        .jwks_cooldown(Duration::from_millis(10))
        .token_cache_bytes(0)
        .build()
        .unwrap();
    let t = keys()[0].token(&claims(&server.issuer()));
    assert!(verifier.verify_token(&t).await.is_ok());
    server.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(matches!(
        verifier.verify_token(&t).await,
        Err(AuthError::Unavailable { .. })
    ));
    server.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        verifier.verify_token(&t).await.is_ok(),
        "recovers when the endpoint answers"
    );
}

#[tokio::test]
async fn a_withdrawn_key_stops_cached_tokens() {
    let (a, b) = (&keys()[0], &keys()[1]);
    let server = JwksServer::start(jwks_of(&[a, b])).await;
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::new(server.issuer()))
        .jwks_cooldown(Duration::from_millis(10))
        .build()
        .unwrap();
    let t = a.token(&claims(&server.issuer()));
    assert!(verifier.verify_token(&t).await.is_ok());
    // The issuer withdraws key a; any refresh (here caused by an unknown kid) sees it gone.
    server.set(jwks_of(&[b]));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let other = b.token_with(serde_json::json!({"kid": "new"}), &claims(&server.issuer()));
    let _ = verifier.verify_token(&other).await;
    assert!(
        verifier.recall(t.as_bytes()).is_none(),
        "forgotten with the key"
    );
    assert!(
        verifier.verify_token(&t).await.is_err(),
        "the cached token is verified again"
    );
    assert!(
        verifier
            .verify_token(&b.token(&claims(&server.issuer())))
            .await
            .is_ok()
    );
}

#[test]
fn configuration_errors_name_the_key() {
    let e = JwtVerifier::builder().build().unwrap_err();
    assert_eq!(e.key(), "issuers");
    let e = JwtVerifier::builder()
        .issuer(Issuer::new("ftp://clerk.example.com"))
        .build()
        .unwrap_err();
    assert!(e.key().ends_with(".issuer"), "{e}");
    let e = JwtVerifier::builder()
        .issuer(Issuer::new("https://a.example.com").static_jwks("{}"))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("jwks"), "{e}");
}
