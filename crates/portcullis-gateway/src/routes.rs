//! The policy's routes, dispatched without axum's router.
//!
//! A path with a dot-segment (`.`, `..`, also percent-encoded) or an encoded `/` or `\` matches
//! no route: the upstream might resolve it to another path than the one the policy checked (the
//! org of `/orgs/org_a/../org_b/x` is org_a here, org_b there). It is authenticated and refused
//! (403 `forbidden`), as any path no route allows.
//!
//! Every forwarded request takes this path, so it is kept short: one `matchit` lookup, then the
//! route's tower stack, whose type is known here (no boxed service to clone, no boxed future,
//! no path parameters to collect: [`OrgContextLayer::path_template`] finds the `{org}` segment
//! by position). Paths the policy does not name go to the axum router of the management API,
//! the health endpoints and the webhooks, whose fallback refuses them.
//!
//! [`OrgContextLayer::path_template`]: portcullis_authz::OrgContextLayer::path_template

use std::{
    convert::Infallible,
    future::{Ready, ready},
    sync::Arc,
    task::{Context, Poll},
};

use axum::{Router, body::Body};
use futures_util::future::Either as EitherFuture;
use http::{Method, Request, Response};
use portcullis_authn::Authenticate;
use portcullis_authz::{Guarded, OrgContext, RequireScopes};
use portcullis_core::{AuthError, Principal, RequestId};
use tower::{Service, ServiceExt, util::Either, util::Oneshot};

use crate::{policy::RESERVED_PATHS, proxy::Proxy, server::Credentials};

/// The matcher's value for the gateway's own paths.
const REST: usize = usize::MAX;

/// A protected route: authenticate, fix the org, require the scopes, run the guards, forward.
pub type Protected =
    Authenticate<OrgContext<RequireScopes<Either<Guarded<Proxy>, Proxy>>>, Arc<Credentials>>;

/// What no route allows: authenticated (so that a stranger learns nothing), then 403.
pub type Refused = Authenticate<NoRoute, Arc<Credentials>>;

/// The stack of one route and method.
#[derive(Clone, Debug)]
pub enum RouteStack {
    /// `public = true`: straight to the upstream.
    Public(Proxy),
    /// Everything else the policy allows.
    Protected(Box<Protected>),
    /// A method the path's routes do not allow.
    Refused(Refused),
}

/// The routes of one path.
#[derive(Clone, Debug)]
pub(crate) struct PathRoutes {
    /// By method, in the policy's order.
    pub(crate) methods: Vec<(Method, RouteStack)>,
    /// For every other method: a route without `methods`, else a refusal.
    pub(crate) otherwise: RouteStack,
}

impl PathRoutes {
    fn stack(&self, method: &Method) -> &RouteStack {
        let find = |m: &Method| self.methods.iter().find(|(allowed, _)| allowed == m);
        find(method)
            // A GET route answers HEAD too, as axum's routes do.
            .or_else(|| {
                (*method == Method::HEAD)
                    .then(|| find(&Method::GET))
                    .flatten()
            })
            .map_or(&self.otherwise, |(_, stack)| stack)
    }
}

/// The policy's routes in front of the axum router for everything else.
#[derive(Clone, Debug)]
pub struct Routes(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    matcher: matchit::Router<usize>,
    paths: Vec<PathRoutes>,
    rest: Router,
    refused: Refused,
}

impl Routes {
    /// `paths` by their templates, `rest` for every path they do not match, and `refused` for
    /// ambiguous paths.
    pub(crate) fn new(
        paths: Vec<(String, PathRoutes)>,
        rest: Router,
        refused: Refused,
    ) -> Result<Self, matchit::InsertError> {
        let mut matcher = matchit::Router::new();
        // The gateway's own paths stay the axum router's, also where a policy parameter or
        // catch-all would match them.
        for reserved in RESERVED_PATHS {
            matcher.insert(*reserved, REST)?;
        }
        let mut routes = Vec::with_capacity(paths.len());
        for (i, (template, path)) in paths.into_iter().enumerate() {
            matcher.insert(template, i)?;
            routes.push(path);
        }
        Ok(Self(Arc::new(Inner {
            matcher,
            paths: routes,
            rest,
            refused,
        })))
    }
}

type StackFuture = EitherFuture<
    EitherFuture<<Proxy as Service<Request<Body>>>::Future, Oneshot<Protected, Request<Body>>>,
    Oneshot<Refused, Request<Body>>,
>;

/// Response future of [`Routes`].
pub type RoutesFuture = EitherFuture<StackFuture, Oneshot<Router, Request<Body>>>;

impl Service<Request<Body>> for Routes {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = RoutesFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = &*self.0;
        if ambiguous(req.uri().path()) {
            return EitherFuture::Left(EitherFuture::Right(inner.refused.clone().oneshot(req)));
        }
        let path = match inner.matcher.at(req.uri().path()) {
            Ok(matched) if *matched.value != REST => &inner.paths[*matched.value],
            _ => return EitherFuture::Right(inner.rest.clone().oneshot(req)),
        };
        EitherFuture::Left(match path.stack(req.method()) {
            RouteStack::Public(proxy) => {
                EitherFuture::Left(EitherFuture::Left(proxy.clone().call(req)))
            }
            RouteStack::Protected(stack) => {
                EitherFuture::Left(EitherFuture::Right(Protected::clone(&**stack).oneshot(req)))
            }
            RouteStack::Refused(stack) => EitherFuture::Right(stack.clone().oneshot(req)),
        })
    }
}

