//! Two stores on one SQLite file, as a gateway and an operator's CLI are: the watching one sees
//! every change within its poll, including a lift followed by a new revocation in the same
//! second (which leaves the row count and the newest timestamp as they were).

use std::time::{Duration, Instant};

use portcullis_apikey::SqlStore;
use portcullis_core::{OrgId, OrgMembership, Principal, PrincipalKind};
use portcullis_revocation::{RevocationList, RevocationStore, Target};

fn user(sub: &str, sid: &str) -> Principal {
    Principal::builder(PrincipalKind::User, sub)
        .session_id(sid)
        .org(OrgMembership::new(OrgId::new("org_a").unwrap()))
        .issued_at(1)
        .build()
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(5), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_polling_store_sees_every_change_of_another() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    let lifetime = Duration::from_secs(3600);
    let gateway = RevocationStore::open(
        SqlStore::connect(&url).await.unwrap(),
        RevocationList::new(),
        lifetime,
    )
    .await
    .unwrap();
    let _watch = gateway.watch().await.unwrap().expect("SQLite is polled");
    let cli = RevocationStore::open(
        SqlStore::connect(&url).await.unwrap(),
        RevocationList::new(),
        lifetime,
    )
    .await
    .unwrap();
    let list = gateway.list().clone();

    cli.revoke(Target::Session("sess_x".into()), None, "operator")
        .await
        .unwrap();
    eventually("the first revocation", || {
        list.check(&user("u1", "sess_x")).is_err()
    })
    .await;

    // Same second: lift one, revoke another.
    cli.lift(&Target::Session("sess_x".into())).await.unwrap();
    cli.revoke(Target::Session("sess_y".into()), None, "operator")
        .await
        .unwrap();
    eventually("the lift and the second revocation", || {
        list.check(&user("u1", "sess_x")).is_ok() && list.check(&user("u2", "sess_y")).is_err()
    })
    .await;
    assert_eq!(list.len(), 1);
}
