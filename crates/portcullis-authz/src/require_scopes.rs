//! Middleware that requires scopes of the request's principal.
//!
//! Attach it per route (axum `route_layer`, or a route of the gateway's policy file). It reads the
//! [`Principal`] an authentication layer inserted and checks its normalized scopes: all of a list
//! ([`RequireScopesLayer::all`]) or any one of it ([`RequireScopesLayer::any`]). A principal
//! without them gets 403 with `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"`,
//! and the inner service is never called. Optionally the route can also demand a recent second
//! factor (Clerk `fva`), answered per RFC 9470 when missing.
//!
//! # Example
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use portcullis_authz::RequireScopesLayer;
//! use portcullis_core::{Principal, PrincipalKind, ScopeSet};
//! use tower::ServiceExt;
//!
//! # #[tokio::main] async fn main() {
//! let app = Router::new()
//!     .route("/comps", get(|| async { "comps" }))
//!     .route_layer(RequireScopesLayer::all(["comps:read"]));
//!
//! let reader = Principal::builder(PrincipalKind::User, "user_1")
//!     .scopes(ScopeSet::parse(["comps:read"]).unwrap())
//!     .build();
//! let mut req = Request::get("/comps").body(Body::empty()).unwrap();
//! req.extensions_mut().insert(reader);
//! assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::OK);
//!
//! let nobody = Principal::builder(PrincipalKind::User, "user_2").build();
//! let mut req = Request::get("/comps").body(Body::empty()).unwrap();
//! req.extensions_mut().insert(nobody);
//! assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::FORBIDDEN);
//! # }
//! ```

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use portcullis_core::{
    AuthError, DEFAULT_REALM, Principal, RequestId, Scope,
    audit::{AuditEvent, AuditHandle, Outcome, RecordFuture, SensitiveRoute},
};
use tower_layer::Layer;
use tower_service::Service;

/// Layer that applies [`RequireScopes`], which requires scopes of each request's principal.
///
/// See the [module docs](self) for an example.
#[derive(Clone, Debug)]
#[must_use]
pub struct RequireScopesLayer {
    rule: Arc<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    required: Arc<[Scope]>,
    all: bool,
    sensitive: bool,
    second_factor_within: Option<u32>,
    realm: Box<str>,
}

impl RequireScopesLayer {
    /// Require every one of `scopes`. An empty list lets every principal through.
    ///
    /// # Panics
    ///
    /// When a name is not a valid [`Scope`]; use [`RequireScopesLayer::try_all`] for names read
    /// from configuration.
    pub fn all<I>(scopes: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::try_all(scopes).expect("valid scope names")
    }

    /// Require at least one of `scopes`.
    ///
    /// # Panics
    ///
    /// When a name is not a valid [`Scope`], or the list is empty.
    pub fn any<I>(scopes: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::try_any(scopes).expect("at least one valid scope name")
    }

    /// Like [`RequireScopesLayer::all`], returning an error for an invalid name.
    pub fn try_all<I>(scopes: I) -> Result<Self, portcullis_core::InvalidScope>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Ok(Self::from_rule(parse(scopes)?, true))
    }

    /// Like [`RequireScopesLayer::any`], returning an error for an invalid name or an empty list.
    pub fn try_any<I>(scopes: I) -> Result<Self, portcullis_core::InvalidScope>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let scopes = parse(scopes)?;
        if scopes.is_empty() {
            // "any of nothing" would refuse everyone: a configuration mistake.
            return Err(Scope::new("").unwrap_err());
        }
        Ok(Self::from_rule(scopes, false))
    }

    fn from_rule(required: Arc<[Scope]>, all: bool) -> Self {
        Self {
            rule: Arc::new(Rule {
                required,
                all,
                sensitive: false,
                second_factor_within: None,
                realm: DEFAULT_REALM.into(),
            }),
        }
    }

    fn rule_mut(&mut self) -> &mut Rule {
        Arc::make_mut(&mut self.rule)
    }

    /// Also require that the session verified a second factor at most `minutes` ago (Clerk's
    /// `fva` claim). A principal without that information is refused.
    pub fn second_factor_within(mut self, minutes: u32) -> Self {
        self.rule_mut().second_factor_within = Some(minutes);
        self
    }

    /// The realm named in `WWW-Authenticate` challenges.
    pub fn realm(mut self, realm: &str) -> Self {
        self.rule_mut().realm = realm.into();
        self
    }

    /// Mark the route's decisions sensitive: an allowed request is recorded as a sensitive
    /// audit event (`authz.allowed`) before the service runs, and refused with 503 when it cannot
    /// be; a refusal is marked sensitive for the audit layer. Needs the audit layer of
    /// `portcullis-audit` in front, which provides the sink; without it the route answers 500.
    pub fn sensitive(mut self) -> Self {
        self.rule_mut().sensitive = true;
        self
    }

    /// The scopes this layer requires.
    pub fn required(&self) -> &[Scope] {
        &self.rule.required
    }
}

