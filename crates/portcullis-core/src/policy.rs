//! How issuer permissions and roles become backend scopes: the canonical scope list, the role
//! map and strict-scope mode.

use std::{collections::HashMap, fmt, sync::Arc};

use crate::{ConfigError, ScopeSet, org::strip_org_prefix, scope::is_valid_scope};

/// The environment variable that switches strict-scope mode.
pub const STRICT_SCOPES_ENV: &str = "STRICT_SCOPES";

/// Turns the permissions and role a credential carries into the backend scopes of a principal.
///
/// - A permission `org:<feature>:<action>` becomes the scope `<feature>:<action>`; only scopes in
///   the canonical list survive, the rest are dropped and counted.
/// - **Strict mode** (the default): a missing or empty permission claim yields **zero** scopes.
/// - Non-strict mode: a missing or empty permission claim falls back to the role's scopes from the
///   role map. Building a non-strict policy logs a warning, so that it shows at start-up.
/// - A malformed permission claim never falls back: it grants nothing.
///
/// [`ScopePolicy::default`] is the Prism policy: the nine canonical scopes, and the roles `admin`
/// (every scope), `member` and `read_only`.
///
/// ```
/// use portcullis_core::{Permissions, ScopePolicy};
///
/// let strict = ScopePolicy::default();
/// let resolved = strict.resolve(Permissions::Listed(["org:comps:read", "org:sys_memberships:manage"]), Some("admin"));
/// assert_eq!(resolved.scopes.to_string(), "comps:read");
/// assert_eq!(resolved.dropped, 1);
///
/// // A missing claim is zero scopes in strict mode, whatever the role ...
/// let none = strict.resolve(Permissions::<[&str; 0]>::Missing, Some("admin"));
/// assert!(none.scopes.is_empty());
///
/// // ... and the role's scopes in non-strict mode.
/// let lenient = ScopePolicy::builder().strict(false).build().unwrap();
/// let fallback = lenient.resolve(Permissions::<[&str; 0]>::Missing, Some("read_only"));
/// assert_eq!(fallback.scopes.to_string(), "buildings:read comps:read reports:read tims:read");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ScopePolicy(Arc<PolicyInner>);

#[derive(PartialEq, Eq)]
struct PolicyInner {
    canonical: ScopeSet,
    roles: HashMap<Box<str>, ScopeSet>,
    strict: bool,
}

/// The permission claim of a credential, as the issuer sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Permissions<I> {
    /// The claim is absent.
    Missing,
    /// The claim lists these permissions (maybe none).
    Listed(I),
    /// The claim is present but malformed: it grants nothing and never falls back to the role.
    Malformed,
}

/// Where a principal's scopes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScopeSource {
    /// From the permission claim.
    Permissions,
    /// From the role map, because the claim was missing or empty and the policy is not strict.
    RoleFallback,
    /// From nothing: the principal has no scopes.
    None,
}

/// The scopes a [`ScopePolicy`] grants a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The scopes granted.
    pub scopes: ScopeSet,
    /// How many permissions were dropped as malformed or outside the canonical list.
    pub dropped: usize,
    /// Where the scopes came from.
    pub source: ScopeSource,
}

impl ScopePolicy {
    /// The canonical scopes of the Prism policy.
    pub const PRISM_SCOPES: [&'static str; 9] = [
        "api_keys:manage",
        "audit:read",
        "buildings:read",
        "comps:read",
        "comps:write",
        "reports:read",
        "reports:write",
        "tims:read",
        "tims:write",
    ];

    /// Start from the Prism defaults; see [`ScopePolicyBuilder`].
    pub fn builder() -> ScopePolicyBuilder {
        let canonical = ScopeSet::parse(Self::PRISM_SCOPES).expect("valid scopes");
        let pick = |names: &[&str]| {
            ScopeSet::parse(names)
                .expect("valid scopes")
                .intersection(&canonical)
        };
        let roles = [
            ("admin", canonical.clone()),
            (
                "member",
                pick(&[
                    "buildings:read",
                    "comps:read",
                    "comps:write",
                    "tims:read",
                    "tims:write",
                    "reports:read",
                    "reports:write",
                ]),
            ),
            (
                "read_only",
                pick(&["buildings:read", "comps:read", "tims:read", "reports:read"]),
            ),
        ];
        ScopePolicyBuilder {
            canonical,
            roles: roles.into_iter().map(|(r, s)| (r.into(), s)).collect(),
            strict: true,
        }
    }

