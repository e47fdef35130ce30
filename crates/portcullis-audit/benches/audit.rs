//! Benchmarks:
//! - the cost added to a request by emitting a routine event (build it, hand it to the emitter);
//! - sustained events/s through the emitter into JSON Lines, and into PostgreSQL
//!   (127.0.0.1:5432, database `test`).

use std::{hint::black_box, time::Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis_audit::{Auditor, AuditorConfig, EventWriter, JsonlSink, JsonlWriter, PgAuditSink};
use portcullis_core::{
    OrgId, OrgMembership, Principal, PrincipalKind, RequestId,
    audit::{AuditEvent, AuditSink, Outcome},
};

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const BURST: usize = 20_000;

fn event(principal: &Principal, request_id: &RequestId) -> AuditEvent {
    AuditEvent::new("authn.succeeded", Outcome::Success)
        .by(principal)
        .request(request_id, &http::Method::GET, "/api/v1/orgs/org_a/comps")
}

fn sustained<W: EventWriter>(
    c: &mut Criterion,
    name: &str,
    rt: &tokio::runtime::Runtime,
    writer: W,
) {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, _task) = rt.block_on(async {
        let mut config = AuditorConfig::new(dir.path().join("spool"));
        config.queue = BURST * 2;
        Auditor::start(writer, config).unwrap()
    });
    let principal = Principal::builder(PrincipalKind::User, "user_1")
        .org(OrgMembership::new(OrgId::new("org_a").unwrap()))
        .build();
    let rid = RequestId::generate();
    let mut g = c.benchmark_group("audit_sustained");
    g.throughput(Throughput::Elements(BURST as u64));
    g.sample_size(10);
    g.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (auditor, principal, rid) = (auditor.clone(), principal.clone(), rid.clone());
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..BURST {
                        auditor.record(event(&principal, &rid)).await.unwrap();
                    }
                    auditor.flush().await;
                }
                start.elapsed()
            }
        });
    });
    g.finish();
    assert_eq!(
        auditor
            .stats()
            .spooled
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

fn audit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let principal = Principal::builder(PrincipalKind::User, "user_1")
        .org(OrgMembership::new(OrgId::new("org_a").unwrap()))
        .build();
    let rid = RequestId::generate();

    // The per-request cost: build the event and hand it to the emitter. The writer here
    // discards, so that the queue never fills and the figure is the request's share only (the
    // writing is measured below, as throughput).
    struct Discard;
    impl EventWriter for Discard {
        fn write<'a>(&'a self, _: &'a [AuditEvent]) -> portcullis_audit::WriteFuture<'a> {
            Box::pin(std::future::ready(Ok(())))
        }
    }
    let (auditor, _task) = rt.block_on(async {
        Auditor::start(Discard, AuditorConfig::new(dir.path().join("cost.spool"))).unwrap()
    });
    c.bench_function("audit_routine_event_cost", |b| {
        b.to_async(&rt).iter(|| {
            let fut = auditor.record(event(&principal, &rid));
            async move { fut.await.unwrap() }
        });
    });
    assert_eq!(
        auditor
            .stats()
            .spooled
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // The layer's own cost on a granted request (level decisions: nothing is recorded), against
    // the same router without it, in the same run.
    {
        use tower::Service;
        let bare: axum::Router =
            axum::Router::new().route("/x", axum::routing::get(|| async { "ok" }));
        let audited = bare
            .clone()
            .layer(portcullis_audit::AuditLayer::new(auditor.clone()));
        let mut g = c.benchmark_group("audit_layer_granted_request");
        for (name, router) in [("bare_axum", bare), ("with_audit_layer", audited)] {
            let mut svc = router.into_service::<axum::body::Body>();
            g.bench_function(name, |b| {
                b.to_async(&rt).iter(|| {
                    let fut = svc.call(
                        http::Request::get("/x")
                            .body(axum::body::Body::empty())
                            .unwrap(),
                    );
                    async move { black_box(fut.await.unwrap()) }
                });
            });
        }
        g.finish();
    }
    c.bench_function("audit_event_build_only", |b| {
        b.iter(|| black_box(event(&principal, &rid)));
    });

    let jsonl = JsonlSink::open(dir.path().join("sustained.jsonl")).unwrap();
    sustained(c, "jsonl", &rt, JsonlWriter::new(jsonl));

    let pg = rt.block_on(async {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(PG).await.unwrap();
        sqlx::raw_sql("DROP SCHEMA IF EXISTS bench_audit CASCADE; CREATE SCHEMA bench_audit;")
            .execute(&mut admin)
            .await
            .unwrap();
        PgAuditSink::connect(&format!("{PG}?options=-c%20search_path%3Dbench_audit"))
            .await
            .unwrap()
    });
    sustained(c, "postgres", &rt, pg);
}

criterion_group!(benches, audit);
criterion_main!(benches);
