//! The in-memory revocation list, checked on every request.

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;
use portcullis_core::{AuthError, Principal, PrincipalKind, clock};

/// What a revocation applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// One session (`sid`): its tokens are refused.
    Session(String),
    /// One user (`sub`): every token of theirs is refused (deleted, banned, locked).
    User(String),
    /// One user in one organization: tokens for that org are refused (membership removed, or
    /// issued before a role change).
    Membership {
        /// The user.
        user: String,
        /// The organization.
        org: String,
    },
}

impl Target {
    /// `session`, `user` or `membership`, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Session(_) => "session",
            Self::User(_) => "user",
            Self::Membership { .. } => "membership",
        }
    }

    /// The subject column: the sid or the user id.
    pub fn subject(&self) -> &str {
        match self {
            Self::Session(s) | Self::User(s) => s,
            Self::Membership { user, .. } => user,
        }
    }

    /// The org column (empty when none).
    pub fn org(&self) -> &str {
        match self {
            Self::Membership { org, .. } => org,
            _ => "",
        }
    }

    /// Rebuild from the stored columns.
    pub fn from_columns(kind: &str, subject: String, org: String) -> Option<Self> {
        match kind {
            "session" => Some(Self::Session(subject)),
            "user" => Some(Self::User(subject)),
            "membership" => Some(Self::Membership { user: subject, org }),
            _ => None,
        }
    }
}

/// One revocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// What it applies to.
    pub target: Target,
    /// Tokens issued (`iat`) before this Unix second are refused; `None` refuses them all.
    pub not_before: Option<i64>,
    /// When the entry can be forgotten: after the last token it could refuse has expired.
    pub expires_at: i64,
    /// Why (`session.ended`, `user.banned`, `role_changed`, `operator`...).
    pub reason: String,
}

impl Revocation {
    fn refuses(&self, issued_at: Option<i64>, now: i64) -> bool {
        self.expires_at > now
            && match self.not_before {
                None => true,
                // A token without `iat` cannot show it came after the change.
                Some(cutoff) => issued_at.is_none_or(|iat| iat < cutoff),
            }
    }
}

#[derive(Debug, Default)]
struct Snapshot {
    sessions: HashMap<Box<str>, Revocation>,
    users: HashMap<Box<str>, Revocation>,
    /// user → org → revocation: looked up with borrowed strings, no allocation.
    memberships: HashMap<Box<str>, HashMap<Box<str>, Revocation>>,
    len: usize,
}

impl Snapshot {
    fn from_entries(entries: impl IntoIterator<Item = Revocation>) -> Self {
        let mut s = Self::default();
        for r in entries {
            s.len += 1;
            match &r.target {
                Target::Session(sid) => {
                    s.sessions.insert(sid.as_str().into(), r);
                }
                Target::User(user) => {
                    s.users.insert(user.as_str().into(), r);
                }
                Target::Membership { user, org } => {
                    s.memberships
                        .entry(user.as_str().into())
                        .or_default()
                        .insert(org.as_str().into(), r);
                }
            }
        }
        s
    }

    fn entries(&self) -> impl Iterator<Item = &Revocation> {
        self.sessions
            .values()
            .chain(self.users.values())
            .chain(self.memberships.values().flat_map(|m| m.values()))
    }
}

/// The revocations in force, shared by every request of a process.
///
/// Reads take no lock: the list is an immutable snapshot swapped whole when it changes (it
/// changes rarely and stays small, since entries expire with the tokens they refuse). With no
/// revocation in force a check is one atomic load.
#[derive(Clone, Debug, Default)]
pub struct RevocationList(Arc<ArcSwap<Snapshot>>);

