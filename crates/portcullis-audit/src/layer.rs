//! Middleware that records every refusal of the Portcullis layers, in one place, and gives every
//! request an id.
//!
//! Put it outermost. It makes sure each request has an `x-request-id` (a UUIDv7 when the client
//! sent none or an unusable one), so that inner layers, the service and their error bodies all
//! name the same id, and echoes it on the response. When a response carries a refusal of an
//! inner layer (an [`AuthError`] in its extensions) it records one audit event:
//!
//! | refusal | action | outcome |
//! |---|---|---|
//! | missing, malformed, bad credential; missing second factor | `authn.failed` | `failure` |
//! | organization mismatch | `org.forbidden` | `denied` |
//! | missing scope; no route of the gateway's policy | `authz.denied` | `denied` |
//! | a guard's refusal | `guard.denied` | `denied` |
//! | dependency unavailable | `authn.unavailable` | `failure` |
//! | wiring bug | `authz.misconfigured` | `failure` |
//!
//! The event names the request (id, method, path), the reason code and, after authentication,
//! the principal. It never holds a credential.
//!
//! It also hands its sink to the layers inside (an [`AuditHandle`] in the request's extensions):
//! a route marked `RequireScopesLayer::sensitive()` records its `authz.allowed` decision through
//! it, durably, before the service runs — and answers 503 when it cannot.
//!
//! # Example
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::Request;
//! use portcullis_audit::AuditLayer;
//! use portcullis_core::{AuthError, audit::TracingAudit};
//! use tower::ServiceExt;
//!
//! # #[tokio::main] async fn main() {
//! let app = Router::new()
//!     .route("/", get(|| async { AuthError::MissingCredential }))
//!     .layer(AuditLayer::new(TracingAudit));
//! let res = app.oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), 401);
//! assert!(res.headers().contains_key("x-request-id"));
//! # }
//! ```

use std::{
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{HeaderName, HeaderValue, Method, Request, Response, Uri};
use pin_project_lite::pin_project;
use portcullis_core::{
    AuthError, Principal, REQUEST_ID_HEADER, RequestId,
    audit::{
        AuditEvent, AuditHandle, AuditLevel, AuditSink, Outcome, RecordFuture, SensitiveRoute,
    },
};
use tower_layer::Layer;
use tower_service::Service;

const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// Layer that applies [`Audit`], which records refusals and gives requests an id.
///
/// See the [module docs](self) for an example.
#[derive(Clone, Debug)]
#[must_use]
pub struct AuditLayer<A> {
    sink: A,
    level: AuditLevel,
}

impl<A> AuditLayer<A> {
    /// Create a new `AuditLayer` recording to `sink` (usually an [`Auditor`](crate::Auditor)),
    /// at [`AuditLevel::Decisions`].
    pub fn new(sink: A) -> Self {
        Self {
            sink,
            level: AuditLevel::Decisions,
        }
    }

    /// Record also every granted request (`authn.succeeded`) with [`AuditLevel::All`].
    pub fn level(mut self, level: AuditLevel) -> Self {
        self.level = level;
        self
    }
}

impl<S, A: AuditSink + Clone> Layer<S> for AuditLayer<A> {
    type Service = Audit<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        Audit {
            inner,
            handle: Arc::new(self.sink.clone()),
            level: self.level,
            sink: PhantomData,
        }
    }
}

/// Middleware that records refusals and gives requests an id; see the [module docs](self).
///
/// It holds its sink of type `A` behind one `Arc`, so that cloning it (tower and axum clone a
/// service for every request) costs one reference count.
pub struct Audit<S, A> {
    inner: S,
    handle: Arc<dyn AuditSink>,
    level: AuditLevel,
    sink: PhantomData<fn() -> A>,
}

impl<S: Clone, A> Clone for Audit<S, A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            handle: self.handle.clone(),
            level: self.level,
            sink: PhantomData,
        }
    }
}

