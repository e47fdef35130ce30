//! Immediate revocation for Portcullis: ended sessions, deactivated users, removed memberships
//! and role changes take effect on the next request, on every replica.
//!
//! - [`RevocationList`]: the revocations in force, in memory, checked on every request for the
//!   price of a hash lookup (one atomic load when the list is empty).
//! - [`Revocable`]: wraps a credential verifier (the JWT verifier) so that the check runs after
//!   every verification, cached token or not: the verified-token cache never hides a revocation.
//! - [`RevocationStore`]: the same revocations in the key store's database (SQLite or
//!   PostgreSQL), each kept only until the last token it could refuse has expired; on
//!   PostgreSQL a `NOTIFY` in the revoking transaction makes every replica reload, and a
//!   listener that reconnects reloads too. It also keeps last-seen times of users for access
//!   reviews.
//! - [`webhook::router`]: `POST /webhooks/clerk`, Clerk's Svix-signed webhooks turned into
//!   revocations and audit events.
//!
//! ```
//! use portcullis_core::{Principal, PrincipalKind, Verification, VerifyCredential};
//! use portcullis_revocation::{Revocable, Revocation, RevocationList, Target};
//!
//! struct Fixed;
//! impl VerifyCredential for Fixed {
//!     fn verify(&self, _: &str) -> Verification {
//!         Verification::Ready(Ok(Principal::builder(PrincipalKind::User, "user_1")
//!             .session_id("sess_1")
//!             .build()))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let list = RevocationList::new();
//! let verifier = Revocable::new(Fixed, list.clone());
//! assert!(verifier.verify("token").resolve().await.is_ok());
//! list.insert(Revocation {
//!     target: Target::Session("sess_1".into()),
//!     not_before: None,
//!     expires_at: i64::MAX,
//!     reason: "session.ended".into(),
//! });
//! assert!(verifier.verify("token").resolve().await.is_err());
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod list;
pub mod signature;
pub mod store;
pub mod webhook;

pub use list::{Revocation, RevocationList, Target};
pub use store::{RevocationStore, RevocationWatch};

use portcullis_core::{AuthError, Principal, Verification, VerifyCredential};

/// A verifier whose principals are checked against a [`RevocationList`] on every request (and,
/// with a store, noted as seen); see the [crate docs](crate).
#[derive(Clone, Debug)]
pub struct Revocable<V> {
    inner: V,
    list: RevocationList,
    store: Option<RevocationStore>,
}

impl<V> Revocable<V> {
    /// Check `inner`'s principals against `list`.
    pub fn new(inner: V, list: RevocationList) -> Self {
        Self {
            inner,
            list,
            store: None,
        }
    }

    /// Check against `store`'s list, and record users' last-seen times there.
    pub fn with_store(inner: V, store: RevocationStore) -> Self {
        Self {
            inner,
            list: store.list().clone(),
            store: Some(store),
        }
    }

    /// The wrapped verifier.
    pub fn get_ref(&self) -> &V {
        &self.inner
    }
}

impl<V: VerifyCredential> VerifyCredential for Revocable<V> {
    #[inline]
    fn verify(&self, credential: &str) -> Verification {
        match self.inner.verify(credential) {
            Verification::Ready(verified) => Verification::Ready(self.checked(verified)),
            Verification::Pending(pending) => {
                let list = self.list.clone();
                let store = self.store.clone();
                Verification::Pending(Box::pin(async move {
                    let principal = pending.await?;
                    list.check(&principal)?;
                    if let Some(store) = store {
                        store.mark_seen(&principal);
                    }
                    Ok(principal)
                }))
            }
        }
    }

    fn accepts(&self, credential: &str) -> bool {
        self.inner.accepts(credential)
    }

    /// `inner`'s recall, checked as [`verify`](VerifyCredential::verify) checks: a remembered
    /// token of a revoked session is refused all the same.
    #[inline]
    fn recall(&self, credential: &[u8]) -> Option<Result<Principal, AuthError>> {
        self.inner
            .recall(credential)
            .map(|verified| self.checked(verified))
    }
}

impl<V> Revocable<V> {
    /// `verified` if it is not revoked, noted as seen.
    fn checked(&self, verified: Result<Principal, AuthError>) -> Result<Principal, AuthError> {
        let principal = verified?;
        self.list.check(&principal)?;
        if let Some(store) = &self.store {
            store.mark_seen(&principal);
        }
        Ok(principal)
    }
}
