//! Who is acting: a user or a service account, maybe with an actor acting for it.

use std::{
    any::Any,
    fmt,
    sync::{Arc, OnceLock},
};

use crate::{OrgId, OrgMembership, ScopeSet};

/// What kind of subject a [`Principal`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PrincipalKind {
    /// A person, authenticated by a session token (JWT `sub`).
    User,
    /// A machine, authenticated by an API key.
    ServiceAccount,
}

impl PrincipalKind {
    /// `user` or `service_account`, the names used in headers and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::ServiceAccount => "service_account",
        }
    }
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Someone acting on behalf of the principal (RFC 8693 `act`): an automation, an MCP agent, or an
/// administrator impersonating a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// The actor's subject id.
    pub subject: Box<str>,
    /// The actor's issuer, where it differs from the token's.
    pub issuer: Option<Box<str>>,
    /// The actor's session, where it has one.
    pub session_id: Option<Box<str>>,
    /// The kind of actor the issuer names (`type` in Clerk's `act`).
    pub kind: Option<Box<str>>,
}

impl Actor {
    /// An actor with only a subject id.
    pub fn new(subject: impl Into<Box<str>>) -> Self {
        Self {
            subject: subject.into(),
            issuer: None,
            session_id: None,
            kind: None,
        }
    }
}

/// The credential a principal was authenticated with, by public id only: never the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialId {
    /// A JWT: the signing key's `kid` and the token's `jti`, where present.
    Jwt {
        /// The signing key id.
        kid: Option<Box<str>>,
        /// The token id.
        jti: Option<Box<str>>,
    },
    /// An API key, by its public id.
    ApiKey {
        /// The key's public id.
        id: Box<str>,
    },
}

impl CredentialId {
    /// `jwt` or `api_key`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Jwt { .. } => "jwt",
            Self::ApiKey { .. } => "api_key",
        }
    }
}

/// Clerk's factor verification age (`fva`): minutes since the first and the second factor were
/// last verified in this session, `None` where never.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FactorAge {
    /// Minutes since the first factor was verified.
    pub first_factor_minutes: Option<u32>,
    /// Minutes since the second factor was verified.
    pub second_factor_minutes: Option<u32>,
}

/// Who is acting in a request: the result of authentication.
///
/// A principal is built once per credential and then shared: cloning it is a reference-count
/// increment, and authentication layers insert it into the request's extensions. It never holds
/// a token or a key.
///
/// As an axum extractor it answers 500 when no authentication layer ran (a wiring bug); use
/// `Option<Principal>` on routes that work with and without a principal.
///
/// ```
/// use portcullis_core::{OrgId, OrgMembership, Principal, PrincipalKind, ScopeSet};
///
/// let principal = Principal::builder(PrincipalKind::User, "user_1")
///     .org(OrgMembership::new(OrgId::new("org_1").unwrap()).role("org:admin"))
///     .scopes(ScopeSet::parse(["comps:read"]).unwrap())
///     .build();
/// assert_eq!(principal.org_id().unwrap(), "org_1");
/// assert_eq!(principal.org_role(), Some("admin"));
/// assert!(principal.scopes().contains("comps:read"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Principal(Arc<Inner>);

#[derive(PartialEq, Eq)]
struct Inner {
    kind: PrincipalKind,
    subject: Box<str>,
    name: Option<Box<str>>,
    actor: Option<Actor>,
    org: Option<OrgMembership>,
    scopes: ScopeSet,
    session_id: Option<Box<str>>,
    credential: CredentialId,
    issuer: Option<Box<str>>,
    issued_at: Option<i64>,
    expires_at: Option<i64>,
    factor_age: Option<FactorAge>,
    derived: Derived,
}

/// The slot of [`Principal::derived`]: not part of the principal's identity.
#[derive(Default)]
struct Derived(OnceLock<Box<dyn Any + Send + Sync>>);

impl PartialEq for Derived {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Derived {}

impl Principal {
    /// Start building a principal of `kind` with the subject id `subject`.
    pub fn builder(kind: PrincipalKind, subject: impl Into<Box<str>>) -> PrincipalBuilder {
        PrincipalBuilder(Inner {
            kind,
            subject: subject.into(),
            name: None,
            actor: None,
            org: None,
            scopes: ScopeSet::empty(),
            session_id: None,
            credential: CredentialId::Jwt {
                kid: None,
                jti: None,
            },
            issuer: None,
            issued_at: None,
            expires_at: None,
            factor_age: None,
            derived: Derived::default(),
        })
    }

