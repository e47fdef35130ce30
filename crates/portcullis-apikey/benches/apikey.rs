//! Benchmarks against PostgreSQL (127.0.0.1:5432, database `test`) holding 1 000 000 keys:
//! - the HMAC of a key alone, and a verification of a cached key (the hot path);
//! - a verification that misses the cache and queries PostgreSQL;
//! - 64 concurrent cache misses (throughput with 1 000 000 keys in the store).

use std::{hint::black_box, time::Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis_apikey::{ApiKeyVerifier, KeyFormat, KeyHasher, SqlStore};
use portcullis_core::{OrgId, ScopeSet, Verification, VerifyCredential};

use portcullis_test_support::PG;
const FILLER: u32 = 1_000_000;

fn setup(rt: &tokio::runtime::Runtime) -> (ApiKeyVerifier, KeyHasher, Vec<String>) {
    rt.block_on(async {
        let schema = "bench_api_keys";
        portcullis_test_support::fresh_schema(schema).await;
        let url = portcullis_test_support::schema_url(PG, schema);
        let store = SqlStore::connect(&url).await.unwrap();
        let started = Instant::now();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET search_path = {schema}; \
             INSERT INTO portcullis_api_keys (id, org_id, name, digest, secret_version, start, last4, \
               scopes, created_by, created_at, expires_at) \
             SELECT 'key_fill_' || g, 'org_fill', 'filler', sha256(('fill' || g)::text::bytea), 1, \
               'pc_sk_xxxx', 'xxxx', 'comps:read', 'bench', 0, 4102444800 \
             FROM generate_series(1, {FILLER}) g; ANALYZE portcullis_api_keys;"
        )))
        .execute(store.pool())
        .await
        .unwrap();
        eprintln!("inserted {FILLER} keys in {:?}", started.elapsed());
        let hasher = KeyHasher::new(1, &[9; 32]).unwrap();
        // Fresh for an hour: criterion's runs outlast the default 15 s, and the hot path is what
        // `verify_cached` measures.
        let verifier = ApiKeyVerifier::builder(KeyFormat::default(), hasher.clone(), store)
            .fresh_for(std::time::Duration::from_secs(3600))
            .build();
        let org = OrgId::new("org_a").unwrap();
        let scopes = ScopeSet::parse(["comps:read"]).unwrap();
        let mut keys = Vec::new();
        for i in 0..256 {
            let created = verifier.create(&org, &format!("k{i}"), scopes.clone(), "bench", 30).await.unwrap();
            keys.push(created.key.expose().to_owned());
        }
        (verifier, hasher, keys)
    })
}

fn ready(v: Verification) -> bool {
    matches!(v, Verification::Ready(Ok(_)))
}

fn api_keys(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (verifier, hasher, keys) = setup(&rt);
    let key = keys[0].clone();
    assert!(rt.block_on(verifier.verify(&key).resolve()).is_ok());

    let mut g = c.benchmark_group("api_key");
    g.bench_function("hmac_only", |b| {
        b.iter(|| black_box(hasher.digest(black_box(&key))));
    });
    g.bench_function("verify_cached", |b| {
        b.iter(|| assert!(ready(verifier.verify(black_box(&key)))));
    });
    g.bench_function("verify_miss_postgres_1m", |b| {
        let digest = hasher.digest(&key);
        b.to_async(&rt).iter(|| async {
            verifier.evict(&digest).await;
            black_box(verifier.verify(&key).resolve().await.unwrap())
        });
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("64_concurrent_misses_postgres_1m", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (verifier, keys) = (verifier.clone(), keys.clone());
            async move {
                let mut total = std::time::Duration::ZERO;
                for i in 0..iters {
                    verifier.evict_all();
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..64)
                        .map(|j| {
                            let (v, k) = (
                                verifier.clone(),
                                keys[(i as usize * 64 + j) % keys.len()].clone(),
                            );
                            tokio::spawn(async move { v.verify(&k).resolve().await.is_ok() })
                        })
                        .collect();
                    for t in tasks {
                        assert!(t.await.unwrap());
                    }
                    total += start.elapsed();
                }
                total
            }
        });
    });
    g.finish();
}

criterion_group!(benches, api_keys);
criterion_main!(benches);
