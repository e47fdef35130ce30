//! `OrgContextLayer` and `RequireScopesLayer`, alone in plain tower stacks and under axum routing.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{Router, body::Body, routing::get};
use bytes::Bytes;
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use portcullis_authz::{OrgContextLayer, RequireScopesLayer};
use portcullis_core::{FactorAge, OrgId, OrgMembership, Principal, PrincipalKind, ScopeSet};
use tower::{Layer, ServiceExt, service_fn};

fn principal(org: Option<&str>, scopes: &[&str]) -> Principal {
    let mut b =
        Principal::builder(PrincipalKind::User, "user_1").scopes(ScopeSet::parse(scopes).unwrap());
    if let Some(org) = org {
        b = b.org(OrgMembership::new(OrgId::new(org).unwrap()).role("org:member"));
    }
    b.build()
}

/// A plain tower service that answers the org it was given (or `-`), counting calls.
fn echo_org(
    reached: Arc<AtomicUsize>,
) -> impl tower::Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible>
+ Clone {
    service_fn(move |req: Request<Full<Bytes>>| {
        let reached = reached.clone();
        async move {
            reached.fetch_add(1, Ordering::SeqCst);
            let org = req
                .extensions()
                .get::<OrgId>()
                .map_or("-".to_owned(), ToString::to_string);
            Ok::<_, Infallible>(Response::new(Full::from(org)))
        }
    })
}

fn plain(p: Option<Principal>, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get("/anything");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(Full::default()).unwrap();
    if let Some(p) = p {
        req.extensions_mut().insert(p);
    }
    req
}

