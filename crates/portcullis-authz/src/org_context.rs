//! Middleware that fixes the one organization a request acts in.
//!
//! The organization is the principal's active one (Clerk `org_id` / `o.id`, or an API key's
//! org). An organization the request names — the `{org}` segment of the matched axum route (or,
//! outside axum's router, of the route [`path_template`](OrgContextLayer::path_template) names),
//! or a configured header — must be that one, else the request is refused with 403 `org_forbidden`
//! and the inner service is never called. A principal without an active organization is refused
//! the same way. On success the [`OrgId`] is inserted into the request's extensions, where the
//! [`OrgId`] extractor finds it.
//!
//! # Example
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use portcullis_authz::OrgContextLayer;
//! use portcullis_core::{OrgId, OrgMembership, Principal, PrincipalKind};
//! use tower::ServiceExt;
//!
//! # #[tokio::main] async fn main() {
//! let app = Router::new()
//!     .route("/orgs/{org}/reports", get(|org: OrgId| async move { org.to_string() }))
//!     .route_layer(OrgContextLayer::new());
//!
//! // What an authentication layer would have inserted:
//! let alice = Principal::builder(PrincipalKind::User, "user_alice")
//!     .org(OrgMembership::new(OrgId::new("org_a").unwrap()))
//!     .build();
//!
//! let req = |path: &str| {
//!     let mut req = Request::get(path).body(Body::empty()).unwrap();
//!     req.extensions_mut().insert(alice.clone());
//!     req
//! };
//! let res = app.clone().oneshot(req("/orgs/org_a/reports")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! let res = app.oneshot(req("/orgs/org_b/reports")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! # }
//! ```

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use axum::extract::{FromRequestParts, RawPathParams, rejection::RawPathParamsRejection};
use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderName, Request, Response};
use portcullis_core::{AuthError, DEFAULT_REALM, OrgId, Principal};
use tower_layer::Layer;
use tower_service::Service;

use crate::future::ResponseFuture;

/// The axum path parameter that names the organization by default.
pub const DEFAULT_ORG_PARAM: &str = "org";

/// Layer that applies [`OrgContext`], which fixes the organization of each request.
///
/// See the [module docs](self) for an example.
#[derive(Clone, Debug)]
#[must_use]
pub struct OrgContextLayer {
    config: Arc<Config>,
}

#[derive(Clone, Debug)]
struct Config {
    path_param: Option<Box<str>>,
    /// The route the service serves, when its parameters are found by position.
    template: Option<Box<str>>,
    /// Where `path_param` is in `template`.
    segment: Option<Position>,
    header: Option<HeaderName>,
    realm: Box<str>,
}

impl Default for OrgContextLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl OrgContextLayer {
    /// Create a new `OrgContextLayer` that compares the `{org}` path parameter, when the matched
    /// route has one, with the principal's organization.
    ///
    /// Path parameters exist only after axum routed the request: use it in a `route_layer`. In a
    /// plain tower stack (or in front of a router), call [`no_path_param`](Self::no_path_param);
    /// otherwise every request is refused with 500, rather than let an org in the path through
    /// unchecked.
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                path_param: Some(DEFAULT_ORG_PARAM.into()),
                template: None,
                segment: None,
                header: None,
                realm: DEFAULT_REALM.into(),
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// The name of the path parameter that names the organization (default `org`).
    pub fn path_param(mut self, name: &str) -> Self {
        let config = self.config_mut();
        config.path_param = Some(name.into());
        config.locate();
        self
    }

    /// Ignore path parameters.
    pub fn no_path_param(mut self) -> Self {
        let config = self.config_mut();
        config.path_param = None;
        config.locate();
        self
    }