    /// Whether strict-scope mode is on.
    pub fn is_strict(&self) -> bool {
        self.0.strict
    }

    /// The canonical scope list.
    pub fn canonical(&self) -> &ScopeSet {
        &self.0.canonical
    }

    /// The scopes of `role` (with or without the `org:` prefix) in the role map.
    pub fn role_scopes(&self, role: &str) -> Option<&ScopeSet> {
        self.0.roles.get(strip_org_prefix(role))
    }

    /// The canonical scope named by an issuer permission (`org:comps:read` or `comps:read`).
    pub fn scope_for_permission(&self, permission: &str) -> Option<&crate::Scope> {
        let name = strip_org_prefix(permission.trim());
        if is_valid_scope(name) {
            self.0.canonical.get(name)
        } else {
            None
        }
    }

    /// The scopes granted to a credential with these `permissions` and this `role`.
    pub fn resolve<I>(&self, permissions: Permissions<I>, role: Option<&str>) -> Resolved
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut dropped = 0;
        let listed: Vec<crate::Scope> = match permissions {
            Permissions::Malformed => {
                return Resolved {
                    scopes: ScopeSet::empty(),
                    dropped: 0,
                    source: ScopeSource::None,
                };
            }
            Permissions::Missing => Vec::new(),
            Permissions::Listed(perms) => perms
                .into_iter()
                .filter_map(|p| {
                    let scope = self.scope_for_permission(p.as_ref()).cloned();
                    dropped += usize::from(scope.is_none());
                    scope
                })
                .collect(),
        };
        if !listed.is_empty() {
            return Resolved {
                scopes: listed.into_iter().collect(),
                dropped,
                source: ScopeSource::Permissions,
            };
        }
        // The claim is missing or grants nothing canonical.
        let fallback = (!self.0.strict && dropped == 0)
            .then(|| role.and_then(|r| self.role_scopes(r)))
            .flatten();
        if let Some(scopes) = fallback {
            return Resolved {
                scopes: scopes.clone(),
                dropped,
                source: ScopeSource::RoleFallback,
            };
        }
        Resolved {
            scopes: ScopeSet::empty(),
            dropped,
            source: ScopeSource::None,
        }
    }
}

impl Default for ScopePolicy {
    fn default() -> Self {
        Self::builder()
            .build()
            .expect("the Prism defaults are valid")
    }
}

impl fmt::Debug for ScopePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut roles: Vec<_> = self.0.roles.iter().collect();
        roles.sort_by(|a, b| a.0.cmp(b.0));
        f.debug_struct("ScopePolicy")
            .field("strict", &self.0.strict)
            .field("canonical", &self.0.canonical)
            .field("roles", &roles)
            .finish()
    }
}

/// Builder of a [`ScopePolicy`], starting from the Prism defaults in strict mode.
///
/// ```
/// use portcullis_core::{ScopePolicy, ScopeSet};
///
/// let policy = ScopePolicy::builder()
///     .canonical(ScopeSet::parse(["docs:read", "docs:write"]).unwrap())
///     .role("viewer", ScopeSet::parse(["docs:read"]).unwrap())
///     .build()
///     .unwrap();
/// assert!(policy.is_strict());
/// assert!(policy.role_scopes("org:viewer").unwrap().contains("docs:read"));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ScopePolicyBuilder {
    canonical: ScopeSet,
    roles: HashMap<Box<str>, ScopeSet>,
    strict: bool,
}

impl ScopePolicyBuilder {
    /// Replace the canonical scope list. Roles of the Prism defaults are then cleared.
    pub fn canonical(mut self, canonical: ScopeSet) -> Self {
        self.canonical = canonical;
        self.roles.clear();
        self
    }

    /// Map `role` (with or without `org:`) to `scopes`, replacing any earlier mapping.
    pub fn role(mut self, role: &str, scopes: ScopeSet) -> Self {
        self.roles.insert(strip_org_prefix(role).into(), scopes);
        self
    }

    /// Remove every role mapping.
    pub fn clear_roles(mut self) -> Self {
        self.roles.clear();
        self
    }

