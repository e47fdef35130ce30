//! API keys end to end through the authentication layer, on every store: in memory, SQLite (a
//! temporary file) and PostgreSQL (127.0.0.1:5432, database `test`, one schema per test).

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body, routing::get};
use http::{Request, StatusCode};
use portcullis_apikey::{
    ApiKeyRecord, ApiKeyVerifier, Digest, KeyFormat, KeyHasher, KeyStore, MemoryStore, StoreError,
    store::BoxFuture,
};
use portcullis_authn::AuthenticateLayer;
use portcullis_authz::{OrgContextLayer, RequireScopesLayer};
use portcullis_core::{OrgId, Principal, PrincipalKind, ScopeSet, VerifyCredential};
use support::{Backend, store};
use tower::ServiceExt;

/// A store wrapper that counts lookups and can be made to fail.
struct Probe<S> {
    inner: S,
    finds: AtomicUsize,
    touches: AtomicUsize,
    down: AtomicBool,
    /// Answer a lookup (or fail it) only after this many milliseconds (the row is read first).
    stall_ms: AtomicUsize,
}

impl<S: KeyStore> Probe<S> {
    fn new(inner: S) -> Arc<Self> {
        Arc::new(Self {
            inner,
            finds: AtomicUsize::new(0),
            touches: AtomicUsize::new(0),
            stall_ms: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        })
    }
    fn finds(&self) -> usize {
        self.finds.load(Ordering::SeqCst)
    }
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::new("connection refused"))
        } else {
            Ok(())
        }
    }
}

impl<S: KeyStore> KeyStore for Probe<S> {
    fn find<'a>(
        &'a self,
        d: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<ApiKeyRecord>, StoreError>> {
        self.finds.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let found = match self.check() {
                Ok(()) => self.inner.find(d).await,
                Err(e) => Err(e),
            };
            let stall = self.stall_ms.load(Ordering::SeqCst);
            if stall > 0 {
                tokio::time::sleep(Duration::from_millis(stall as u64)).await;
            }
            found
        })
    }
    fn insert<'a>(
        &'a self,
        r: &'a ApiKeyRecord,
        d: &'a Digest,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.insert(r, d)
    }
    fn list<'a>(&'a self, org: &'a OrgId) -> BoxFuture<'a, Result<Vec<ApiKeyRecord>, StoreError>> {
        self.inner.list(org)
    }
    fn revoke<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a str,
        at: i64,
    ) -> BoxFuture<'a, Result<Option<Digest>, StoreError>> {
        self.inner.revoke(org, id, at)
    }
    fn touch<'a>(&'a self, used: &'a [(Box<str>, i64)]) -> BoxFuture<'a, Result<(), StoreError>> {
        self.touches.fetch_add(1, Ordering::SeqCst);
        self.inner.touch(used)
    }
    fn rehash<'a>(
        &'a self,
        id: &'a str,
        d: &'a Digest,
        v: u16,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.rehash(id, d, v)
    }
}

fn hasher() -> KeyHasher {
    KeyHasher::new(1, b"a server secret of at least 32 bytes!").unwrap()
}

fn org(id: &str) -> OrgId {
    OrgId::new(id).unwrap()
}

fn app(keys: ApiKeyVerifier) -> Router {
    Router::new()
        .route(
            "/orgs/{org}/comps",
            get(|p: Principal| async move {
                assert_eq!(p.kind(), PrincipalKind::ServiceAccount);
                p.subject().to_owned()
            }),
        )
        .route_layer(RequireScopesLayer::all(["comps:read"]))
        .route_layer(OrgContextLayer::new())
        .layer(AuthenticateLayer::new(keys))
}

