//! Authorization middleware: fix the organization a request acts in, and require scopes.
//!
//! - [`OrgContextLayer`]: the organization named by the route (`{org}`) or a header must be the
//!   principal's active one, else 403 `org_forbidden`; inserts the [`OrgId`](portcullis_core::OrgId).
//! - [`RequireScopesLayer`]: per route, all-of or any-of the principal's normalized scopes, else
//!   403 `insufficient_scope`.
//! - [`GuardLayer`]: compliance checks after authorization that can deny with a reason (403
//!   `guard_denied`) or fail closed (503), never grant.
//!
//! All read the [`Principal`](portcullis_core::Principal) that an authentication layer (see
//! `portcullis-authn`) inserted, and all work in a plain tower stack as well as in axum. A
//! request that reaches either without a principal is a wiring bug and is answered 500.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod future;
pub mod guard;
mod macros;
pub mod org_context;
pub mod require_scopes;

pub use future::ResponseFuture;
#[doc(inline)]
pub use guard::{Guard, GuardLayer, GuardRefusal, Guarded};
#[doc(inline)]
pub use org_context::{OrgContext, OrgContextLayer};
#[doc(inline)]
pub use require_scopes::ResponseFuture as RequireScopesFuture;
#[doc(inline)]
pub use require_scopes::{RequireScopes, RequireScopesLayer};
