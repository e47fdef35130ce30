//! The revocation check on the hot path: nothing revoked, and 10 000 revocations in force.
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_core::{
    OrgId, OrgMembership, Principal, PrincipalKind, Verification, VerifyCredential,
};
use portcullis_revocation::{Revocable, Revocation, RevocationList, Target};

struct Fixed(Principal);

impl VerifyCredential for Fixed {
    fn verify(&self, _: &str) -> Verification {
        Verification::Ready(Ok(self.0.clone()))
    }
}

fn bench(c: &mut Criterion) {
    let principal = Principal::builder(PrincipalKind::User, "user_alice")
        .session_id("sess_alice")
        .org(OrgMembership::new(OrgId::new("org_a").unwrap()))
        .issued_at(1_800_000_000)
        .build();
    let list = RevocationList::new();
    let verifier = Revocable::new(Fixed(principal.clone()), list.clone());
    let bare = Fixed(principal);

    let mut g = c.benchmark_group("revocation");
    g.bench_function("verify without the check (baseline)", |b| {
        b.iter(|| black_box(&bare).verify(black_box("t")));
    });
    g.bench_function("verify + check, nothing revoked", |b| {
        b.iter(|| black_box(&verifier).verify(black_box("t")));
    });
    list.replace((0..10_000).map(|i| Revocation {
        target: match i % 3 {
            0 => Target::Session(format!("sess_{i}")),
            1 => Target::User(format!("user_{i}")),
            _ => Target::Membership {
                user: "user_alice".into(),
                org: format!("org_{i}"),
            },
        },
        not_before: Some(1_700_000_000),
        expires_at: i64::MAX,
        reason: "bench".into(),
    }));
    g.bench_function("verify + check, 10 000 revocations", |b| {
        b.iter(|| black_box(&verifier).verify(black_box("t")));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