/// Whether `path` has a dot-segment or an encoded `/` or `\\`: what an upstream might read as
/// another path.
fn ambiguous(path: &str) -> bool {
    let bytes = path.as_bytes();
    if !bytes.iter().any(|b| matches!(b, b'.' | b'%')) {
        return false;
    }
    let encoded_separator = bytes.windows(3).any(|w| {
        w[0] == b'%' && (w[1..].eq_ignore_ascii_case(b"2f") || w[1..].eq_ignore_ascii_case(b"5c"))
    });
    encoded_separator
        || path.split('/').any(|segment| {
            let decoded = percent_encoding::percent_decode_str(segment);
            let decoded: std::borrow::Cow<'_, [u8]> = decoded.into();
            &*decoded == b"." || &*decoded == b".."
        })
}

/// The service behind authentication when no route allows a request: 403 `forbidden`,
/// attributed to its principal.
#[derive(Clone, Debug)]
pub struct NoRoute {
    realm: Arc<str>,
}

impl NoRoute {
    /// Refusals naming `realm`.
    pub fn new(realm: &str) -> Self {
        Self {
            realm: realm.into(),
        }
    }
}

impl Service<Request<Body>> for NoRoute {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let request_id = RequestId::from_headers(req.headers());
        let mut res: Response<Body> = AuthError::NoRoute.to_response(&self.realm, &request_id);
        if let Some(p) = req.extensions().get::<Principal>() {
            res.extensions_mut().insert(p.clone());
        }
        ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::routing::get;

    use super::*;

    /// What an unrouted request meets: authentication (API keys over an empty store, no JWT
    /// issuer), then 403. Without a credential: 401.
    async fn refused(dir: &std::path::Path) -> Refused {
        use portcullis_apikey::{ApiKeyVerifier, KeyFormat, KeyHasher, SqlStore};
        use tower::Layer;
        let url = format!("sqlite://{}", dir.join("keys.db").display());
        let store = SqlStore::connect(&url).await.unwrap();
        let hasher = KeyHasher::new(1, &[7; 32]).unwrap();
        let keys = ApiKeyVerifier::new(KeyFormat::default(), hasher, store);
        let credentials: Arc<Credentials> = Arc::new((keys, None));
        portcullis_authn::AuthenticateLayer::new(credentials).layer(NoRoute::new("portcullis"))
    }

    /// A proxy to a port nothing listens on: reaching it answers 502.
    fn unreachable() -> Proxy {
        let url = "http://127.0.0.1:9".parse().unwrap();
        Proxy::new(&url, Duration::from_secs(1), false)
    }

    async fn status(routes: &Routes, method: Method, path: &str) -> u16 {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        routes.clone().oneshot(req).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn the_gateways_own_paths_win_over_policy_parameters() {
        let rest = Router::new()
            .route("/healthz", get(|| async { "up" }))
            .fallback(|| async { (http::StatusCode::IM_A_TEAPOT, "rest") });
        let public = |methods: Vec<Method>| PathRoutes {
            methods: methods
                .into_iter()
                .map(|m| (m, RouteStack::Public(unreachable())))
                .collect(),
            otherwise: RouteStack::Public(unreachable()),
        };
        let dir = tempfile::tempdir().unwrap();
        let routes = Routes::new(
            vec![
                ("/{*anything}".to_owned(), public(vec![])),
                ("/only-get".to_owned(), public(vec![Method::GET])),
            ],
            rest,
            refused(dir.path()).await,
        )
        .unwrap();
        assert_eq!(status(&routes, Method::GET, "/healthz").await, 200);
        // The reserved management paths go to the router (here its fallback), not the policy.
        assert_eq!(status(&routes, Method::GET, "/api/v1/api-keys").await, 418);
        assert_eq!(
            status(&routes, Method::GET, "/api/v1/api-keys/k1").await,
            418
        );
        assert_eq!(status(&routes, Method::GET, "/somewhere/else").await, 502);
        assert_eq!(status(&routes, Method::HEAD, "/only-get").await, 502);

        // Paths an upstream might read as others match no route, not even the catch-all:
        // authentication first (401 without a credential), then 403.
        for path in [
            "/orgs/org_a/../org_b/x",
            "/orgs/org_a/%2e%2E/org_b/x",
            "/orgs/./x",
            "/orgs/org_a%2Forg_b",
            "/orgs/org_a%5corg_b",
            "/..",
        ] {
            assert_eq!(status(&routes, Method::GET, path).await, 401, "{path}");
        }
        // Dots inside a segment are fine.
        assert_eq!(
            status(&routes, Method::GET, "/files/v1.2/.hidden").await,
            502
        );
    }

    #[test]
    fn ambiguous_paths() {
        for path in ["/a/../b", "/a/%2E%2e", "/a/.", "/a%2fb", "/a%5Cb", "/%2e/b"] {
            assert!(ambiguous(path), "{path}");
        }
        for path in [
            "/",
            "/a/b",
            "/a/.b",
            "/a/b..",
            "/v1.2",
            "/a%20b",
            "/a/%2e%2ex",
        ] {
            assert!(!ambiguous(path), "{path}");
        }
    }

    #[test]
    fn head_takes_the_get_route_and_other_methods_the_fallback() {
        let refused = RouteStack::Public(unreachable());
        let get_stack = RouteStack::Public(unreachable());
        let path = PathRoutes {
            methods: vec![(Method::GET, get_stack), (Method::POST, refused.clone())],
            otherwise: refused,
        };
        let index = |m: &Method| {
            let stack: *const RouteStack = path.stack(m);
            if std::ptr::eq(stack, &path.methods[0].1) {
                "get"
            } else if std::ptr::eq(stack, &path.methods[1].1) {
                "post"
            } else {
                "otherwise"
            }
        };
        assert_eq!(index(&Method::GET), "get");
        assert_eq!(index(&Method::HEAD), "get");
        assert_eq!(index(&Method::POST), "post");
        assert_eq!(index(&Method::DELETE), "otherwise");
    }
}
