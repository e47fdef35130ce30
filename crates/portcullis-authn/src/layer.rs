use std::sync::Arc;

use portcullis_core::DEFAULT_REALM;
use tower_layer::Layer;

use crate::Authenticate;

/// Layer that applies [`Authenticate`], which authenticates each request's bearer credential
/// with a verifier.
///
/// See the [module docs](crate) for an example.
#[derive(Clone, Debug)]
#[must_use]
pub struct AuthenticateLayer<V> {
    pub(crate) verifier: V,
    pub(crate) realm: Arc<str>,
}

impl<V> AuthenticateLayer<V> {
    /// Create a new `AuthenticateLayer` that checks credentials with `verifier`.
    ///
    /// The verifier is cloned into every service, so it should be cheap to clone: wrap it in an
    /// [`Arc`] unless it already is one inside.
    pub fn new(verifier: V) -> Self {
        Self {
            verifier,
            realm: Arc::from(DEFAULT_REALM),
        }
    }

    /// The realm named in `WWW-Authenticate` challenges (default `portcullis`).
    pub fn realm(mut self, realm: impl Into<Arc<str>>) -> Self {
        self.realm = realm.into();
        self
    }
}

impl<S, V: Clone> Layer<S> for AuthenticateLayer<V> {
    type Service = Authenticate<S, V>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            verifier: self.verifier.clone(),
            realm: self.realm.clone(),
        }
    }
}