    /// Find the organization's segment by its position in `template`, the route (in axum's
    /// syntax) that the wrapped service serves, instead of in the parameters axum's router
    /// matched: for plain tower stacks and other routers. The router in front must have matched
    /// the request's path against `template`; the segment is percent-decoded before it is
    /// compared. A template without the parameter names no organization.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Request, Response, StatusCode};
    /// use http_body_util::Full;
    /// use portcullis_authz::OrgContextLayer;
    /// use portcullis_core::{OrgId, OrgMembership, Principal, PrincipalKind};
    /// use tower::{ServiceBuilder, ServiceExt, service_fn};
    ///
    /// # #[tokio::main] async fn main() {
    /// let svc = ServiceBuilder::new()
    ///     .layer(OrgContextLayer::new().path_template("/orgs/{org}/reports"))
    ///     .service(service_fn(|_req: Request<()>| async {
    ///         Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
    ///     }));
    ///
    /// let alice = Principal::builder(PrincipalKind::User, "user_alice")
    ///     .org(OrgMembership::new(OrgId::new("org_a").unwrap()))
    ///     .build();
    /// let req = |path: &str| {
    ///     let mut req = Request::get(path).body(()).unwrap();
    ///     req.extensions_mut().insert(alice.clone());
    ///     req
    /// };
    /// let res = svc.clone().oneshot(req("/orgs/org_a/reports")).await.unwrap();
    /// assert_eq!(res.status(), StatusCode::OK);
    /// let res = svc.oneshot(req("/orgs/org_b/reports")).await.unwrap();
    /// assert_eq!(res.status(), StatusCode::FORBIDDEN);
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// When the parameter is only part of a segment (`/orgs/{org}.json`): its position would
    /// not say where it is. A catch-all before it ends the template (the parameter is not in
    /// it); a catch-all named after it (`/orgs/{*org}`) names the rest of the path.
    pub fn path_template(mut self, template: &str) -> Self {
        let config = self.config_mut();
        config.template = Some(template.into());
        config.locate();
        self
    }

    /// A request header that may name the organization (for example `x-org-id`); when present it
    /// must appear once and equal the principal's organization.
    pub fn header(mut self, name: HeaderName) -> Self {
        self.config_mut().header = Some(name);
        self
    }

    /// The realm named in `WWW-Authenticate` challenges.
    pub fn realm(mut self, realm: &str) -> Self {
        self.config_mut().realm = realm.into();
        self
    }
}

impl<S> Layer<S> for OrgContextLayer {
    type Service = OrgContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OrgContext {
            inner,
            config: self.config.clone(),
        }
    }
}

/// Middleware that fixes the organization of each request; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct OrgContext<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> OrgContext<S> {
    /// Returns a new [`Layer`] that wraps services with an `OrgContext`.
    pub fn layer() -> OrgContextLayer {
        OrgContextLayer::new()
    }

    crate::macros::define_inner_service_accessors!();
}

impl Config {
    /// Find `path_param` in `template`.
    fn locate(&mut self) {
        self.segment = None;
        let (Some(template), Some(param)) = (&self.template, &self.path_param) else {
            return;
        };
        let whole = format!("{{{param}}}");
        let rest = format!("{{*{param}}}");
        for (i, segment) in template.split('/').enumerate() {
            if *segment == *whole {
                self.segment = Some(Position::Segment(i));
                return;
            }
            if *segment == *rest {
                self.segment = Some(Position::Rest(i));
                return;
            }
            if segment.starts_with("{*") {
                // Another catch-all ends the template: the parameter is not in it.
                return;
            }
            // `{{org}}` is an escaped, literal `{org}`.
            assert!(
                !segment.contains(&*whole) || segment.contains("{{"),
                "OrgContextLayer::path_template: `{whole}` must be a whole segment of `{template}`"
            );
        }
    }

    /// The organization the path names, by position in the template.
    fn named_by_template<'a>(&self, path: &'a str) -> Named<'a> {
        if self.template.is_none() || self.path_param.is_none() {
            return Named::NotByTemplate;
        }
        let raw = match self.segment {
            None => return Named::Nothing,
            Some(Position::Segment(i)) => segment(path, i, false),
            // A catch-all names everything after its position, as axum's parameter does.
            Some(Position::Rest(i)) => segment(path, i, true),
        };
        match raw {
            Some(raw) => match percent_encoding::percent_decode_str(raw).decode_utf8() {
                Ok(org) => Named::Org(org),
                Err(_) => Named::Unreadable,
            },
            None => Named::Unreadable,
        }
    }
}

