//! `GuardLayer` with a guard that passes, against the same service without it.
use std::convert::Infallible;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, request::Parts};
use portcullis_authz::guard::{Guard, GuardFuture, GuardLayer};
use portcullis_core::{Principal, PrincipalKind};
use tower::{Layer, ServiceExt, service_fn};

struct Pass;

impl Guard for Pass {
    fn name(&self) -> &str {
        "pass"
    }
    fn check(&self, _: &Parts, _: &Principal) -> GuardFuture {
        Box::pin(std::future::ready(Ok(())))
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let principal = Principal::builder(PrincipalKind::User, "user_1").build();
    let service = service_fn(|_req: Request<axum::body::Body>| async {
        Ok::<_, Infallible>(Response::new(axum::body::Body::empty()))
    });
    let guarded = GuardLayer::new(Pass).layer(service);
    let request = || {
        let mut req = Request::new(axum::body::Body::empty());
        req.extensions_mut().insert(principal.clone());
        req
    };
    let mut g = c.benchmark_group("guard");
    g.bench_function("service alone (baseline)", |b| {
        b.to_async(&rt).iter(|| service.oneshot(request()));
    });
    g.bench_function("GuardLayer with a passing guard", |b| {
        b.to_async(&rt).iter(|| guarded.clone().oneshot(request()));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
