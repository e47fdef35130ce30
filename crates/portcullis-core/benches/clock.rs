//! The request path's clock against the standard clocks, and a fresh request id.
use std::{
    hint::black_box,
    time::{Instant, SystemTime},
};

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_core::{RequestId, clock};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("clock");
    g.bench_function("SystemTime::now (baseline)", |b| {
        b.iter(|| black_box(SystemTime::now()));
    });
    g.bench_function("clock::since_epoch", |b| {
        b.iter(|| black_box(clock::since_epoch()));
    });
    g.bench_function("Instant::now (baseline)", |b| {
        b.iter(|| black_box(Instant::now()));
    });
    g.bench_function("clock::instant", |b| b.iter(|| black_box(clock::instant())));
    g.bench_function("clock::deadline", |b| {
        b.iter(|| {
            black_box(clock::deadline(black_box(std::time::Duration::from_secs(
                30,
            ))))
        });
    });
    g.bench_function("RequestId::generate", |b| {
        b.iter(|| black_box(RequestId::generate()));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