/// Segment `i` of `path` split at `/` (`path.split('/').nth(i)`), or with `rest` everything from
/// it on (`path.splitn(i + 1, '/').nth(i)`), without a searcher per segment.
fn segment(path: &str, i: usize, rest: bool) -> Option<&str> {
    let mut tail = path;
    for _ in 0..i {
        tail = &tail[tail.bytes().position(|b| b == b'/')? + 1..];
    }
    match tail.bytes().position(|b| b == b'/') {
        Some(end) if !rest => Some(&tail[..end]),
        _ => Some(tail),
    }
}

/// Where a parameter is in a template: an index into the path split at `/`.
#[derive(Clone, Copy, Debug)]
enum Position {
    /// That segment.
    Segment(usize),
    /// That segment and everything after it (a catch-all).
    Rest(usize),
}

/// What a path names, found by position.
enum Named<'a> {
    /// No template (or no parameter to look for): axum's matched parameters decide.
    NotByTemplate,
    /// The route has no such parameter.
    Nothing,
    Org(std::borrow::Cow<'a, str>),
    /// Missing, or not UTF-8 once decoded: no organization the principal has.
    Unreadable,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for OrgContext<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match self.check(req) {
            Ok(req) => ResponseFuture::inner(self.inner.call(req)),
            Err((err, req)) => ResponseFuture::reject(&err, &self.config.realm, &req),
        }
    }
}

impl<S> OrgContext<S> {
    #[allow(clippy::result_large_err)]
    fn check<B>(&self, mut req: Request<B>) -> Result<Request<B>, (AuthError, Request<B>)> {
        let Some(principal) = req.extensions().get::<Principal>() else {
            return Err((
                AuthError::Misconfigured {
                    missing: "Principal",
                },
                req,
            ));
        };
        let Some(org) = principal.org_id().cloned() else {
            return Err((
                AuthError::org_forbidden("the credential has no active organization"),
                req,
            ));
        };
        if let Some(name) = &self.config.header {
            let mut values = req.headers().get_all(name).iter();
            let named = values.next();
            let ambiguous = values.next().is_some();
            if ambiguous || named.is_some_and(|n| n.as_bytes() != org.as_bytes()) {
                return Err((
                    AuthError::org_forbidden(
                        "the organization of the request is not the credential's",
                    ),
                    req,
                ));
            }
        }
        let by_template = match self.config.named_by_template(req.uri().path()) {
            Named::NotByTemplate => None,
            Named::Nothing => Some(true),
            Named::Org(named) => Some(named == org.as_str()),
            Named::Unreadable => Some(false),
        };
        if by_template == Some(false) {
            return Err((
                AuthError::org_forbidden("the organization of the request is not the credential's"),
                req,
            ));
        }
        if let Some(param) = &self.config.path_param
            && by_template.is_none()
        {
            let (mut parts, body) = req.into_parts();
            let named_ok = match RawPathParams::from_request_parts(&mut parts, &()).now_or_never() {
                Some(Ok(params)) => params
                    .iter()
                    .all(|(key, value)| key != &**param || value == org.as_str()),
                // Outside axum routing no parameter was matched, so none can be compared: fail
                // closed (use `route_layer`, or `no_path_param()` in a plain tower stack).
                Some(Err(RawPathParamsRejection::MissingPathParams(_))) => {
                    return Err((
                        AuthError::Misconfigured {
                            missing: "path parameters (put OrgContextLayer in a route_layer, or call no_path_param())",
                        },
                        Request::from_parts(parts, body),
                    ));
                }
                // A parameter that is not UTF-8 names no organization the principal has.
                Some(Err(_)) | None => false,
            };
            if !named_ok {
                return Err((
                    AuthError::org_forbidden(
                        "the organization of the request is not the credential's",
                    ),
                    Request::from_parts(parts, body),
                ));
            }
            req = Request::from_parts(parts, body);
        }
        req.extensions_mut().insert::<OrgId>(org);
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_those_of_split() {
        for path in [
            "/api/v1/orgs/org_a/comps",
            "/",
            "",
            "//x//",
            "/orgs/org_a",
            "/a/b/c/",
        ] {
            for i in 0..7 {
                assert_eq!(
                    super::segment(path, i, false),
                    path.split('/').nth(i),
                    "{path} {i}"
                );
                assert_eq!(
                    super::segment(path, i, true),
                    path.splitn(i + 1, '/').nth(i),
                    "{path} {i} rest"
                );
            }
        }
    }
}
