use std::{collections::HashMap, sync::RwLock};

use portcullis_core::OrgId;

use super::{ApiKeyRecord, BoxFuture, KeyStore, StoreError};
use crate::Digest;

/// Keys in memory, for examples and tests; lost on restart.
#[derive(Debug, Default)]
pub struct MemoryStore {
    keys: RwLock<HashMap<Digest, ApiKeyRecord>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl KeyStore for MemoryStore {
    fn find<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<ApiKeyRecord>, StoreError>> {
        ready(Ok(self
            .keys
            .read()
            .expect("not poisoned")
            .get(digest)
            .cloned()))
    }

    fn insert<'a>(
        &'a self,
        record: &'a ApiKeyRecord,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut keys = self.keys.write().expect("not poisoned");
        if keys.contains_key(digest) || keys.values().any(|r| r.id == record.id) {
            return ready(Err(StoreError::new("duplicate key")));
        }
        keys.insert(*digest, record.clone());
        ready(Ok(()))
    }

    fn list<'a>(&'a self, org: &'a OrgId) -> BoxFuture<'a, Result<Vec<ApiKeyRecord>, StoreError>> {
        let mut v: Vec<_> = self
            .keys
            .read()
            .expect("not poisoned")
            .values()
            .filter(|r| &r.org == org)
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        ready(Ok(v))
    }

    fn revoke<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a str,
        at: i64,
    ) -> BoxFuture<'a, Result<Option<Digest>, StoreError>> {
        let mut keys = self.keys.write().expect("not poisoned");
        let found = keys
            .iter_mut()
            .find(|(_, r)| &r.org == org && &*r.id == id)
            .map(|(d, r)| {
                r.revoked_at.get_or_insert(at);
                *d
            });
        ready(Ok(found))
    }

    fn touch<'a>(&'a self, used: &'a [(Box<str>, i64)]) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut keys = self.keys.write().expect("not poisoned");
        for record in keys.values_mut() {
            if let Some((_, at)) = used.iter().find(|(id, _)| *id == record.id) {
                record.last_used_at = Some(record.last_used_at.map_or(*at, |prev| prev.max(*at)));
            }
        }
        ready(Ok(()))
    }

    fn rehash<'a>(
        &'a self,
        id: &'a str,
        digest: &'a Digest,
        version: u16,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut keys = self.keys.write().expect("not poisoned");
        if let Some(old) = keys.iter().find(|(_, r)| &*r.id == id).map(|(d, _)| *d) {
            let mut record = keys.remove(&old).expect("just found");
            record.secret_version = version;
            keys.insert(*digest, record);
        }
        ready(Ok(()))
    }
}
