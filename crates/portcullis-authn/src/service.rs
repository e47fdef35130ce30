use std::{
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response, header::AUTHORIZATION};
use portcullis_core::{
    Verification, VerifyCredential,
    audit::{AuditHandle, AuditLevel},
    b64token, bearer_bytes,
};
use tower_service::Service;

use crate::{AuthenticateLayer, ResponseFuture};

/// Middleware that authenticates the bearer credential of each request and inserts the
/// [`Principal`](portcullis_core::Principal) into its extensions.
///
/// See the [module docs](crate) for an example.
#[derive(Clone, Debug)]
pub struct Authenticate<S, V> {
    pub(crate) inner: S,
    pub(crate) verifier: V,
    pub(crate) realm: Arc<str>,
}

impl<S, V> Authenticate<S, V> {
    /// Create a new `Authenticate` around `inner`.
    pub fn new(inner: S, verifier: V) -> Self {
        let layer = AuthenticateLayer::new(verifier);
        Self {
            inner,
            verifier: layer.verifier,
            realm: layer.realm,
        }
    }

    /// Returns a new [`Layer`](tower_layer::Layer) that wraps services with an `Authenticate`.
    pub fn layer(verifier: V) -> AuthenticateLayer<V> {
        AuthenticateLayer::new(verifier)
    }

    /// Gets a reference to the underlying service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Gets a mutable reference to the underlying service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the underlying service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, V, ReqBody, ResBody> Service<Request<ReqBody>> for Authenticate<S, V>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    V: VerifyCredential,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // A credential the verifier remembers is answered from its bytes; any other has its
        // characters checked before it is verified.
        let recalled =
            bearer_bytes(req.headers()).and_then(|raw| match self.verifier.recall(raw) {
                Some(remembered) => Ok(Verification::Ready(remembered)),
                None => b64token(raw).map(|credential| self.verifier.verify(credential)),
            });
        let verification = match recalled {
            Ok(verification) => verification,
            Err(err) => return ResponseFuture::reject(&err, &self.realm, &req),
        };
        // Layers after this one (tracing, proxies) must not print the credential.
        if let Some(value) = req.headers_mut().get_mut(AUTHORIZATION) {
            value.set_sensitive(true);
        }
        match verification {
            Verification::Ready(Ok(principal)) => {
                let hand_back = wants_principal_back(&req).then(|| principal.clone());
                req.extensions_mut().insert(principal);
                ResponseFuture::inner(self.inner.call(req), hand_back)
            }
            Verification::Ready(Err(err)) => ResponseFuture::reject(&err, &self.realm, &req),
            Verification::Pending(verifying) => {
                // mem::replace: the service that was polled ready is the one that gets called;
                // see https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::verifying(verifying, req, inner, self.realm.clone())
            }
        }
    }
}

/// Whether an audit layer in front records granted requests, and so needs the principal on the
/// response (request extensions do not travel back).
pub(crate) fn wants_principal_back<B>(req: &Request<B>) -> bool {
    req.extensions()
        .get::<AuditHandle>()
        .is_some_and(|h| h.1 == AuditLevel::All)
}
