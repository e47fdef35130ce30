//! Organization identifiers and memberships.

use std::{fmt, ops::Deref, sync::Arc};

/// The longest organization id accepted, in bytes.
pub const MAX_ORG_ID_LEN: usize = 128;

/// The id of an organization (a Clerk `org_…` id, or any tenant id of the issuer).
///
/// An id is 1 to [`MAX_ORG_ID_LEN`] bytes of ASCII letters, digits, `_`, `-`, `.` and `:`, so
/// that it is safe in a path, a header and a log line. Cloning is a reference-count increment.
///
/// As an axum extractor it gives the organization fixed by `OrgContextLayer` (see
/// `portcullis-authz`); without that layer the extractor answers 500, a wiring bug.
///
/// ```
/// use portcullis_core::OrgId;
///
/// let org = OrgId::new("org_2jyEOHrzo8RWGERumZ61dghllsP").unwrap();
/// assert_eq!(org, "org_2jyEOHrzo8RWGERumZ61dghllsP");
/// assert!(OrgId::new("org 1").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgId(Arc<str>);

impl OrgId {
    /// Check and wrap an organization id.
    pub fn new(id: &str) -> Result<Self, InvalidOrgId> {
        if is_valid_org_id(id) {
            Ok(Self(Arc::from(id)))
        } else {
            Err(InvalidOrgId(()))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `id` has the shape of an [`OrgId`].
pub fn is_valid_org_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ORG_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

impl Deref for OrgId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for OrgId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for OrgId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Debug for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for OrgId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for OrgId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// The error returned when a string does not have the shape of an [`OrgId`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidOrgId(());

impl fmt::Display for InvalidOrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an organization id is 1 to {MAX_ORG_ID_LEN} ASCII letters, digits, `_`, `-`, `.` or `:`"
        )
    }
}

impl std::error::Error for InvalidOrgId {}

/// A principal's membership in its active organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgMembership {
    /// The organization.
    pub id: OrgId,
    /// Its slug, where the issuer sends one.
    pub slug: Option<Box<str>>,
    /// The role in the organization without Clerk's `org:` prefix (`admin`, `member`, ...).
    pub role: Option<Box<str>>,
}

impl OrgMembership {
    /// A membership in `id` with no slug and no role.
    pub fn new(id: OrgId) -> Self {
        Self {
            id,
            slug: None,
            role: None,
        }
    }

    /// Set the role; any leading `org:` prefixes are removed (`org:admin` → `admin`).
    #[must_use]
    pub fn role(mut self, role: &str) -> Self {
        self.role = Some(strip_org_prefix(role).into());
        self
    }

    /// Set the slug.
    #[must_use]
    pub fn slug(mut self, slug: &str) -> Self {
        self.slug = Some(slug.into());
        self
    }
}

/// Remove every leading `org:` from `s`, as Clerk's SDKs do before comparing roles and permissions.
pub fn strip_org_prefix(mut s: &str) -> &str {
    while let Some(rest) = s.strip_prefix("org:") {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_ids() {
        assert!(OrgId::new("org_abc-1.x:y").is_ok());
        for bad in ["", "org/1", "org 1", "ørg", "a\nb", &"a".repeat(129)] {
            assert!(OrgId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn role_prefix() {
        assert_eq!(strip_org_prefix("org:admin"), "admin");
        assert_eq!(strip_org_prefix("org:org:admin"), "admin");
        assert_eq!(strip_org_prefix("admin"), "admin");
        let m = OrgMembership::new(OrgId::new("org_1").unwrap()).role("org:member");
        assert_eq!(m.role.as_deref(), Some("member"));
    }
}