impl RevocationList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuse `principal` when a revocation covers it: 401 `invalid_token`, so that a client
    /// fetches a fresh token (which carries the new role, or cannot be had at all).
    pub fn check(&self, principal: &Principal) -> Result<(), AuthError> {
        let snapshot = self.0.load();
        if snapshot.len == 0 || principal.kind() != PrincipalKind::User {
            return Ok(());
        }
        let now = clock::unix_seconds();
        let iat = principal.issued_at();
        if let Some(sid) = principal.session_id()
            && snapshot
                .sessions
                .get(sid)
                .is_some_and(|r| r.refuses(iat, now))
        {
            return Err(AuthError::invalid_token("the session has ended"));
        }
        let user = principal.subject();
        if snapshot
            .users
            .get(user)
            .is_some_and(|r| r.refuses(iat, now))
        {
            return Err(AuthError::invalid_token("the user is deactivated"));
        }
        if let Some(org) = principal.org_id()
            && snapshot
                .memberships
                .get(user)
                .and_then(|orgs| orgs.get(org.as_str()))
                .is_some_and(|r| r.refuses(iat, now))
        {
            return Err(AuthError::invalid_token(
                "the organization membership changed; fetch a new token",
            ));
        }
        Ok(())
    }

    /// Replace everything (a full reload from the store).
    pub fn replace(&self, entries: impl IntoIterator<Item = Revocation>) {
        let now = clock::unix_seconds();
        self.0.store(Arc::new(Snapshot::from_entries(
            entries.into_iter().filter(|r| r.expires_at > now),
        )));
    }

    /// Add or replace one revocation.
    pub fn insert(&self, revocation: Revocation) {
        self.0.rcu(|current| {
            let now = clock::unix_seconds();
            let entries = current
                .entries()
                .filter(|r| r.target != revocation.target && r.expires_at > now)
                .cloned()
                .chain(std::iter::once(revocation.clone()));
            Arc::new(Snapshot::from_entries(entries))
        });
    }

    /// Remove the revocation of `target`, if any.
    pub fn remove(&self, target: &Target) {
        self.0.rcu(|current| {
            Arc::new(Snapshot::from_entries(
                current.entries().filter(|r| &r.target != target).cloned(),
            ))
        });
    }

    /// The revocation of `target`, if one is held.
    pub fn get(&self, target: &Target) -> Option<Revocation> {
        self.0
            .load()
            .entries()
            .find(|r| &r.target == target)
            .cloned()
    }

    /// How many revocations are held.
    pub fn len(&self) -> usize {
        self.0.load().len
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use portcullis_core::{OrgId, OrgMembership};

    use super::*;

    fn alice(sid: &str, iat: i64) -> Principal {
        Principal::builder(PrincipalKind::User, "user_alice")
            .session_id(sid)
            .org(OrgMembership::new(OrgId::new("org_a").unwrap()))
            .issued_at(iat)
            .build()
    }

    fn revocation(target: Target, not_before: Option<i64>) -> Revocation {
        Revocation {
            target,
            not_before,
            expires_at: clock::unix_seconds() + 60,
            reason: "test".into(),
        }
    }

    #[test]
    fn each_kind_refuses_what_it_covers() {
        let now = clock::unix_seconds();
        let list = RevocationList::new();
        assert!(list.check(&alice("sess_1", now)).is_ok());

        list.insert(revocation(Target::Session("sess_1".into()), None));
        assert!(list.check(&alice("sess_1", now)).is_err());
        assert!(list.check(&alice("sess_2", now)).is_ok());

        list.insert(revocation(
            Target::Membership {
                user: "user_alice".into(),
                org: "org_a".into(),
            },
            Some(now),
        ));
        assert!(
            list.check(&alice("sess_2", now - 1)).is_err(),
            "issued before the change"
        );
        assert!(list.check(&alice("sess_2", now)).is_ok(), "issued after it");

        list.insert(revocation(Target::User("user_alice".into()), None));
        assert!(list.check(&alice("sess_2", now + 5)).is_err());
        list.remove(&Target::User("user_alice".into()));
        assert!(list.check(&alice("sess_2", now + 5)).is_ok());
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn expired_entries_refuse_nothing_and_service_accounts_are_not_covered() {
        let now = clock::unix_seconds();
        let list = RevocationList::new();
        list.replace([Revocation {
            target: Target::User("user_alice".into()),
            not_before: None,
            expires_at: now - 1,
            reason: "old".into(),
        }]);
        assert!(list.is_empty());
        list.insert(revocation(Target::User("key_1".into()), None));
        let key = Principal::builder(PrincipalKind::ServiceAccount, "key_1").build();
        assert!(
            list.check(&key).is_ok(),
            "API keys are revoked by their own store"
        );
    }
}