async fn call(app: &Router, path: &str, key: &str) -> StatusCode {
    let req = Request::get(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    app.clone().oneshot(req).await.unwrap().status()
}

async fn lifecycle(backend: Backend, name: &str) {
    let probe = Probe::new(store(&backend, name).await);
    let keys = ApiKeyVerifier::new(KeyFormat::default(), hasher(), probe.clone());
    let app = app(keys.clone());
    let scopes = ScopeSet::parse(["comps:read"]).unwrap();
    let created = keys
        .create(&org("org_a"), "ci deploy", scopes.clone(), "user_admin", 30)
        .await
        .unwrap();
    let key = created.key.expose().to_owned();
    assert!(key.starts_with("pc_sk_"));
    assert_eq!(
        created.record.expires_at - created.record.created_at,
        30 * 86_400
    );

    // Use: allowed in its org, forbidden in another, and cached after the first lookup.
    assert_eq!(call(&app, "/orgs/org_a/comps", &key).await, StatusCode::OK);
    assert_eq!(call(&app, "/orgs/org_a/comps", &key).await, StatusCode::OK);
    assert_eq!(probe.finds(), 1, "one store lookup, then the cache");
    assert_eq!(
        call(&app, "/orgs/org_b/comps", &key).await,
        StatusCode::FORBIDDEN
    );

    // The listing never shows a secret.
    let listed = keys.list(&org("org_a")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, created.record.id);
    assert!(!format!("{listed:?}").contains(&key[6..]));
    assert!(keys.list(&org("org_b")).await.unwrap().is_empty());

    // Revoke: refused on the very next request; another org cannot revoke it.
    assert!(
        !keys
            .revoke(&org("org_b"), &created.record.id)
            .await
            .unwrap()
    );
    assert_eq!(call(&app, "/orgs/org_a/comps", &key).await, StatusCode::OK);
    assert!(
        keys.revoke(&org("org_a"), &created.record.id)
            .await
            .unwrap()
    );
    assert_eq!(
        call(&app, "/orgs/org_a/comps", &key).await,
        StatusCode::UNAUTHORIZED
    );
    let listed = keys.list(&org("org_a")).await.unwrap();
    assert!(listed[0].revoked_at.is_some());

    // Expired keys are refused at request time.
    let past = portcullis_apikey::ApiKeyRecord {
        id: "key_expired".into(),
        expires_at: created.record.created_at - 1,
        ..created.record.clone()
    };
    let expired_key = KeyFormat::default().generate();
    probe
        .insert(&past, &hasher().digest(expired_key.expose()))
        .await
        .unwrap();
    assert_eq!(
        call(&app, "/orgs/org_a/comps", expired_key.expose()).await,
        StatusCode::UNAUTHORIZED
    );

    // Lifetime is mandatory and capped, per organization where it has its own maximum.
    let strict_org = ApiKeyVerifier::builder(KeyFormat::default(), hasher(), probe.clone())
        .org_max_lifetime_days(org("org_b"), 7)
        .build();
    assert_eq!(strict_org.max_lifetime_days(&org("org_b")), 7);
    assert_eq!(strict_org.max_lifetime_days(&org("org_a")), 365);
    let scopes_b = ScopeSet::parse(["comps:read"]).unwrap();
    assert!(
        strict_org
            .create(&org("org_b"), "x", scopes_b.clone(), "u", 8)
            .await
            .is_err()
    );
    assert!(
        strict_org
            .create(&org("org_b"), "x", scopes_b, "u", 7)
            .await
            .is_ok()
    );
    assert!(
        keys.create(&org("org_a"), "x", scopes.clone(), "u", 0)
            .await
            .is_err()
    );
    assert!(
        keys.create(&org("org_a"), "x", scopes, "u", 366)
            .await
            .is_err()
    );
}

async fn malformed_keys_never_reach_the_store(backend: Backend, name: &str) {
    let probe = Probe::new(store(&backend, name).await);
    let keys = ApiKeyVerifier::new(KeyFormat::default(), hasher(), probe.clone());
    let app = app(keys);
    let good = KeyFormat::default().generate();
    let good = good.expose();
    let mut bad_checksum = good.to_owned();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == 'a' { 'b' } else { 'a' });
    let cases = [
        bad_checksum,
        good.replacen("pc_", "px_", 1),
        good[..good.len() - 3].to_owned(),
        format!("pc_sk_{}", "A".repeat(10 * 1024)),
        format!("{}é", &good[..good.len() - 2]),
    ];
    for case in &cases {
        let status = call(&app, "/orgs/org_a/comps", case).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case:.20}");
    }
    assert_eq!(probe.finds(), 0, "no store query for a malformed key");
    // A well-formed unknown key costs one query, then is remembered as unknown.
    assert_eq!(
        call(&app, "/orgs/org_a/comps", good).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, "/orgs/org_a/comps", good).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(probe.finds(), 1);
}

#[tokio::test]
async fn lifecycle_in_memory() {
    lifecycle(Backend::Memory, "life").await;
}

