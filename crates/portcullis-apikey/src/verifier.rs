//! Verifying keys: format and checksum first, then one HMAC, then a cache in front of the store.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use portcullis_core::{
    AuthError, CredentialId, OrgId, OrgMembership, Principal, PrincipalKind, ScopeSet,
    Verification, VerifyCredential, clock,
};

use crate::{
    Digest, KeyFormat, KeyHasher, PlaintextKey,
    store::{ApiKeyRecord, KeyStore, StoreError},
};

/// The one public answer for an unknown, expired, revoked or malformed key.
const INVALID: AuthError = AuthError::invalid_token("the API key is invalid");

/// Verifies API keys and manages their lifecycle.
///
/// - A credential that is not of the [`KeyFormat`] (shape, prefix, checksum) is refused before
///   any hashing or I/O.
/// - A well-formed key is hashed once (HMAC-SHA256 with the server secret) and looked up by
///   digest in a cache ([`quick_cache`](https://docs.rs/quick_cache): sharded, read-locked only
///   briefly, no background work on the request path); concurrent loads of one key are merged
///   into one store query, and a failed load answers everyone who waited for it.
/// - Entries are fresh for 15 s, then reloaded. While the store is down, a key seen within the
///   stale window (5 min) keeps working — never one that was revoked or evicted — and an unknown
///   key gets 503. Unknown keys that passed the checksum are remembered for 30 s. The cache holds
///   at most [`capacity`](ApiKeyVerifierBuilder::capacity) keys.
/// - Expiry is checked at request time. [`ApiKeyVerifier::revoke`] takes effect on the very next
///   request in this process: the key is evicted, and a load that started before the eviction
///   cannot put it back.
///
/// Cloning is cheap; clones share the cache.
#[derive(Clone)]
pub struct ApiKeyVerifier(Arc<Inner>);

struct Inner {
    format: KeyFormat,
    hasher: KeyHasher,
    store: Arc<dyn KeyStore>,
    cache: quick_cache::sync::Cache<Digest, Arc<Entry>>,
    /// Bumped on every eviction.
    generation: AtomicU64,
    /// The generation at which a digest was last evicted.
    evicted: moka::sync::Cache<Digest, u64>,
    /// The generation at which everything was last evicted.
    all_evicted: AtomicU64,
    /// Last use by key id; touched on the cold path (loads) and by the flush only.
    uses: std::sync::Mutex<std::collections::HashMap<Box<str>, Arc<UseMark>>>,
    fresh: Duration,
    stale: Duration,
    negative: Duration,
    max_lifetime_days: u32,
    org_max_lifetime_days: std::collections::HashMap<OrgId, u32>,
}

struct Entry {
    found: Option<(ApiKeyRecord, Principal, Arc<UseMark>)>,
    /// From the coarse clock, as its age is read on every request.
    loaded_at: Instant,
    generation: u64,
    /// The store failed: not a load but the answer to the requests that waited for one, with
    /// the entry it was to replace.
    failed: Option<Option<Arc<Self>>>,
}

impl Entry {
    /// How long ago it was loaded, to a timer tick.
    fn age(&self) -> Duration {
        clock::instant().saturating_duration_since(self.loaded_at)
    }
}

/// When a key was last used (Unix seconds rounded down to the minute), and what was written.
/// Shared by every cache entry of the key, so that reloads keep it.
#[derive(Default)]
struct UseMark {
    used: AtomicI64,
    flushed: AtomicI64,
}

/// A new key: its record, and the plaintext to show its owner this once.
#[derive(Debug)]
pub struct CreatedKey {
    /// The stored record.
    pub record: ApiKeyRecord,
    /// The key itself; it is not stored and cannot be shown again.
    pub key: PlaintextKey,
}

/// The background flush of last use; it stops when dropped.
#[derive(Debug)]
pub struct LastUseFlush {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LastUseFlush {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A key made but not yet stored; see [`ApiKeyVerifier::prepare`].
#[derive(Debug)]
pub struct PreparedKey {
    /// The record to store.
    pub record: ApiKeyRecord,
    /// The plaintext, for the creator only.
    pub key: PlaintextKey,
    digest: Digest,
}

/// Why a key could not be created.
#[derive(Debug)]
#[non_exhaustive]
pub enum CreateError {
    /// `expires_in_days` is 0 or above the maximum.
    Lifetime {
        /// The most days allowed.
        max_days: u32,
    },
    /// The store failed.
    Store(StoreError),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lifetime { max_days } => {
                write!(f, "expires_in_days must be between 1 and {max_days}")
            }
            Self::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CreateError {}

impl ApiKeyVerifier {
    /// A verifier of keys of `format` hashed with `hasher`, stored in `store`.
    pub fn new(format: KeyFormat, hasher: KeyHasher, store: impl KeyStore) -> Self {
        Self::builder(format, hasher, store).build()
    }