async fn body(res: Response<Full<Bytes>>) -> String {
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn org_context_in_a_plain_tower_stack() {
    let reached = Arc::new(AtomicUsize::new(0));
    let layer = OrgContextLayer::new()
        .no_path_param()
        .header(HeaderName::from_static("x-org-id"));
    let svc = || layer.layer(echo_org(reached.clone()));

    let res = svc()
        .oneshot(plain(Some(principal(Some("org_a"), &[])), &[]))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await, "org_a", "the OrgId is inserted");
    let res = svc()
        .oneshot(plain(
            Some(principal(Some("org_a"), &[])),
            &[("x-org-id", "org_a")],
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let refused = [
        (
            plain(
                Some(principal(Some("org_a"), &[])),
                &[("x-org-id", "org_b")],
            ),
            StatusCode::FORBIDDEN,
        ),
        (
            plain(
                Some(principal(Some("org_a"), &[])),
                &[("x-org-id", "org_a"), ("x-org-id", "org_a")],
            ),
            StatusCode::FORBIDDEN,
        ),
        (
            plain(Some(principal(None, &["comps:read"])), &[]),
            StatusCode::FORBIDDEN,
        ),
        (plain(None, &[]), StatusCode::INTERNAL_SERVER_ERROR),
    ];
    for (req, status) in refused {
        let res = svc().oneshot(req).await.unwrap();
        assert_eq!(res.status(), status);
        assert!(res.headers().get("www-authenticate").is_none());
        let json: serde_json::Value = serde_json::from_str(&body(res).await).unwrap();
        if status == StatusCode::FORBIDDEN {
            assert_eq!(json["error"], "org_forbidden");
        }
    }
    assert_eq!(reached.load(Ordering::SeqCst), 2);

    // With path parameters expected but no routing in front: refused, never waved through.
    let unrouted = OrgContextLayer::new().layer(echo_org(reached.clone()));
    let res = unrouted
        .oneshot(plain(Some(principal(Some("org_a"), &[])), &[]))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reached.load(Ordering::SeqCst), 2);
}

fn org_router(reached: Arc<AtomicUsize>, layer: OrgContextLayer) -> Router {
    Router::new()
        .route(
            "/orgs/{org}/comps",
            get(move |org: OrgId| {
                reached.fetch_add(1, Ordering::SeqCst);
                async move { org.to_string() }
            }),
        )
        .route("/health", get(|| async { "up" }))
        .route_layer(layer)
}

fn routed(path: &str, p: Principal) -> Request<Body> {
    let mut req = Request::get(path).body(Body::empty()).unwrap();
    req.extensions_mut().insert(p);
    req
}

#[tokio::test]
async fn org_context_under_axum_routing() {
    let reached = Arc::new(AtomicUsize::new(0));
    let app = org_router(reached.clone(), OrgContextLayer::new());
    let alice = principal(Some("org_a"), &[]);
    for (path, status) in [
        ("/orgs/org_a/comps", StatusCode::OK),
        ("/orgs/org_b/comps", StatusCode::FORBIDDEN),
        ("/orgs/ORG_A/comps", StatusCode::FORBIDDEN),
        // Percent-decoded by axum before the comparison: still the same org.
        ("/orgs/org%5Fa/comps", StatusCode::OK),
        // Not UTF-8 once decoded: names no org the principal has.
        ("/orgs/%FF/comps", StatusCode::FORBIDDEN),
        // A route without {org} acts in the principal's org.
        ("/health", StatusCode::OK),
    ] {
        let res = app
            .clone()
            .oneshot(routed(path, alice.clone()))
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{path}");
    }
    assert_eq!(reached.load(Ordering::SeqCst), 2);

    // Another parameter name.
    let app = Router::new()
        .route("/tenants/{tenant}/x", get(|| async { "ok" }))
        .route_layer(OrgContextLayer::new().path_param("tenant"));
    let res = app
        .oneshot(routed("/tenants/org_b/x", alice))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

/// The same answers as under axum's router, with the `{org}` segment found by position in the
/// route's template (the router in front matched the path against it).
#[tokio::test]
async fn org_context_by_path_template() {
    let reached = Arc::new(AtomicUsize::new(0));
    let alice = principal(Some("org_a"), &[]);
    let at = |path: &str| {
        let mut req = Request::get(path).body(Full::default()).unwrap();
        req.extensions_mut().insert(alice.clone());
        req
    };
    let comps = OrgContextLayer::new()
        .path_template("/orgs/{org}/comps/{id}")
        .layer(echo_org(reached.clone()));
    for (path, status) in [
        ("/orgs/org_a/comps/7", StatusCode::OK),
        ("/orgs/org_b/comps/7", StatusCode::FORBIDDEN),
        ("/orgs/ORG_A/comps/7", StatusCode::FORBIDDEN),
        ("/orgs/org%5Fa/comps/7", StatusCode::OK),
        ("/orgs/%FF/comps/7", StatusCode::FORBIDDEN),
        // Not what the template matches: fails closed.
        ("/orgs", StatusCode::FORBIDDEN),
    ] {
        let res = comps.clone().oneshot(at(path)).await.unwrap();
        assert_eq!(res.status(), status, "{path}");
    }
    assert_eq!(reached.load(Ordering::SeqCst), 2);

    // A template without the parameter names no org: the principal's applies.
    let health = OrgContextLayer::new()
        .path_template("/health/{probe}")
        .layer(echo_org(reached.clone()));
    let res = health.oneshot(at("/health/live")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await, "org_a");

    // Another parameter name, set before or after the template.
    for layer in [
        OrgContextLayer::new()
            .path_param("tenant")
            .path_template("/tenants/{tenant}/x"),
        OrgContextLayer::new()
            .path_template("/tenants/{tenant}/x")
            .path_param("tenant"),
    ] {
        let svc = layer.layer(echo_org(reached.clone()));
        let res = svc.clone().oneshot(at("/tenants/org_b/x")).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let res = svc.oneshot(at("/tenants/org_a/x")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
}

#[test]
#[should_panic(expected = "must be a whole segment")]
fn a_template_parameter_must_be_a_whole_segment() {
    let _ = OrgContextLayer::new().path_template("/orgs/{org}.json");
}

/// Catch-alls: another one ends the template; one named for the org names the rest of the
/// path; an escaped `{{org}}` is literal.
#[tokio::test]
async fn org_context_by_path_template_with_catch_alls() {
    let reached = Arc::new(AtomicUsize::new(0));
    let alice = principal(Some("org_a"), &[]);
    let status = |template: &'static str, path: &'static str| {
        let svc = OrgContextLayer::new()
            .path_template(template)
            .layer(echo_org(reached.clone()));
        let mut req = Request::get(path).body(Full::default()).unwrap();
        req.extensions_mut().insert(alice.clone());
        async move { svc.oneshot(req).await.unwrap().status() }
    };
    assert_eq!(
        status("/api/{*rest}", "/api/orgs/org_b/x").await,
        StatusCode::OK
    );
    assert_eq!(status("/orgs/{*org}", "/orgs/org_a").await, StatusCode::OK);
    assert_eq!(
        status("/orgs/{*org}", "/orgs/org_a/x").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status("/lit/{{org}}/{org}", "/lit/{org}/org_a").await,
        StatusCode::OK
    );
    assert_eq!(
        status("/lit/{{org}}/{org}", "/lit/{org}/org_b").await,
        StatusCode::FORBIDDEN
    );
}

async fn scope_status(
    layer: RequireScopesLayer,
    p: Principal,
) -> (StatusCode, Option<String>, serde_json::Value) {
    let svc = layer.layer(echo_org(Arc::default()));
    let res = svc.oneshot(plain(Some(p), &[])).await.unwrap();
    let status = res.status();
    let www = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = body(res).await;
    (status, www, serde_json::from_str(&text).unwrap_or_default())
}

#[tokio::test]
async fn require_scopes_all_and_any() {
    let reader = principal(Some("org_a"), &["comps:read"]);
    let writer = principal(Some("org_a"), &["comps:read", "comps:write"]);
    assert_eq!(
        scope_status(RequireScopesLayer::all(["comps:read"]), reader.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        scope_status(
            RequireScopesLayer::all(["comps:read", "comps:write"]),
            writer.clone()
        )
        .await
        .0,
        200
    );
    assert_eq!(
        scope_status(
            RequireScopesLayer::any(["reports:read", "comps:read"]),
            reader.clone()
        )
        .await
        .0,
        200
    );
    assert_eq!(
        scope_status(RequireScopesLayer::all(Vec::<&str>::new()), reader.clone())
            .await
            .0,
        200
    );

    let (status, www, body) = scope_status(
        RequireScopesLayer::all(["comps:write", "comps:read"]),
        reader.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        www.unwrap(),
        r#"Bearer realm="portcullis", error="insufficient_scope", scope="comps:read comps:write""#
    );
    assert_eq!(
        body["required"],
        serde_json::json!(["comps:read", "comps:write"])
    );
    assert_eq!(body["match"], "all");
    let (status, _, body) = scope_status(
        RequireScopesLayer::any(["reports:read", "tims:read"]),
        writer,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["match"], "any");
}

#[tokio::test]
async fn require_a_recent_second_factor() {
    let with_fva = |second: Option<u32>| {
        Principal::builder(PrincipalKind::User, "u")
            .scopes(ScopeSet::parse(["comps:read"]).unwrap())
            .factor_age(FactorAge {
                first_factor_minutes: Some(1),
                second_factor_minutes: second,
            })
            .build()
    };
    let layer = || RequireScopesLayer::all(["comps:read"]).second_factor_within(10);
    assert_eq!(scope_status(layer(), with_fva(Some(3))).await.0, 200);
    for p in [
        with_fva(Some(11)),
        with_fva(None),
        principal(None, &["comps:read"]),
    ] {
        let (status, www, body) = scope_status(layer(), p).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "insufficient_user_authentication");
        assert!(www.unwrap().ends_with("max_age=600"));
    }
}

#[tokio::test]
async fn require_scopes_without_a_principal_is_a_wiring_bug() {
    let svc = RequireScopesLayer::all(["comps:read"]).layer(echo_org(Arc::default()));
    let res = svc.oneshot(plain(None, &[])).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[test]
fn invalid_configuration_is_an_error() {
    assert!(RequireScopesLayer::try_all(["comps"]).is_err());
    assert!(RequireScopesLayer::try_any(Vec::<&str>::new()).is_err());
    let caught = std::panic::catch_unwind(|| RequireScopesLayer::all(["Not A Scope"]));
    assert!(
        caught.is_err(),
        "all() panics on an invalid name, as documented"
    );
}
