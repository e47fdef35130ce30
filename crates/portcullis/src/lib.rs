//! Access control for axum and tower services: authenticate a bearer credential, fix the one
//! organization a request acts in, and require scopes — each a plain tower `Layer`.
//!
//! ```text
//! request ──► AuthenticateLayer ──► OrgContextLayer ──► RequireScopesLayer ──► service
//!               JWT (JWKS, Clerk)     {org} must match     per route
//! ```
//!
//! # Example
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use portcullis::{AuthenticateLayer, OrgContextLayer, OrgId, Principal, RequireScopesLayer};
//! use portcullis::jwt::{Issuer, JwtVerifier};
//!
//! let verifier = JwtVerifier::builder()
//!     .issuer(Issuer::new("https://clerk.example.com"))
//!     .build()
//!     .expect("valid configuration");
//!
//! let app: Router = Router::new()
//!     .route(
//!         "/api/v1/orgs/{org}/comps",
//!         get(|p: Principal, org: OrgId| async move { format!("{} in {org}", p.subject()) }),
//!     )
//!     .route_layer(RequireScopesLayer::all(["comps:read"]))
//!     .route_layer(OrgContextLayer::new())
//!     .layer(AuthenticateLayer::new(verifier));
//! ```
//!
//! # Feature flags
//!
//! - `jwt`: the JWT verifier ([`jwt`]).
//! - `api-keys`: API keys ([`api_keys`]).
//! - `aws-lc-rs`: jsonwebtoken's crypto backend, for binaries. A library leaves it off; a binary
//!   enables it, or `portcullis-jwt/rust-crypto`, or installs a provider itself.
//! - `full`: everything but a crypto backend.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(inline)]
pub use portcullis_authn::{Authenticate, AuthenticateLayer};
#[doc(inline)]
pub use portcullis_authz::{
    Guard, GuardLayer, GuardRefusal, OrgContext, OrgContextLayer, RequireScopes,
    RequireScopesLayer, guard,
};
#[doc(inline)]
pub use portcullis_core::{
    Actor, AuthError, CredentialId, OrgId, OrgMembership, Principal, PrincipalKind, Scope,
    ScopePolicy, ScopeSet, Scopes, Verification, VerifyCredential,
};

/// The shared model: every type of `portcullis-core`.
pub mod core {
    #[doc(inline)]
    pub use portcullis_core::*;
}

/// Hashed, org-scoped, expiring API keys: format, stores, verifier, management API.
#[cfg(feature = "api-keys")]
#[cfg_attr(docsrs, doc(cfg(feature = "api-keys")))]
pub mod api_keys {
    #[doc(inline)]
    pub use portcullis_apikey::*;
}

/// JWT verification: JWKS per issuer, Clerk claims, strict scopes.
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod jwt {
    #[doc(inline)]
    pub use portcullis_jwt::*;
}