    /// Strict-scope mode: `true` (the default) means a missing or empty permission claim is zero
    /// scopes; `false` falls back to the role map.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Read strict-scope mode from the `STRICT_SCOPES` environment variable, if it is set.
    pub fn strict_from_env(self) -> Result<Self, ConfigError> {
        match std::env::var(STRICT_SCOPES_ENV) {
            Ok(v) => Ok(self.strict(parse_bool(STRICT_SCOPES_ENV, &v)?)),
            Err(std::env::VarError::NotPresent) => Ok(self),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::new(
                STRICT_SCOPES_ENV,
                "is not valid UTF-8; expected true or false",
            )),
        }
    }

    /// Check and build the policy: every role's scopes must be canonical.
    ///
    /// A non-strict policy logs a warning here, which is at start-up for any sensible program.
    pub fn build(self) -> Result<ScopePolicy, ConfigError> {
        for (role, scopes) in &self.roles {
            if let Some(bad) = scopes.iter().find(|s| !self.canonical.contains(s)) {
                return Err(ConfigError::new(
                    format!("roles.{role}"),
                    format!("scope `{bad}` is not in the canonical scope list"),
                ));
            }
        }
        if !self.strict {
            tracing::warn!(
                target: "portcullis::policy",
                "STRICT_SCOPES=false: a credential without permissions falls back to its role's scopes; \
                 run with STRICT_SCOPES=true in production"
            );
        }
        Ok(ScopePolicy(Arc::new(PolicyInner {
            canonical: self.canonical,
            roles: self.roles,
            strict: self.strict,
        })))
    }
}

/// Parse a boolean setting: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, any case.
pub fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(
            key,
            format!(
                "`{}` is not a boolean; expected true or false",
                value.escape_debug()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prism_roles() {
        let p = ScopePolicy::default();
        assert!(p.is_strict());
        assert_eq!(p.role_scopes("org:admin").unwrap().len(), 9);
        assert!(p.role_scopes("admin").unwrap().contains("api_keys:manage"));
        assert!(!p.role_scopes("member").unwrap().contains("api_keys:manage"));
        assert_eq!(p.role_scopes("read_only").unwrap().len(), 4);
        assert!(p.role_scopes("owner").is_none());
    }

    #[test]
    fn strict_never_falls_back() {
        let p = ScopePolicy::default();
        for perms in [
            Permissions::<Vec<&str>>::Missing,
            Permissions::Listed(vec![]),
        ] {
            let r = p.resolve(perms, Some("org:admin"));
            assert!(r.scopes.is_empty());
            assert_eq!(r.source, ScopeSource::None);
        }
    }

    #[test]
    fn lenient_falls_back_only_when_missing_or_empty() {
        let p = ScopePolicy::builder().strict(false).build().unwrap();
        let r = p.resolve(Permissions::<Vec<&str>>::Missing, Some("org:member"));
        assert_eq!(r.source, ScopeSource::RoleFallback);
        assert_eq!(r.scopes.len(), 7);
        let r = p.resolve(Permissions::<Vec<&str>>::Malformed, Some("admin"));
        assert!(r.scopes.is_empty());
        // A claim that names only unknown permissions is not "empty": no fallback.
        let r = p.resolve(Permissions::Listed(["org:unknown:thing"]), Some("admin"));
        assert!(r.scopes.is_empty());
        assert_eq!(r.dropped, 1);
        let r = p.resolve(Permissions::Listed(["org:comps:read"]), Some("admin"));
        assert_eq!(r.scopes.to_string(), "comps:read");
        let r = p.resolve(Permissions::<Vec<&str>>::Missing, Some("stranger"));
        assert!(r.scopes.is_empty());
    }

    #[test]
    fn roles_must_be_canonical() {
        let err = ScopePolicy::builder()
            .role("x", ScopeSet::parse(["nope:read"]).unwrap())
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("roles.x"), "{err}");
    }

    #[test]
    fn booleans() {
        assert!(parse_bool("K", "TRUE").unwrap());
        assert!(!parse_bool("K", " off ").unwrap());
        let e = parse_bool("STRICT_SCOPES", "maybe").unwrap_err();
        assert_eq!(e.key(), "STRICT_SCOPES");
    }
}
