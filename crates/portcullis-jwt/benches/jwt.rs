//! Benchmarks, each against its baseline in the same run:
//! - a request with a warm token through authenticate + org context + scopes, vs the same router
//!   with no layers (composed as three axum layers, and as one tower stack in one `route_layer`);
//! - a warm verification alone, and the bearer header parse;
//! - a cold RS256 verification (cache off), vs a bare `jsonwebtoken::decode` of the same token;
//! - Clerk v2 `fpm` normalization alone.

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;

use axum::{Router, body::Body, routing::get};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis_authn::AuthenticateLayer;
use portcullis_authz::{OrgContextLayer, RequireScopesLayer};
use portcullis_core::VerifyCredential;
use portcullis_jwt::{
    Issuer, JwtVerifier,
    clerk::{FpmAlignment, decode_v2},
};
use support::*;
use tower::{Service, ServiceExt};

const ISS: &str = "https://clerk.example.com";

fn verifier(cache: bool) -> JwtVerifier {
    JwtVerifier::builder()
        .issuer(Issuer::new(ISS).static_jwks(&jwks_of(&[&keys()[0]]).to_string()))
        .scope_policy(Default::default())
        .token_cache_bytes(if cache { 64 << 20 } else { 0 })
        .build()
        .unwrap()
}

fn request(token: &str) -> Request<Body> {
    Request::get("/orgs/org_a/comps")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

fn warm_request(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let token = keys()[0].token(&with(claims(ISS), serde_json::json!({"exp": now() + 3600})));
    let bare: Router = Router::new().route("/orgs/{org}/comps", get(|| async { "ok" }));
    let layered: Router = Router::new()
        .route("/orgs/{org}/comps", get(|| async { "ok" }))
        .route_layer(RequireScopesLayer::all(["comps:read"]))
        .route_layer(OrgContextLayer::new())
        .layer(AuthenticateLayer::new(verifier(true)));
    // The two authorization layers in one route_layer: axum boxes once per route_layer.
    let one_stack: Router = Router::new()
        .route("/orgs/{org}/comps", get(|| async { "ok" }))
        .route_layer(
            tower::ServiceBuilder::new()
                .layer(OrgContextLayer::new())
                .layer(RequireScopesLayer::all(["comps:read"])),
        )
        .layer(AuthenticateLayer::new(verifier(true)));
    // What axum's per-layer wrapping costs by itself.
    let noop_layer: Router = Router::new()
        .route("/orgs/{org}/comps", get(|| async { "ok" }))
        .layer(tower::util::MapRequestLayer::new(|r: Request<Body>| r));
    // All three as one tower stack in one route_layer: one axum boxing level in all.
    let tower_stack: Router = Router::new()
        .route("/orgs/{org}/comps", get(|| async { "ok" }))
        .route_layer(
            tower::ServiceBuilder::new()
                .layer(AuthenticateLayer::new(verifier(true)))
                .layer(OrgContextLayer::new())
                .layer(RequireScopesLayer::all(["comps:read"])),
        );
    let authn_only: Router = Router::new()
        .route("/orgs/{org}/comps", get(|| async { "ok" }))
        .layer(AuthenticateLayer::new(verifier(true)));
    // Warm the token caches, and check each route really answers 200.
    for r in [&layered, &one_stack, &authn_only, &tower_stack] {
        let res = rt.block_on(r.clone().oneshot(request(&token))).unwrap();
        assert_eq!(res.status(), 200);
    }

    let mut g = c.benchmark_group("warm_request");
    for (name, router) in [
        ("bare_axum", bare),
        ("noop_layer", noop_layer),
        ("authn_only", authn_only),
        ("authn_org_scopes", layered),
        ("authn_org_scopes_one_route_layer", one_stack),
        ("authn_org_scopes_tower_stack", tower_stack),
    ] {
        let mut svc = router.into_service::<Body>();
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let req = request(&token);
                let fut = svc.call(req);
                async move { black_box(fut.await.unwrap()) }
            });
        });
    }
    g.finish();
}

/// The same comparison over real HTTP on loopback: one keep-alive client, two servers.
fn served_request(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let token = keys()[0].token(&with(claims(ISS), serde_json::json!({"exp": now() + 3600})));
    let serve = |router: Router| {
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
            format!("http://{addr}/orgs/org_a/comps")
        })
    };
    let bare = serve(Router::new().route("/orgs/{org}/comps", get(|| async { "ok" })));
    let layered = serve(
        Router::new()
            .route("/orgs/{org}/comps", get(|| async { "ok" }))
            .route_layer(
                tower::ServiceBuilder::new()
                    .layer(AuthenticateLayer::new(verifier(true)))
                    .layer(OrgContextLayer::new())
                    .layer(RequireScopesLayer::all(["comps:read"])),
            ),
    );
    let client = reqwest::Client::new();
    let auth = format!("Bearer {token}");
    let mut g = c.benchmark_group("served_request");
    for (name, url) in [("bare_axum", bare), ("authn_org_scopes", layered)] {
        let status = rt
            .block_on(client.get(&url).header("authorization", &auth).send())
            .unwrap()
            .status();
        assert_eq!(status, 200);
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let req = client.get(&url).header("authorization", &auth).send();
                async move { black_box(req.await.unwrap().status()) }
            });
        });
    }
    g.finish();
}

fn warm_verify(c: &mut Criterion) {
    let token = keys()[0].token(&with(claims(ISS), serde_json::json!({"exp": now() + 3600})));
    let warm = verifier(true);
    let _ = warm.verify(&token);
    let req = request(&token);
    c.bench_function("bearer_parse", |b| {
        b.iter(|| {
            black_box(
                portcullis_core::bearer_credential(black_box(req.headers()))
                    .unwrap()
                    .len(),
            );
        });
    });
    c.bench_function("warm_verify", |b| {
        b.iter(|| match warm.verify(black_box(&token)) {
            portcullis_core::Verification::Ready(r) => black_box(r.unwrap()),
            portcullis_core::Verification::Pending(_) => unreachable!("cached"),
        });
    });
}

fn cold_rs256(c: &mut Criterion) {
    let token = keys()[0].token(&with(claims(ISS), serde_json::json!({"exp": now() + 3600})));
    let cold = verifier(false);
    let jwk = keys()[0].jwk();
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[ISS]);
    validation.leeway = 5;
    validation.validate_nbf = true;
    assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).is_ok());

    let mut g = c.benchmark_group("cold_rs256");
    g.bench_function("jsonwebtoken_decode", |b| {
        b.iter(|| {
            black_box(
                jsonwebtoken::decode::<serde_json::Value>(black_box(&token), &key, &validation)
                    .unwrap(),
            )
        });
    });
    g.bench_function("portcullis_verify", |b| {
        b.iter(|| match cold.verify(black_box(&token)) {
            portcullis_core::Verification::Ready(r) => black_box(r.unwrap()),
            portcullis_core::Verification::Pending(_) => unreachable!("static keys"),
        });
    });
    g.finish();
}

fn clerk_v2(c: &mut Criterion) {
    let fea = "o:reservations,u:dashboard,uo:support-chat,o:impersonation,o:comps,o:reports";
    let per = "read,write,manage,delete";
    let fpm = "2,3,15,1,3";
    c.bench_function("clerk_v2_normalization", |b| {
        b.iter(|| {
            black_box(decode_v2(
                Some(black_box(fea)),
                Some(per),
                Some(fpm),
                FpmAlignment::Intersect,
            ))
        });
    });
}

criterion_group!(
    benches,
    warm_request,
    served_request,
    warm_verify,
    cold_rs256,
    clerk_v2
);
criterion_main!(benches);