    /// A value derived from this principal, computed on first use and kept as long as the
    /// principal is: a principal cached with its token or key serves every request that
    /// presents it, so per-request work (such as the identity headers a proxy forwards) is done
    /// once. There is one slot: `None` when a value of another type took it first.
    ///
    /// ```
    /// use portcullis_core::{Principal, PrincipalKind};
    ///
    /// let p = Principal::builder(PrincipalKind::User, "user_1").build();
    /// let header = p.derived(|p| format!("subject={}", p.subject()));
    /// assert_eq!(header.map(String::as_str), Some("subject=user_1"));
    /// assert_eq!(p.clone().derived(|_| String::from("not again")).unwrap(), "subject=user_1");
    /// assert!(p.derived(|_| 7u8).is_none(), "the slot holds a String");
    /// ```
    pub fn derived<T: Any + Send + Sync>(&self, init: impl FnOnce(&Self) -> T) -> Option<&T> {
        self.0
            .derived
            .0
            .get_or_init(|| Box::new(init(self)))
            .downcast_ref()
    }

    /// User or service account.
    pub fn kind(&self) -> PrincipalKind {
        self.0.kind
    }

    /// The subject id: the user id (JWT `sub`), or the key id of a service account.
    pub fn subject(&self) -> &str {
        &self.0.subject
    }

    /// A display name (an API key's name), where there is one.
    pub fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }

    /// Who acts on the principal's behalf, where anyone does.
    pub fn actor(&self) -> Option<&Actor> {
        self.0.actor.as_ref()
    }

    /// The active organization membership, where there is one.
    pub fn org(&self) -> Option<&OrgMembership> {
        self.0.org.as_ref()
    }

    /// The active organization's id.
    pub fn org_id(&self) -> Option<&OrgId> {
        self.0.org.as_ref().map(|m| &m.id)
    }

    /// The role in the active organization, without Clerk's `org:` prefix.
    pub fn org_role(&self) -> Option<&str> {
        self.0.org.as_ref().and_then(|m| m.role.as_deref())
    }

    /// The normalized backend scopes.
    pub fn scopes(&self) -> &ScopeSet {
        &self.0.scopes
    }

    /// The session id (JWT `sid`), where there is one.
    pub fn session_id(&self) -> Option<&str> {
        self.0.session_id.as_deref()
    }

    /// The credential used, by public id.
    pub fn credential(&self) -> &CredentialId {
        &self.0.credential
    }

    /// The token's issuer, for JWT principals.
    pub fn issuer(&self) -> Option<&str> {
        self.0.issuer.as_deref()
    }

    /// When the credential was issued (Unix seconds), where known.
    pub fn issued_at(&self) -> Option<i64> {
        self.0.issued_at
    }

    /// When the credential expires (Unix seconds), where known.
    pub fn expires_at(&self) -> Option<i64> {
        self.0.expires_at
    }

    /// How long ago the session's factors were verified (Clerk `fva`), where the issuer says.
    pub fn factor_age(&self) -> Option<FactorAge> {
        self.0.factor_age
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.0;
        f.debug_struct("Principal")
            .field("kind", &i.kind)
            .field("subject", &i.subject)
            .field("name", &i.name)
            .field("actor", &i.actor)
            .field("org", &i.org)
            .field("scopes", &i.scopes)
            .field("session_id", &i.session_id)
            .field("credential", &i.credential)
            .field("issuer", &i.issuer)
            .field("issued_at", &i.issued_at)
            .field("expires_at", &i.expires_at)
            .field("factor_age", &i.factor_age)
            .finish()
    }
}

/// Builder of a [`Principal`]; see [`Principal::builder`].
#[derive(Debug)]
#[must_use]
pub struct PrincipalBuilder(Inner);

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner")
            .field("kind", &self.kind)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl PrincipalBuilder {
    /// A display name.
    pub fn name(mut self, name: impl Into<Box<str>>) -> Self {
        self.0.name = Some(name.into());
        self
    }

    /// Who acts on the principal's behalf.
    pub fn actor(mut self, actor: Actor) -> Self {
        self.0.actor = Some(actor);
        self
    }

    /// The active organization.
    pub fn org(mut self, org: OrgMembership) -> Self {
        self.0.org = Some(org);
        self
    }

    /// The normalized scopes.
    pub fn scopes(mut self, scopes: ScopeSet) -> Self {
        self.0.scopes = scopes;
        self
    }

    /// The session id.
    pub fn session_id(mut self, sid: impl Into<Box<str>>) -> Self {
        self.0.session_id = Some(sid.into());
        self
    }

    /// The credential, by public id.
    pub fn credential(mut self, credential: CredentialId) -> Self {
        self.0.credential = credential;
        self
    }

    /// The issuer.
    pub fn issuer(mut self, issuer: impl Into<Box<str>>) -> Self {
        self.0.issuer = Some(issuer.into());
        self
    }

    /// When the credential was issued, in Unix seconds.
    pub fn issued_at(mut self, at: i64) -> Self {
        self.0.issued_at = Some(at);
        self
    }

    /// When the credential expires, in Unix seconds.
    pub fn expires_at(mut self, at: i64) -> Self {
        self.0.expires_at = Some(at);
        self
    }

    /// The factor verification age.
    pub fn factor_age(mut self, age: FactorAge) -> Self {
        self.0.factor_age = Some(age);
        self
    }

    /// Finish the principal.
    pub fn build(self) -> Principal {
        Principal(Arc::new(self.0))
    }
}
