//! Where keys live: one trait, with an in-memory store and a SQL store (SQLite or PostgreSQL).

mod memory;
mod revocations;
mod sql;

use std::{fmt, future::Future, pin::Pin};

use portcullis_core::{OrgId, ScopeSet};

pub use memory::MemoryStore;
pub use revocations::RevocationFeed;
pub use sql::{REVOCATION_CHANNEL, SqlStore};

use crate::Digest;

/// A boxed future, for the object-safe [`KeyStore`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A stored key, without its digest. Never holds the plaintext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The public key id (`key_…`), the service account's subject.
    pub id: Box<str>,
    /// The one organization the key acts in.
    pub org: OrgId,
    /// A name for people.
    pub name: Box<str>,
    /// The scopes granted.
    pub scopes: ScopeSet,
    /// Who created it (a user id or another key id).
    pub created_by: Box<str>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; every key expires.
    pub expires_at: i64,
    /// Unix seconds, once revoked.
    pub revoked_at: Option<i64>,
    /// Unix seconds, to the minute, of the last use seen.
    pub last_used_at: Option<i64>,
    /// The display start of the key (`pc_sk_` and four characters).
    pub start: Box<str>,
    /// The key's last four characters.
    pub last4: Box<str>,
    /// The version of the server secret the digest was made with.
    pub secret_version: u16,
}

/// A store failure. Its message names no key and no secret.
#[derive(Clone, Debug)]
pub struct StoreError(Box<str>);

impl StoreError {
    /// A failure described by `message`.
    pub fn new(message: impl Into<Box<str>>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// A key store. Keys are found by digest (a unique index); everything else is confined to an
/// organization.
pub trait KeyStore: Send + Sync + 'static {
    /// The key with this digest, revoked or not.
    fn find<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<ApiKeyRecord>, StoreError>>;

    /// Store a new key.
    fn insert<'a>(
        &'a self,
        record: &'a ApiKeyRecord,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The keys of `org`, newest first.
    fn list<'a>(&'a self, org: &'a OrgId) -> BoxFuture<'a, Result<Vec<ApiKeyRecord>, StoreError>>;

    /// Revoke key `id` of `org` at `at`; the digest of the key, or `None` when `org` has no such
    /// key. Revoking twice keeps the first time.
    fn revoke<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a str,
        at: i64,
    ) -> BoxFuture<'a, Result<Option<Digest>, StoreError>>;

    /// Record last use: for each `(id, at)`, set `last_used_at` to `at` unless it is already
    /// later (the value only moves forward).
    fn touch<'a>(&'a self, used: &'a [(Box<str>, i64)]) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Replace the digest of key `id` by one made with the current secret.
    fn rehash<'a>(
        &'a self,
        id: &'a str,
        digest: &'a Digest,
        version: u16,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

impl<S: KeyStore + ?Sized> KeyStore for std::sync::Arc<S> {
    fn find<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<ApiKeyRecord>, StoreError>> {
        (**self).find(digest)
    }
    fn insert<'a>(
        &'a self,
        record: &'a ApiKeyRecord,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).insert(record, digest)
    }
    fn list<'a>(&'a self, org: &'a OrgId) -> BoxFuture<'a, Result<Vec<ApiKeyRecord>, StoreError>> {
        (**self).list(org)
    }
    fn revoke<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a str,
        at: i64,
    ) -> BoxFuture<'a, Result<Option<Digest>, StoreError>> {
        (**self).revoke(org, id, at)
    }
    fn touch<'a>(&'a self, used: &'a [(Box<str>, i64)]) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).touch(used)
    }
    fn rehash<'a>(
        &'a self,
        id: &'a str,
        digest: &'a Digest,
        version: u16,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).rehash(id, digest, version)
    }
}