fn parse<I>(scopes: I) -> Result<Arc<[Scope]>, portcullis_core::InvalidScope>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let mut v = scopes
        .into_iter()
        .map(|s| Scope::new(s.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    v.sort_unstable();
    v.dedup();
    Ok(v.into())
}

impl<S> Layer<S> for RequireScopesLayer {
    type Service = RequireScopes<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScopes {
            inner,
            rule: self.rule.clone(),
        }
    }
}

/// Middleware that requires scopes of each request's principal; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct RequireScopes<S> {
    inner: S,
    rule: Arc<Rule>,
}

impl<S> RequireScopes<S> {
    /// Returns a new [`Layer`] that requires every one of `scopes`; see
    /// [`RequireScopesLayer::all`].
    ///
    /// # Panics
    ///
    /// When a name is not a valid [`Scope`].
    pub fn layer<I>(scopes: I) -> RequireScopesLayer
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        RequireScopesLayer::all(scopes)
    }

    crate::macros::define_inner_service_accessors!();
}

impl Rule {
    fn check(&self, principal: Option<&Principal>) -> Result<(), AuthError> {
        let principal = principal.ok_or(AuthError::Misconfigured {
            missing: "Principal",
        })?;
        let held = principal.scopes();
        let granted = if self.all {
            held.contains_all(self.required.iter())
        } else {
            held.contains_any(self.required.iter())
        };
        if !granted {
            return Err(AuthError::InsufficientScope {
                required: self.required.clone(),
                all: self.all,
            });
        }
        if let Some(max) = self.second_factor_within {
            let age = principal.factor_age().and_then(|a| a.second_factor_minutes);
            if age.is_none_or(|m| m > max) {
                return Err(AuthError::InsufficientUserAuthentication {
                    max_age_minutes: max,
                });
            }
        }
        Ok(())
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireScopes<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let rule = &self.rule;
        if let Err(err) = rule.check(req.extensions().get::<Principal>()) {
            return ResponseFuture::reject(&err, rule, &req);
        }
        if !rule.sensitive {
            return ResponseFuture::inner(self.inner.call(req));
        }
        let Some(AuditHandle(sink, _)) = req.extensions().get::<AuditHandle>().cloned() else {
            let err = AuthError::Misconfigured {
                missing: "AuditHandle (a sensitive route needs the audit layer in front)",
            };
            return ResponseFuture::reject(&err, rule, &req);
        };
        let principal = req.extensions().get::<Principal>().expect("checked above");
        let request_id = RequestId::from_headers(req.headers());
        let mut event = AuditEvent::new("authz.allowed", Outcome::Success)
            .by(principal)
            .request(&request_id, req.method(), req.uri().path())
            .sensitive();
        event.scopes_required = rule.required.to_vec();
        let recording = sink.record_sensitive(event);
        // mem::replace: the service that was polled ready is the one that gets called.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::recording(recording, req, inner, rule.clone())
    }
}

pin_project! {
    /// Response future for [`RequireScopes`].
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        kind: Kind<S, ReqBody>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        // Boxed: only sensitive routes record before calling the service.
        Recording { state: Box<Recording<S, ReqBody>> },
        Inner { #[pin] fut: S::Future },
        Reject { res: Option<S::Response> },
    }
}

struct Recording<S, ReqBody> {
    recording: RecordFuture,
    req: Option<Request<ReqBody>>,
    inner: S,
    rule: Arc<Rule>,
}

impl<S, ReqBody, ResBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    fn inner(fut: S::Future) -> Self {
        Self {
            kind: Kind::Inner { fut },
        }
    }

    fn reject(err: &AuthError, rule: &Rule, req: &Request<ReqBody>) -> Self {
        let mut res = err.to_response(&rule.realm, &RequestId::from_headers(req.headers()));
        if let Some(principal) = req.extensions().get::<Principal>() {
            res.extensions_mut().insert(principal.clone());
        }
        if rule.sensitive {
            res.extensions_mut().insert(SensitiveRoute);
        }
        Self {
            kind: Kind::Reject { res: Some(res) },
        }
    }

    fn recording(
        recording: RecordFuture,
        req: Request<ReqBody>,
        inner: S,
        rule: Arc<Rule>,
    ) -> Self {
        Self {
            kind: Kind::Recording {
                state: Box::new(Recording {
                    recording,
                    req: Some(req),
                    inner,
                    rule,
                }),
            },
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.kind.as_mut().project() {
                KindProj::Recording { state } => {
                    let recorded = ready!(state.recording.as_mut().poll(cx));
                    let req = state.req.take().expect("polled after completion");
                    if recorded.is_err() {
                        // No record, no action.
                        let err = AuthError::unavailable("audit sink");
                        let res = err.to_response(
                            &state.rule.realm,
                            &RequestId::from_headers(req.headers()),
                        );
                        return Poll::Ready(Ok(res));
                    }
                    let fut = state.inner.call(req);
                    this.kind.set(Kind::Inner { fut });
                }
                KindProj::Inner { fut } => return fut.poll(cx),
                KindProj::Reject { res } => {
                    return Poll::Ready(Ok(res.take().expect("polled after completion")));
                }
            }
        }
    }
}
