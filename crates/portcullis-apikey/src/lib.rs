//! Hashed, org-scoped, expiring API keys for service accounts.
//!
//! A key looks like `pc_sk_<43 base62 characters><6-character checksum>` ([`KeyFormat`]). Only
//! `HMAC-SHA256(server secret, key)` is stored ([`KeyHasher`]); the plaintext is shown once, at
//! creation. [`ApiKeyVerifier`] implements
//! [`VerifyCredential`](portcullis_core::VerifyCredential), so keys go through the same
//! authentication layer as JWTs and yield a service-account [`Principal`](portcullis_core::Principal):
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use portcullis_apikey::{ApiKeyVerifier, KeyFormat, KeyHasher, SqlStore};
//! use portcullis_authn::AuthenticateLayer;
//! use portcullis_core::{AuthError, Verification, VerifyCredential};
//!
//! // Stands for the JWT verifier of portcullis-jwt.
//! struct Jwt;
//! impl VerifyCredential for Jwt {
//!     fn verify(&self, _: &str) -> Verification {
//!         Verification::Ready(Err(AuthError::invalid_token("the access token is invalid")))
//!     }
//! }
//!
//! let store = SqlStore::connect("sqlite://portcullis.db").await?;
//! let keys = ApiKeyVerifier::new(KeyFormat::default(), KeyHasher::new(1, &[0x42; 32])?, store);
//! // API keys first (by their prefix), JWTs for everything else.
//! let layer = AuthenticateLayer::new(Arc::new((keys, Jwt)));
//! # let _ = layer;
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod api;
mod digest;
mod format;
pub mod store;
mod verifier;

pub use digest::{Digest, KeyHasher, MIN_SECRET_LEN};
pub use format::{
    BODY_LEN, CHECKSUM_LEN, KeyFormat, MalformedKey, ParsedKey, PlaintextKey, SECRET_KEY,
};
pub use store::{ApiKeyRecord, KeyStore, MemoryStore, SqlStore, StoreError};
pub use verifier::{
    ApiKeyVerifier, ApiKeyVerifierBuilder, CreateError, CreatedKey, LastUseFlush, PreparedKey,
};