    /// Configure the cache lifetimes; see [`ApiKeyVerifierBuilder`].
    pub fn builder(
        format: KeyFormat,
        hasher: KeyHasher,
        store: impl KeyStore,
    ) -> ApiKeyVerifierBuilder {
        ApiKeyVerifierBuilder {
            format,
            hasher,
            store: Arc::new(store),
            fresh: Duration::from_secs(15),
            stale: Duration::from_secs(300),
            negative: Duration::from_secs(30),
            capacity: 1_000_000,
            max_lifetime_days: 365,
            org_max_lifetime_days: std::collections::HashMap::new(),
        }
    }

    /// The key format.
    pub fn format(&self) -> &KeyFormat {
        &self.0.format
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.0.store
    }

    /// The longest lifetime a new key of `org` may have, in days: the org's own maximum, or
    /// the default.
    pub fn max_lifetime_days(&self, org: &OrgId) -> u32 {
        self.0
            .org_max_lifetime_days
            .get(org)
            .copied()
            .unwrap_or(self.0.max_lifetime_days)
    }

    /// Create a key for `org` with `scopes`, expiring in `expires_in_days` (1 to the maximum).
    ///
    /// Whether the creator may grant `scopes` is the caller's check (the management API allows
    /// at most the creator's own scopes).
    pub async fn create(
        &self,
        org: &OrgId,
        name: &str,
        scopes: ScopeSet,
        created_by: &str,
        expires_in_days: u32,
    ) -> Result<CreatedKey, CreateError> {
        let max_days = self.max_lifetime_days(org);
        if expires_in_days == 0 || expires_in_days > max_days {
            return Err(CreateError::Lifetime { max_days });
        }
        let prepared = self.prepare(org, name, scopes, created_by, expires_in_days);
        self.store_prepared(prepared).await
    }

    /// Make a key and its record without storing them (to record an audit event first).
    /// `expires_in_days` is capped at the maximum.
    pub fn prepare(
        &self,
        org: &OrgId,
        name: &str,
        scopes: ScopeSet,
        created_by: &str,
        expires_in_days: u32,
    ) -> PreparedKey {
        let days = expires_in_days.clamp(1, self.max_lifetime_days(org));
        let key = self.0.format.generate();
        let parsed = self
            .0
            .format
            .parse(key.expose())
            .expect("a generated key parses");
        let now = clock::unix_seconds();
        let record = ApiKeyRecord {
            id: new_key_id().into(),
            org: org.clone(),
            name: name.into(),
            scopes,
            created_by: created_by.into(),
            created_at: now,
            expires_at: now + i64::from(days) * 86_400,
            revoked_at: None,
            last_used_at: None,
            start: parsed.start().into(),
            last4: parsed.last4().into(),
            secret_version: self.0.hasher.current_version(),
        };
        let digest = self.0.hasher.digest(key.expose());
        PreparedKey {
            record,
            key,
            digest,
        }
    }

    /// Store a key made by [`ApiKeyVerifier::prepare`].
    pub async fn store_prepared(&self, prepared: PreparedKey) -> Result<CreatedKey, CreateError> {
        self.0
            .store
            .insert(&prepared.record, &prepared.digest)
            .await
            .map_err(CreateError::Store)?;
        Ok(CreatedKey {
            record: prepared.record,
            key: prepared.key,
        })
    }

    /// The keys of `org`, newest first.
    pub async fn list(&self, org: &OrgId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.0.store.list(org).await
    }

