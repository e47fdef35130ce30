//! The shared model of Portcullis: who is acting, in which organization, with which scopes, and
//! how a refusal is answered.
//!
//! Every other Portcullis crate builds on these types:
//!
//! - [`Principal`]: a user or a service account, maybe with an [`Actor`] acting for it, its active
//!   [`OrgMembership`], its normalized [`ScopeSet`] and the public id of its credential. Never a
//!   secret.
//! - [`ScopePolicy`]: the canonical scope list, the role → scopes map and strict-scope mode
//!   (`STRICT_SCOPES`), which turn an issuer's permissions into backend scopes.
//! - [`AuthError`]: every refusal, rendered as RFC 6750 `WWW-Authenticate` plus a small JSON body.
//! - [`VerifyCredential`]: what the authentication layer asks a JWT or API-key verifier.
//! - axum extractors for [`Principal`], [`OrgId`] and [`Scopes`].
//! - [`audit`]: the event schema and the [`AuditSink`](audit::AuditSink) every part hands events to.
//! - [`clock`]: the coarse clock the request path reads.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
mod bearer;
pub mod clock;
mod error;
mod extract;
mod org;
mod policy;
mod principal;
mod scope;
mod verify;

pub use bearer::{MAX_CREDENTIAL_LEN, b64token, bearer_bytes, bearer_credential};
pub use error::{AuthError, ConfigError, DEFAULT_REALM, REQUEST_ID_HEADER, RequestId};
pub use extract::{ExtractRejection, Scopes};
pub use org::{
    InvalidOrgId, MAX_ORG_ID_LEN, OrgId, OrgMembership, is_valid_org_id, strip_org_prefix,
};
pub use policy::{
    Permissions, Resolved, STRICT_SCOPES_ENV, ScopePolicy, ScopePolicyBuilder, ScopeSource,
    parse_bool,
};
pub use principal::{Actor, CredentialId, FactorAge, Principal, PrincipalBuilder, PrincipalKind};
pub use scope::{InvalidScope, MAX_SCOPE_LEN, Scope, ScopeSet, is_valid_scope};
pub use verify::{PendingVerification, Verification, VerifyCredential};
