//! JWT verification for Portcullis: keys from each issuer's JWKS cached per issuer, strict
//! validation, and Clerk v1/v2 session claims normalized into a [`Principal`].
//!
//! [`JwtVerifier`] implements [`VerifyCredential`], so it plugs into the authentication layer of
//! `portcullis-authn`:
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use portcullis_authn::AuthenticateLayer;
//! use portcullis_core::Principal;
//! use portcullis_jwt::{Issuer, JwtVerifier};
//!
//! let verifier = JwtVerifier::builder()
//!     .issuer(Issuer::new("https://clerk.example.com").authorized_party("https://app.example.com"))
//!     .build()
//!     .expect("valid configuration");
//!
//! let app: Router = Router::new()
//!     .route("/me", get(|p: Principal| async move { p.subject().to_owned() }))
//!     .layer(AuthenticateLayer::new(verifier));
//! ```
//!
//! # Crypto backend
//!
//! Signatures are checked by jsonwebtoken, whose backend this crate does not choose: a binary
//! enables exactly one of the features `aws-lc-rs` or `rust-crypto` (here or on jsonwebtoken),
//! or installs a `jsonwebtoken::crypto::CryptoProvider` itself.
//!
//! # Clerk claims
//!
//! Version 1 tokens carry `org_id`, `org_slug`, `org_role` and `org_permissions`; version 2
//! (`"v": 2`) carry the compact `o` object and the feature list `fea`, decoded as described in
//! [`clerk`]. A permission `org:<feature>:<action>` becomes the scope `<feature>:<action>` when the
//! [`ScopePolicy`](portcullis_core::ScopePolicy) knows it. Strict mode (`STRICT_SCOPES`, on by
//! default) gives zero scopes for a missing or empty permission claim. `sts: "pending"` is
//! refused as signed out; an unknown `v` is refused; `fva` is kept on the principal.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod claims;
pub mod clerk;
mod issuer;
mod jwks;
mod verifier;

pub use clerk::FpmAlignment;
pub use issuer::Issuer;
pub use jwks::{Alg, MAX_RSA_BITS, MIN_RSA_BITS};
pub use verifier::{JwtVerifier, JwtVerifierBuilder, MAX_TOKEN_LEN};

#[doc(no_inline)]
pub use portcullis_core::{Principal, VerifyCredential};