#[tokio::test]
async fn lifecycle_on_sqlite() {
    lifecycle(Backend::Sqlite, "life").await;
}

#[tokio::test]
async fn lifecycle_on_postgres() {
    lifecycle(Backend::Postgres, "life").await;
}

#[tokio::test]
async fn malformed_on_sqlite() {
    malformed_keys_never_reach_the_store(Backend::Sqlite, "malformed").await;
}

#[tokio::test]
async fn malformed_on_postgres() {
    malformed_keys_never_reach_the_store(Backend::Postgres, "malformed").await;
}

#[tokio::test]
async fn store_outage_keeps_recent_keys_and_refuses_unknown_ones_with_503() {
    let probe = Probe::new(MemoryStore::new());
    let keys = ApiKeyVerifier::builder(KeyFormat::default(), hasher(), probe.clone())
        .fresh_for(Duration::ZERO)
        .build();
    let app = app(keys.clone());
    let scopes = ScopeSet::parse(["comps:read"]).unwrap();
    let a = keys
        .create(&org("org_a"), "a", scopes.clone(), "u", 1)
        .await
        .unwrap();
    let b = keys
        .create(&org("org_a"), "b", scopes, "u", 1)
        .await
        .unwrap();
    assert_eq!(
        call(&app, "/orgs/org_a/comps", a.key.expose()).await,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "/orgs/org_a/comps", b.key.expose()).await,
        StatusCode::OK
    );

    probe.down.store(true, Ordering::SeqCst);
    assert_eq!(
        call(&app, "/orgs/org_a/comps", a.key.expose()).await,
        StatusCode::OK,
        "stale but seen recently"
    );
    let unknown = KeyFormat::default().generate();
    assert_eq!(
        call(&app, "/orgs/org_a/comps", unknown.expose()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Revoked while the store is down for reads: the eviction wins over the stale window.
    probe.down.store(false, Ordering::SeqCst);
    assert!(keys.revoke(&org("org_a"), &b.record.id).await.unwrap());
    probe.down.store(true, Ordering::SeqCst);
    assert_eq!(
        call(&app, "/orgs/org_a/comps", b.key.expose()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // Recovers by itself.
    probe.down.store(false, Ordering::SeqCst);
    assert_eq!(
        call(&app, "/orgs/org_a/comps", a.key.expose()).await,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "/orgs/org_a/comps", b.key.expose()).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn secret_rotation_rehashes_on_use() {
    let store = Arc::new(MemoryStore::new());
    let old = ApiKeyVerifier::new(KeyFormat::default(), hasher(), store.clone());
    let created = old
        .create(
            &org("org_a"),
            "a",
            ScopeSet::parse(["comps:read"]).unwrap(),
            "u",
            1,
        )
        .await
        .unwrap();
    let rotated = KeyHasher::new(2, b"the next server secret, also 32 bytes")
        .unwrap()
        .previous(1, b"a server secret of at least 32 bytes!")
        .unwrap();
    let new = ApiKeyVerifier::new(KeyFormat::default(), rotated.clone(), store.clone());
    assert_eq!(
        call(&app(new), "/orgs/org_a/comps", created.key.expose()).await,
        StatusCode::OK
    );
    let record = store
        .find(&rotated.digest(created.key.expose()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.secret_version, 2,
        "re-hashed with the current secret"
    );
}

/// A new key of org_a with `comps:read`, never used yet.
/// The statuses of 32 concurrent uses of `key`.
async fn at_once(app: &Router, key: &str) -> Vec<StatusCode> {
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (app, key) = (app.clone(), key.to_owned());
            tokio::spawn(async move { call(&app, "/orgs/org_a/comps", &key).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}

async fn one_key(keys: &ApiKeyVerifier) -> String {
    let scopes = ScopeSet::parse(["comps:read"]).unwrap();
    let created = keys
        .create(&org("org_a"), "a", scopes, "u", 1)
        .await
        .unwrap();
    created.key.expose().to_owned()
}

#[tokio::test]
async fn concurrent_first_uses_share_one_query() {
    let probe = Probe::new(MemoryStore::new());
    let keys = ApiKeyVerifier::new(KeyFormat::default(), hasher(), probe.clone());
    let key = one_key(&keys).await;
    let app = app(keys);
    for status in at_once(&app, &key).await {
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(probe.finds(), 1, "concurrent loads of one key are merged");
}

#[tokio::test]
async fn concurrent_uses_during_an_outage_share_one_failed_query() {
    let probe = Probe::new(MemoryStore::new());
    let keys = ApiKeyVerifier::new(KeyFormat::default(), hasher(), probe.clone());
    let key = one_key(&keys).await;
    let app = app(keys);
    probe.down.store(true, Ordering::SeqCst);
    probe.stall_ms.store(300, Ordering::SeqCst);
    let started = std::time::Instant::now();
    for status in at_once(&app, &key).await {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(
        probe.finds(),
        1,
        "the requests that waited for the failed query got its answer"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered together, not one query after another: {:?}",
        started.elapsed()
    );

    // The failure is not remembered: the next request asks again, and recovers.
    probe.down.store(false, Ordering::SeqCst);
    probe.stall_ms.store(0, Ordering::SeqCst);
    assert_eq!(call(&app, "/orgs/org_a/comps", &key).await, StatusCode::OK);
    assert_eq!(probe.finds(), 2);
}

async fn last_use_is_batched(backend: Backend, name: &str) {
    let probe = Probe::new(store(&backend, name).await);
    let keys = ApiKeyVerifier::builder(KeyFormat::default(), hasher(), probe.clone())
        .fresh_for(Duration::ZERO)
        .build();
    let app = app(keys.clone());
    let scopes = ScopeSet::parse(["comps:read"]).unwrap();
    let used = keys
        .create(&org("org_a"), "used", scopes.clone(), "u", 1)
        .await
        .unwrap();
    let idle = keys
        .create(&org("org_a"), "idle", scopes, "u", 1)
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(
            call(&app, "/orgs/org_a/comps", used.key.expose()).await,
            StatusCode::OK
        );
    }
    assert_eq!(
        probe.touches.load(Ordering::SeqCst),
        0,
        "no write per request"
    );
    assert_eq!(keys.flush_last_use().await.unwrap(), 1);
    assert_eq!(
        keys.flush_last_use().await.unwrap(),
        0,
        "nothing new to write"
    );
    assert_eq!(probe.touches.load(Ordering::SeqCst), 1, "one batched write");
    let listed = keys.list(&org("org_a")).await.unwrap();
    let at = |id: &str| listed.iter().find(|k| &*k.id == id).unwrap().last_used_at;
    let stamp = at(&used.record.id).expect("last use recorded");
    assert_eq!(stamp % 60, 0, "to the minute");
    assert!((stamp - used.record.created_at).abs() < 120, "about now");
    assert_eq!(at(&idle.record.id), None);
    // Forward only: an older value never overwrites a newer one.
    probe
        .touch(&[(used.record.id.clone(), stamp - 3600)])
        .await
        .unwrap();
    let listed = keys.list(&org("org_a")).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .find(|k| k.id == used.record.id)
            .unwrap()
            .last_used_at,
        Some(stamp)
    );
}

#[tokio::test]
async fn last_use_on_sqlite() {
    last_use_is_batched(Backend::Sqlite, "lastuse").await;
}

#[tokio::test]
async fn last_use_on_postgres() {
    last_use_is_batched(Backend::Postgres, "lastuse").await;
}

#[tokio::test]
async fn a_load_that_raced_a_revoke_does_not_put_the_key_back() {
    let probe = Probe::new(MemoryStore::new());
    let keys = ApiKeyVerifier::new(KeyFormat::default(), hasher(), probe.clone());
    let created = keys
        .create(
            &org("org_a"),
            "a",
            ScopeSet::parse(["comps:read"]).unwrap(),
            "u",
            1,
        )
        .await
        .unwrap();
    let key = created.key.expose().to_owned();
    // A first use reads the (still valid) row, then stalls; the key is revoked meanwhile.
    probe.stall_ms.store(300, Ordering::SeqCst);
    let racing = {
        let (keys, key) = (keys.clone(), key.clone());
        tokio::spawn(async move { keys.verify(&key).resolve().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    probe.stall_ms.store(0, Ordering::SeqCst);
    assert!(
        keys.revoke(&org("org_a"), &created.record.id)
            .await
            .unwrap()
    );
    assert!(
        racing.await.unwrap().is_err(),
        "the stale load is discarded, and the key reloaded"
    );
    assert!(
        keys.verify(&key).resolve().await.is_err(),
        "and not cached as valid"
    );
}
