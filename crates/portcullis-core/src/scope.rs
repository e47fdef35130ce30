//! Backend scopes (`comps:read`, `api_keys:manage`, ...) and sets of them.

use std::{borrow::Borrow, fmt, ops::Deref, str::FromStr, sync::Arc};

/// The longest scope name accepted, in bytes.
pub const MAX_SCOPE_LEN: usize = 64;

/// A backend scope such as `comps:read`: a feature and an action separated by one colon.
///
/// Both parts are 1 or more characters of `a-z`, `0-9`, `_` and `-`, and the whole is at most
/// [`MAX_SCOPE_LEN`] bytes. Cloning is a reference-count increment.
///
/// ```
/// use portcullis_core::Scope;
///
/// let scope: Scope = "comps:read".parse().unwrap();
/// assert_eq!(scope.feature(), "comps");
/// assert_eq!(scope.action(), "read");
/// assert!("comps".parse::<Scope>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(Arc<str>);

impl Scope {
    /// Parse a scope, checking its shape.
    pub fn new(name: &str) -> Result<Self, InvalidScope> {
        if is_valid_scope(name) {
            Ok(Self(Arc::from(name)))
        } else {
            Err(InvalidScope(()))
        }
    }

    /// The scope as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the colon.
    pub fn feature(&self) -> &str {
        self.0.split_once(':').map_or("", |(f, _)| f)
    }

    /// The part after the colon.
    pub fn action(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, a)| a)
    }
}

/// Whether `name` has the shape of a [`Scope`].
pub fn is_valid_scope(name: &str) -> bool {
    fn part(s: &str) -> bool {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    }
    name.len() <= MAX_SCOPE_LEN
        && name
            .split_once(':')
            .is_some_and(|(feature, action)| part(feature) && part(action))
}

impl FromStr for Scope {
    type Err = InvalidScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Deref for Scope {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Scope {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Scope {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// The error returned when a string does not have the shape of a [`Scope`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidScope(());

impl fmt::Display for InvalidScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scope is `feature:action`, each part of a-z, 0-9, `_` and `-`")
    }
}

impl std::error::Error for InvalidScope {}

/// An immutable, sorted set of scopes; a membership check is a binary search.
///
/// Cloning is a reference-count increment, so a set is shared by every request that uses it.
///
/// ```
/// use portcullis_core::ScopeSet;
///
/// let set = ScopeSet::parse(["comps:read", "reports:read", "comps:read"]).unwrap();
/// assert_eq!(set.len(), 2);
/// assert!(set.contains("comps:read"));
/// assert!(!set.contains("comps:write"));
/// assert_eq!(set.to_string(), "comps:read reports:read");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct ScopeSet(Arc<[Scope]>);

impl ScopeSet {
    /// The empty set.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parse every name; fails on the first that is not a [`Scope`].
    pub fn parse<I>(names: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        names
            .into_iter()
            .map(|n| Scope::new(n.as_ref()))
            .collect::<Result<Self, _>>()
    }

    /// Whether the set holds `scope`.
    #[inline]
    pub fn contains(&self, scope: &str) -> bool {
        self.0.binary_search_by(|s| s.as_str().cmp(scope)).is_ok()
    }

    /// The scope of this set named `scope`, sharing its allocation.
    pub fn get(&self, scope: &str) -> Option<&Scope> {
        self.0
            .binary_search_by(|s| s.as_str().cmp(scope))
            .ok()
            .map(|i| &self.0[i])
    }

    /// Whether the set holds every scope of `required`.
    #[inline]
    pub fn contains_all<'a>(&self, required: impl IntoIterator<Item = &'a Scope>) -> bool {
        required.into_iter().all(|s| self.contains(s))
    }

    /// Whether the set holds at least one scope of `wanted`.
    #[inline]
    pub fn contains_any<'a>(&self, wanted: impl IntoIterator<Item = &'a Scope>) -> bool {
        wanted.into_iter().any(|s| self.contains(s))
    }

    /// Whether every scope of this set is also in `other`.
    pub fn is_subset(&self, other: &Self) -> bool {
        other.contains_all(self.iter())
    }

    /// The scopes in both sets.
    pub fn intersection(&self, other: &Self) -> Self {
        self.iter().filter(|s| other.contains(s)).cloned().collect()
    }

    /// The scopes, sorted.
    pub fn iter(&self) -> std::slice::Iter<'_, Scope> {
        self.0.iter()
    }

    /// How many scopes the set holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<T: IntoIterator<Item = Scope>>(iter: T) -> Self {
        let mut v: Vec<Scope> = iter.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Self(v.into())
    }
}

impl<'a> IntoIterator for &'a ScopeSet {
    type Item = &'a Scope;
    type IntoIter = std::slice::Iter<'a, Scope>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

/// Space separated and sorted, the form of an OAuth `scope` parameter.
impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}

impl serde::Serialize for ScopeSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

impl<'de> serde::Deserialize<'de> for ScopeSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<Scope>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_shape() {
        for ok in ["comps:read", "api_keys:manage", "a:b", "x-1:y_2"] {
            assert!(Scope::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "comps",
            ":read",
            "comps:",
            "Comps:read",
            "a:b:c",
            "comps read",
            "comps:réad",
            &"a".repeat(70),
        ] {
            assert!(Scope::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_operations() {
        let a = ScopeSet::parse(["comps:read", "comps:write"]).unwrap();
        let b = ScopeSet::parse(["comps:read"]).unwrap();
        assert!(b.is_subset(&a));
        assert!(!a.is_subset(&b));
        assert_eq!(a.intersection(&b), b);
        assert!(a.contains_any(b.iter()));
        assert!(ScopeSet::empty().is_subset(&b));
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"["comps:read","comps:write"]"#
        );
        let back: ScopeSet = serde_json::from_str(r#"["comps:write","comps:read"]"#).unwrap();
        assert_eq!(back, a);
        assert!(serde_json::from_str::<ScopeSet>(r#"["nope"]"#).is_err());
    }
}
