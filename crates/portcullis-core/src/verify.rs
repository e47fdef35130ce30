//! The interface between the authentication layer and whatever checks credentials.

use std::{fmt, future::Future, pin::Pin, sync::Arc};

use crate::{AuthError, Principal};

/// A boxed verification that must wait for I/O (a JWKS fetch, a key-store query).
pub type PendingVerification =
    Pin<Box<dyn Future<Output = Result<Principal, AuthError>> + Send + 'static>>;

/// The outcome of [`VerifyCredential::verify`]: decided at once, or after some I/O.
///
/// A credential seen before is answered `Ready` from a cache without allocating a future; only
/// the cold path boxes one.
pub enum Verification {
    /// Decided without waiting.
    Ready(Result<Principal, AuthError>),
    /// Decided once the future completes.
    Pending(PendingVerification),
}

impl Verification {
    /// Wait for the outcome.
    pub async fn resolve(self) -> Result<Principal, AuthError> {
        match self {
            Self::Ready(r) => r,
            Self::Pending(f) => f.await,
        }
    }
}

impl fmt::Debug for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            Self::Pending(_) => f.write_str("Pending(..)"),
        }
    }
}

impl From<Result<Principal, AuthError>> for Verification {
    fn from(r: Result<Principal, AuthError>) -> Self {
        Self::Ready(r)
    }
}

/// Checks a bearer credential and says who presented it.
///
/// Implemented by the JWT verifier and the API-key verifier; the authentication layer calls it
/// once per request with the credential of the `Authorization` header (already checked for
/// shape and size). Implementations answer every bad credential with
/// [`AuthError::InvalidToken`] and every outage of theirs with [`AuthError::Unavailable`].
///
/// A pair `(A, B)` is a verifier too: a credential goes to `A` when `A` [accepts](Self::accepts)
/// its format, else to `B` — an API-key verifier first, then JWTs for everything else.
pub trait VerifyCredential: Send + Sync + 'static {
    /// Verify `credential`.
    fn verify(&self, credential: &str) -> Verification;

    /// Whether `credential` has this verifier's format (a cheap check, no I/O); by default every
    /// credential does.
    fn accepts(&self, credential: &str) -> bool {
        let _ = credential;
        true
    }

    /// The answer [`verify`](Self::verify) would give for a credential this verifier verified
    /// before and still remembers, or `None` (the default) when it does not remember it.
    ///
    /// The authentication layer asks this first, with the credential's bytes before their
    /// characters are checked ([`bearer_bytes`](crate::bearer_bytes)), so that a credential seen
    /// before costs one cache lookup. An implementation must therefore answer only for the very
    /// bytes of a credential it verified itself (compared whole, in constant time), and apply
    /// every check that `verify` applies to a remembered credential (expiry, revocation).
    fn recall(&self, credential: &[u8]) -> Option<Result<Principal, AuthError>> {
        let _ = credential;
        None
    }
}

impl<V: VerifyCredential + ?Sized> VerifyCredential for Arc<V> {
    fn verify(&self, credential: &str) -> Verification {
        (**self).verify(credential)
    }

    #[inline]
    fn recall(&self, credential: &[u8]) -> Option<Result<Principal, AuthError>> {
        (**self).recall(credential)
    }

    fn accepts(&self, credential: &str) -> bool {
        (**self).accepts(credential)
    }
}

/// A verifier that may not be configured: `None` refuses every credential (401
/// `invalid_token`), so that `(keys, jwt)` works when no JWT issuer is set.
impl<V: VerifyCredential> VerifyCredential for Option<V> {
    #[inline]
    fn verify(&self, credential: &str) -> Verification {
        match self {
            Some(v) => v.verify(credential),
            None => Verification::Ready(Err(AuthError::invalid_token(
                "no verifier is configured for this kind of credential",
            ))),
        }
    }

    fn accepts(&self, credential: &str) -> bool {
        self.as_ref().is_some_and(|v| v.accepts(credential))
    }

    #[inline]
    fn recall(&self, credential: &[u8]) -> Option<Result<Principal, AuthError>> {
        self.as_ref()?.recall(credential)
    }
}

impl<A: VerifyCredential, B: VerifyCredential> VerifyCredential for (A, B) {
    #[inline]
    fn verify(&self, credential: &str) -> Verification {
        if self.0.accepts(credential) {
            self.0.verify(credential)
        } else {
            self.1.verify(credential)
        }
    }

    fn accepts(&self, credential: &str) -> bool {
        self.0.accepts(credential) || self.1.accepts(credential)
    }

    /// Either one's: each answers only for credentials it verified itself.
    #[inline]
    fn recall(&self, credential: &[u8]) -> Option<Result<Principal, AuthError>> {
        self.0
            .recall(credential)
            .or_else(|| self.1.recall(credential))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PrincipalKind;

    struct Prefixed(&'static str);

    impl VerifyCredential for Prefixed {
        fn verify(&self, credential: &str) -> Verification {
            Verification::Ready(Ok(
                Principal::builder(PrincipalKind::User, credential).build()
            ))
        }
        fn accepts(&self, credential: &str) -> bool {
            credential.starts_with(self.0)
        }
    }

    #[tokio::test]
    async fn an_unconfigured_verifier_refuses_what_reaches_it() {
        let none: (Prefixed, Option<Prefixed>) = (Prefixed("key_"), None);
        assert!(none.verify("key_1").resolve().await.is_ok());
        assert_eq!(
            none.verify("eyJ.x.y").resolve().await.unwrap_err().code(),
            "invalid_token"
        );
        assert!(!none.1.accepts("eyJ.x.y"));
        let some: (Prefixed, Option<Prefixed>) = (Prefixed("key_"), Some(Prefixed("eyJ")));
        assert_eq!(
            some.verify("eyJ.x.y").resolve().await.unwrap().subject(),
            "eyJ.x.y"
        );
    }

    /// Remembers one credential.
    struct Remembers(&'static [u8]);

    impl VerifyCredential for Remembers {
        fn verify(&self, _: &str) -> Verification {
            Verification::Ready(Err(AuthError::invalid_token("not remembered")))
        }
        fn recall(&self, credential: &[u8]) -> Option<Result<Principal, AuthError>> {
            (credential == self.0)
                .then(|| Ok(Principal::builder(PrincipalKind::User, "remembered").build()))
        }
    }

    #[test]
    fn recall_reaches_whichever_verifier_remembers() {
        let pair = (Prefixed("key_"), Some(Arc::new(Remembers(b"eyJ.a.b"))));
        let recalled = pair.recall(b"eyJ.a.b").unwrap().unwrap();
        assert_eq!(recalled.subject(), "remembered");
        assert!(pair.recall(b"eyJ.a.c").is_none());
        assert!(
            pair.0.recall(b"key_1").is_none(),
            "the default remembers nothing"
        );
        let none: (Prefixed, Option<Remembers>) = (Prefixed("key_"), None);
        assert!(none.recall(b"eyJ.a.b").is_none());
    }
}
