//! Compliance checks that run after authorization and can only deny.
//!
//! A [`Guard`] looks at an authorized request — its head and its [`Principal`] — and passes it
//! or refuses it with a reason: "this instrument's checklist is incomplete", "this QR code was
//! already used". It can never grant: [`GuardLayer`] goes inside the authentication, org and
//! scope layers, and a guard's only outcomes are *pass* (the request goes on unchanged), *deny*
//! (403 `guard_denied`, with the reason in the body) and *unavailable* (503: a guard that
//! cannot decide fails closed). Guards run in order; the first refusal wins.
//!
//! # Example
//!
//! ```
//! use axum::{Router, body::Body, routing::post};
//! use http::{Request, StatusCode, request::Parts};
//! use portcullis_authz::guard::{Guard, GuardFuture, GuardLayer, GuardRefusal};
//! use portcullis_core::{Principal, PrincipalKind};
//! use tower::ServiceExt;
//!
//! /// Refuses actions on instruments whose checklist is open.
//! struct ChecklistComplete;
//!
//! impl Guard for ChecklistComplete {
//!     fn name(&self) -> &str {
//!         "checklist"
//!     }
//!     fn check(&self, request: &Parts, _principal: &Principal) -> GuardFuture {
//!         let open = request.uri.path().ends_with("/inst_7/run");
//!         Box::pin(async move {
//!             if open { Err(GuardRefusal::deny("the checklist of inst_7 is not complete")) } else { Ok(()) }
//!         })
//!     }
//! }
//!
//! # #[tokio::main] async fn main() {
//! let app = Router::new()
//!     .route("/instruments/{id}/run", post(|| async { "started" }))
//!     .route_layer(GuardLayer::new(ChecklistComplete));
//!
//! let req = |path: &str| {
//!     let mut req = Request::post(path).body(Body::empty()).unwrap();
//!     // What the authentication layer would have inserted:
//!     req.extensions_mut().insert(Principal::builder(PrincipalKind::User, "user_1").build());
//!     req
//! };
//! let res = app.clone().oneshot(req("/instruments/inst_1/run")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! let res = app.oneshot(req("/instruments/inst_7/run")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! # }
//! ```

use std::{
    borrow::Cow,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response, request::Parts};
use portcullis_core::{AuthError, DEFAULT_REALM, Principal, RequestId};
use tower_layer::Layer;
use tower_service::Service;

/// What a guard's check resolves to: `Ok(())` passes the request on.
pub type GuardFuture = Pin<Box<dyn Future<Output = Result<(), GuardRefusal>> + Send + 'static>>;

/// A compliance check after authorization; see the [module docs](self).
///
/// `check` sees the request head (method, URI, headers, extensions such as the
/// [`OrgId`](portcullis_core::OrgId)) and the principal, and returns a `'static` future: copy
/// out what the check needs. It gets no mutable access, so it cannot widen what was granted.
pub trait Guard: Send + Sync + 'static {
    /// A short name, for audit events and logs.
    fn name(&self) -> &str;

    /// Decide on one authorized request.
    fn check(&self, request: &Parts, principal: &Principal) -> GuardFuture;
}

impl<G: Guard + ?Sized> Guard for Arc<G> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn check(&self, request: &Parts, principal: &Principal) -> GuardFuture {
        (**self).check(request, principal)
    }
}

/// Why a guard refused a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardRefusal {
    /// The condition does not hold (403 `guard_denied`); the reason is sent to the client and
    /// recorded in the audit event, so it must not hold secrets.
    Denied(Cow<'static, str>),
    /// The guard could not decide (its dependency is down or too slow): fail closed with 503.
    Unavailable,
}

impl GuardRefusal {
    /// A refusal for `reason`.
    pub fn deny(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::Denied(reason.into())
    }
}

/// Layer that applies [`Guarded`], which runs guards after authorization.
///
/// See the [module docs](self) for an example.
#[derive(Clone)]
#[must_use]
pub struct GuardLayer {
    guards: Arc<[Arc<dyn Guard>]>,
    realm: Arc<str>,
}

impl fmt::Debug for GuardLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardLayer")
            .field(
                "guards",
                &self.guards.iter().map(|g| g.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl GuardLayer {
    /// Run `guard` on every request.
    pub fn new(guard: impl Guard) -> Self {
        Self {
            guards: Arc::from([Arc::new(guard) as Arc<dyn Guard>]),
            realm: DEFAULT_REALM.into(),
        }
    }

    /// Run these guards in order; the first refusal wins.
    pub fn all(guards: impl IntoIterator<Item = Arc<dyn Guard>>) -> Self {
        Self {
            guards: guards.into_iter().collect(),
            realm: DEFAULT_REALM.into(),
        }
    }

    /// Also run `guard`, after the others.
    pub fn and(self, guard: impl Guard) -> Self {
        let mut guards = self.guards.to_vec();
        guards.push(Arc::new(guard));
        Self {
            guards: guards.into(),
            ..self
        }
    }

    /// The realm named in responses (default `portcullis`).
    pub fn realm(mut self, realm: &str) -> Self {
        self.realm = realm.into();
        self
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            guards: self.guards.clone(),
            realm: self.realm.clone(),
        }
    }
}

/// Middleware that runs guards after authorization; see the [module docs](self).
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    guards: Arc<[Arc<dyn Guard>]>,
    realm: Arc<str>,
}

impl<S: fmt::Debug> fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Response future for [`Guarded`].
pub type GuardedFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Guarded<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = GuardedFuture<Self::Response, Self::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The clone is the one to call later; `self.inner` was polled ready and stays so.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guards = self.guards.clone();
        let realm = self.realm.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let refusal = match parts.extensions.get::<Principal>() {
                None => Some(AuthError::Misconfigured {
                    missing: "Principal",
                }),
                Some(principal) => {
                    let mut refusal = None;
                    for guard in guards.iter() {
                        match guard.check(&parts, principal).await {
                            Ok(()) => {}
                            Err(GuardRefusal::Denied(reason)) => {
                                refusal = Some(AuthError::GuardDenied {
                                    guard: guard.name().into(),
                                    reason: reason.into(),
                                });
                                break;
                            }
                            Err(GuardRefusal::Unavailable) => {
                                tracing::warn!(
                                    target: "portcullis::guard",
                                    guard = guard.name(),
                                    "a guard could not decide; refusing"
                                );
                                refusal = Some(AuthError::unavailable("guard"));
                                break;
                            }
                        }
                    }
                    refusal
                }
            };
            match refusal {
                None => inner.call(Request::from_parts(parts, body)).await,
                Some(error) => {
                    let request_id = RequestId::from_headers(&parts.headers);
                    let mut res = error.to_response::<ResBody>(&realm, &request_id);
                    if let Some(principal) = parts.extensions.get::<Principal>() {
                        res.extensions_mut().insert(principal.clone());
                    }
                    Ok(res)
                }
            }
        })
    }
}