    /// Revoke key `id` of `org`: refused from the very next request in this process. Returns
    /// whether `org` had such a key.
    pub async fn revoke(&self, org: &OrgId, id: &str) -> Result<bool, StoreError> {
        match self.0.store.revoke(org, id, clock::unix_seconds()).await? {
            Some(digest) => {
                self.evict(&digest).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Write the last use of every key used since the previous flush, in one batch; the stored
    /// value only ever moves forward. Returns how many keys were written.
    ///
    /// Call it about once a minute ([`ApiKeyVerifier::spawn_last_use_flush`] does): requests
    /// never write to the store themselves.
    pub async fn flush_last_use(&self) -> Result<usize, StoreError> {
        let pending: Vec<(Box<str>, i64, Arc<UseMark>)> = {
            let mut uses = self.0.uses.lock().expect("not poisoned");
            // Marks no cache entry holds any more, and fully written, are done with.
            uses.retain(|_, m| {
                Arc::strong_count(m) > 1
                    || m.used.load(Ordering::Relaxed) > m.flushed.load(Ordering::Relaxed)
            });
            uses.iter()
                .filter_map(|(id, m)| {
                    let used = m.used.load(Ordering::Relaxed);
                    (used > m.flushed.load(Ordering::Relaxed))
                        .then(|| (id.clone(), used, m.clone()))
                })
                .collect()
        };
        if pending.is_empty() {
            return Ok(0);
        }
        let batch: Vec<(Box<str>, i64)> = pending
            .iter()
            .map(|(id, at, _)| (id.clone(), *at))
            .collect();
        self.0.store.touch(&batch).await?;
        for (_, at, mark) in &pending {
            mark.flushed.fetch_max(*at, Ordering::Relaxed);
        }
        Ok(pending.len())
    }

    /// Flush last use every `interval` in the background (on a tokio runtime) until the returned
    /// guard is dropped. Flush once more before shutdown with
    /// [`ApiKeyVerifier::flush_last_use`].
    pub fn spawn_last_use_flush(&self, interval: Duration) -> LastUseFlush {
        let this = self.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = this.flush_last_use().await {
                    tracing::warn!(target: "portcullis::api_keys", error = %e, "writing last use failed; retrying next time");
                }
            }
        });
        LastUseFlush { task }
    }

    /// Forget what is cached for `digest` (another replica revoked it); a load already under way
    /// will not put it back.
    pub async fn evict(&self, digest: &Digest) {
        let inner = &self.0;
        let generation = inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
        inner.evicted.insert(*digest, generation);
        inner.cache.remove(digest);
    }

    /// Forget everything cached (after losing the revocation feed, for example).
    pub fn evict_all(&self) {
        let inner = &self.0;
        let generation = inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
        inner.all_evicted.store(generation, Ordering::Release);
        inner.cache.clear();
    }
}

/// What a cached entry is good for.
enum Usable {
    /// The answer.
    Fresh,
    /// To reload, and the answer while the store is down.
    Stale,
    /// Nothing: load.
    No,
}

impl Inner {
    /// What the cached `entry` of `digest` is good for now.
    fn usable(&self, digest: &Digest, entry: &Entry) -> Usable {
        if entry.failed.is_some() || self.outdated(digest, entry) {
            return Usable::No;
        }
        let age = entry.age();
        match &entry.found {
            Some(_) if age < self.fresh => Usable::Fresh,
            Some(_) if age < self.stale => Usable::Stale,
            None if age < self.negative => Usable::Fresh,
            _ => Usable::No,
        }
    }

    /// Whether `entry` was loaded before its digest (or everything) was evicted.
    fn outdated(&self, digest: &Digest, entry: &Entry) -> bool {
        entry.generation < self.generation.load(Ordering::Acquire)
            && (entry.generation < self.all_evicted.load(Ordering::Acquire)
                || self
                    .evicted
                    .get(digest)
                    .is_some_and(|g| entry.generation < g))
    }

    fn decide(entry: &Entry) -> Result<Principal, AuthError> {
        let (record, principal, mark) = entry.found.as_ref().ok_or(INVALID)?;
        let now = clock::unix_seconds();
        if record.revoked_at.is_some() || now >= record.expires_at {
            return Err(INVALID);
        }
        // At most one store per key and minute; usually a single relaxed load.
        let minute = now - now.rem_euclid(60);
        if mark.used.load(Ordering::Relaxed) < minute {
            mark.used.fetch_max(minute, Ordering::Relaxed);
        }
        Ok(principal.clone())
    }

    fn use_mark(&self, id: &str) -> Arc<UseMark> {
        self.uses
            .lock()
            .expect("not poisoned")
            .entry(id.into())
            .or_default()
            .clone()
    }