impl<S: std::fmt::Debug, A> std::fmt::Debug for Audit<S, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("inner", &self.inner)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl<S, A, ReqBody, ResBody> Service<Request<ReqBody>> for Audit<S, A>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    A: AuditSink + Clone,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // Layers deciding sensitive actions record them through the same sink.
        req.extensions_mut()
            .insert(AuditHandle(self.handle.clone(), self.level));
        // The caller's id when it is echoed, else a fresh one, on the request for the layers
        // and services behind.
        let echoed = req.headers().get(REQUEST_ID).and_then(RequestId::echo);
        let request_id = echoed.unwrap_or_else(|| {
            let fresh = RequestId::generate();
            req.headers_mut()
                .insert(REQUEST_ID, fresh.header_value().clone());
            fresh
        });
        let context = RequestFacts {
            request_id,
            method: req.method().clone(),
            uri: req.uri().clone(),
            user_agent: req.headers().get(http::header::USER_AGENT).cloned(),
            client: req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0),
            level: self.level,
        };
        ResponseFuture {
            state: State::Inner {
                fut: self.inner.call(req),
                context: Some(context),
                sink: self.handle.clone(),
            },
        }
    }
}

#[derive(Debug)]
struct RequestFacts {
    request_id: RequestId,
    method: Method,
    uri: Uri,
    user_agent: Option<HeaderValue>,
    client: Option<std::net::SocketAddr>,
    level: AuditLevel,
}

pin_project! {
    /// Response future for [`Audit`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Inner { #[pin] fut: F, context: Option<RequestFacts>, sink: Arc<dyn AuditSink> },
        Recording { recording: RecordFuture, res: Option<Response<B>> },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Inner { fut, context, sink } => {
                    let mut res = ready!(fut.poll(cx))?;
                    let context = context.take().expect("polled after completion");
                    res.headers_mut()
                        .entry(REQUEST_ID)
                        .or_insert_with(|| context.request_id.header_value().clone());
                    let Some(event) = refusal_event(&res, &context) else {
                        return Poll::Ready(Ok(res));
                    };
                    let recording = sink.record(event);
                    this.state.set(State::Recording {
                        recording,
                        res: Some(res),
                    });
                }
                StateProj::Recording { recording, res } => {
                    if ready!(recording.as_mut().poll(cx)).is_err() {
                        // The request is refused already; the emitter counted the gap.
                        tracing::error!(target: "portcullis::audit", "a refusal could not be audited");
                    }
                    return Poll::Ready(Ok(res.take().expect("polled after completion")));
                }
            }
        }
    }
}

fn refusal_event<B>(res: &Response<B>, context: &RequestFacts) -> Option<AuditEvent> {
    let user_agent = context.user_agent.as_ref().and_then(|v| v.to_str().ok());
    let Some(error) = res.extensions().get::<AuthError>() else {
        // Granted: recorded at AuditLevel::All, with the principal the authentication layer
        // handed back.
        let principal = res.extensions().get::<Principal>();
        return (context.level == AuditLevel::All)
            .then_some(principal)
            .flatten()
            .map(|p| {
                AuditEvent::new("authn.succeeded", Outcome::Success)
                    .by(p)
                    .request(&context.request_id, &context.method, context.uri.path())
                    .user_agent(user_agent)
                    .client_address(context.client)
            });
    };
    let (action, outcome) = match error {
        AuthError::OrgForbidden { .. } => ("org.forbidden", Outcome::Denied),
        AuthError::InsufficientScope { .. } | AuthError::NoRoute => {
            ("authz.denied", Outcome::Denied)
        }
        AuthError::GuardDenied { .. } => ("guard.denied", Outcome::Denied),
        AuthError::Unavailable { .. } => ("authn.unavailable", Outcome::Failure),
        AuthError::Misconfigured { .. } => ("authz.misconfigured", Outcome::Failure),
        _ => ("authn.failed", Outcome::Failure),
    };
    let reason: std::borrow::Cow<'static, str> = match error {
        AuthError::GuardDenied { guard, reason } => format!("{guard}: {reason}").into(),
        AuthError::NoRoute => "no_route".into(),
        _ => error.code().into(),
    };
    let mut event = AuditEvent::new(action, outcome)
        .reason(reason)
        .request(&context.request_id, &context.method, context.uri.path())
        .user_agent(user_agent)
        .client_address(context.client);
    if res.extensions().get::<SensitiveRoute>().is_some() {
        event = event.sensitive();
    }
    let principal = res.extensions().get::<Principal>();
    if let AuthError::InsufficientScope { required, .. } = error {
        event.scopes_required = required.to_vec();
        event.scopes_missing = required
            .iter()
            .filter(|s| !principal.is_some_and(|p| p.scopes().contains(s)))
            .cloned()
            .collect();
    }
    if let Some(principal) = principal {
        event = event.by(principal);
    }
    Some(event)
}