    async fn fetch(&self, digest: &Digest, plaintext: &str) -> Result<Entry, StoreError> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut found = self.store.find(digest).await?;
        if found.is_none() {
            // Made with an earlier secret? Then re-hash it with the current one.
            for (version, old) in self.hasher.digests(plaintext).skip(1) {
                if let Some(mut record) = self.store.find(&old).await? {
                    let current = self.hasher.current_version();
                    if let Err(e) = self.store.rehash(&record.id, digest, current).await {
                        tracing::warn!(target: "portcullis::api_keys", key_id = &*record.id, from = version, error = %e, "re-hashing a key failed");
                    } else {
                        record.secret_version = current;
                    }
                    found = Some(record);
                    break;
                }
            }
        }
        Ok(Entry {
            found: found.map(|r| {
                let p = principal(&r);
                let mark = self.use_mark(&r.id);
                (r, p, mark)
            }),
            loaded_at: clock::instant(),
            generation,
            failed: None,
        })
    }

    /// Load `digest` into the cache, merging concurrent loads; fall back to `stale` (the entry
    /// found, too old to use without asking the store) when the store fails.
    async fn load(
        self: Arc<Self>,
        digest: Digest,
        plaintext: Box<str>,
        stale: Option<Arc<Entry>>,
    ) -> Result<Principal, AuthError> {
        if let Some(old) = &stale {
            // Make way for the reload (unless another request already did).
            self.cache.remove_if(&digest, |e| Arc::ptr_eq(e, old));
        }
        for _ in 0..3 {
            let guard = match self.cache.get_value_or_guard_async(&digest).await {
                Ok(entry) => match (&entry.failed, self.usable(&digest, &entry)) {
                    // The load this request waited for failed.
                    (Some(replaced), _) => {
                        return self.fall_back(&digest, stale.as_ref().or(replaced.as_ref()));
                    }
                    // Evicted or expired since: load again.
                    (None, Usable::No) => {
                        self.cache.remove_if(&digest, |e| Arc::ptr_eq(e, &entry));
                        continue;
                    }
                    // Loaded by another request meanwhile.
                    (None, Usable::Fresh | Usable::Stale) => return Self::decide(&entry),
                },
                Err(guard) => guard,
            };
            match self.fetch(&digest, &plaintext).await {
                // Evicted while loading: the waiters load again.
                Ok(entry) if self.outdated(&digest, &entry) => drop(guard),
                Ok(entry) => {
                    let entry = Arc::new(entry);
                    let _ = guard.insert(entry.clone());
                    return Self::decide(&entry);
                }
                Err(e) => {
                    tracing::warn!(target: "portcullis::api_keys", error = %e, "key store unavailable");
                    // Answer the requests that waited, then forget the failure: the next
                    // request asks the store again.
                    let failed = Arc::new(Entry {
                        found: None,
                        loaded_at: clock::instant(),
                        generation: 0,
                        failed: Some(stale.clone()),
                    });
                    let _ = guard.insert(failed.clone());
                    self.cache.remove_if(&digest, |e| Arc::ptr_eq(e, &failed));
                    return self.fall_back(&digest, stale.as_ref());
                }
            }
        }
        Err(AuthError::unavailable("key store"))
    }

    /// The answer while the store is down: a key seen within the stale window, unless evicted
    /// since; 503 for any other.
    fn fall_back(
        &self,
        digest: &Digest,
        stale: Option<&Arc<Entry>>,
    ) -> Result<Principal, AuthError> {
        match stale {
            Some(entry)
                if entry.found.is_some()
                    && entry.age() < self.stale
                    && !self.outdated(digest, entry) =>
            {
                Self::decide(entry)
            }
            _ => Err(AuthError::unavailable("key store")),
        }
    }
}

impl VerifyCredential for ApiKeyVerifier {
    fn verify(&self, credential: &str) -> Verification {
        let inner = &self.0;
        let Ok(key) = inner.format.parse(credential) else {
            return Verification::Ready(Err(INVALID));
        };
        let digest = inner.hasher.digest(key.expose());
        let stale = match inner.cache.get(&digest) {
            Some(entry) => match inner.usable(&digest, &entry) {
                Usable::Fresh => return Verification::Ready(Inner::decide(&entry)),
                Usable::Stale => Some(entry),
                Usable::No => None,
            },
            None => None,
        };
        Verification::Pending(Box::pin(inner.clone().load(
            digest,
            key.expose().into(),
            stale,
        )))
    }

    fn accepts(&self, credential: &str) -> bool {
        self.0.format.looks_like(credential)
    }
}

fn principal(record: &ApiKeyRecord) -> Principal {
    Principal::builder(PrincipalKind::ServiceAccount, &*record.id)
        .name(&*record.name)
        .org(OrgMembership::new(record.org.clone()))
        .scopes(record.scopes.clone())
        .credential(CredentialId::ApiKey {
            id: record.id.clone(),
        })
        .issued_at(record.created_at)
        .expires_at(record.expires_at)
        .build()
}

/// `key_` and 22 base62 characters from the CSPRNG: public, unguessable.
fn new_key_id() -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 22];
    aws_lc_rs::rand::fill(&mut bytes).expect("the OS CSPRNG works");
    let mut id = String::from("key_");
    // 248 of 256 byte values map evenly; the tiny bias is irrelevant for an identifier.
    id.extend(bytes.iter().map(|b| ALPHABET[usize::from(*b) % 62] as char));
    id
}

impl fmt::Debug for ApiKeyVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyVerifier")
            .field("format", &self.0.format)
            .field("hasher", &self.0.hasher)
            .field("fresh", &self.0.fresh)
            .field("stale", &self.0.stale)
            .field("negative", &self.0.negative)
            .finish_non_exhaustive()
    }
}

/// Builder of an [`ApiKeyVerifier`].
#[must_use]
pub struct ApiKeyVerifierBuilder {
    format: KeyFormat,
    hasher: KeyHasher,
    store: Arc<dyn KeyStore>,
    fresh: Duration,
    stale: Duration,
    negative: Duration,
    capacity: u64,
    max_lifetime_days: u32,
    org_max_lifetime_days: std::collections::HashMap<OrgId, u32>,
}

impl fmt::Debug for ApiKeyVerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyVerifierBuilder")
            .field("format", &self.format)
            .field("fresh", &self.fresh)
            .finish_non_exhaustive()
    }
}

impl ApiKeyVerifierBuilder {
    /// How long a cached key is used without asking the store (default 15 s).
    pub fn fresh_for(mut self, fresh: Duration) -> Self {
        self.fresh = fresh;
        self
    }

    /// How long a key seen before keeps working while the store is down (default 5 min).
    pub fn stale_for(mut self, stale: Duration) -> Self {
        self.stale = stale;
        self
    }

    /// How long an unknown (well-formed) key is remembered as unknown (default 30 s).
    pub fn negative_for(mut self, negative: Duration) -> Self {
        self.negative = negative;
        self
    }

    /// How many keys to cache (default 1 000 000).
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// The longest lifetime of a new key in days (default 365).
    pub fn max_lifetime_days(mut self, days: u32) -> Self {
        self.max_lifetime_days = days;
        self
    }

    /// A different maximum lifetime for the keys of `org` (an organization's own policy).
    pub fn org_max_lifetime_days(mut self, org: OrgId, days: u32) -> Self {
        self.org_max_lifetime_days.insert(org, days);
        self
    }

    /// Build the verifier.
    pub fn build(self) -> ApiKeyVerifier {
        let stale = self.stale.max(self.fresh);
        ApiKeyVerifier(Arc::new(Inner {
            cache: {
                // The table grows with use: a large capacity reserves nothing up front.
                let capacity = usize::try_from(self.capacity).unwrap_or(usize::MAX);
                quick_cache::sync::Cache::with(
                    capacity.min(4096),
                    self.capacity,
                    quick_cache::UnitWeighter,
                    quick_cache::DefaultHashBuilder::default(),
                    quick_cache::sync::DefaultLifecycle::default(),
                )
            },
            evicted: moka::sync::Cache::builder()
                .time_to_live(stale + self.fresh)
                .build(),
            generation: AtomicU64::new(0),
            all_evicted: AtomicU64::new(0),
            uses: std::sync::Mutex::default(),
            format: self.format,
            hasher: self.hasher,
            store: self.store,
            fresh: self.fresh,
            stale,
            negative: self.negative,
            max_lifetime_days: self.max_lifetime_days,
            org_max_lifetime_days: self.org_max_lifetime_days,
        }))
    }
}
