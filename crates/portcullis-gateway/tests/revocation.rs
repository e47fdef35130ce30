//! Immediate revocation: Clerk webhooks (signed by Svix's own library) and the CLI, against the
//! real binary; three gateways on one PostgreSQL.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Db, Issuer, Setup, Upstream, client, deliver, svix_sign, unix_now};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A Clerk event as Clerk documents it: `{"data": …, "object": "event", "type": …}`.
fn clerk_event(kind: &str, data: Value) -> String {
    json!({
        "data": data,
        "object": "event",
        "type": kind,
        "timestamp": unix_now() * 1000,
        "instance_id": "ins_2abc",
    })
    .to_string()
}

fn session(kind: &str, sid: &str, user: &str) -> String {
    clerk_event(
        kind,
        json!({
            "id": sid, "object": "session", "user_id": user, "client_id": "client_1",
            "status": kind.strip_prefix("session.").unwrap_or("active"),
            "created_at": unix_now() * 1000 - 60_000, "updated_at": unix_now() * 1000,
            "expire_at": unix_now() * 1000 + 86_400_000, "last_active_at": unix_now() * 1000,
        }),
    )
}

fn membership(kind: &str, user: &str, org: &str, role: &str, at_ms: u64) -> String {
    clerk_event(
        kind,
        json!({
            "id": format!("orgmem_{user}_{org}"), "object": "organization_membership",
            "role": format!("org:{role}"), "permissions": [],
            "created_at": at_ms - 1000, "updated_at": at_ms,
            "organization": {"id": org, "name": org, "slug": org, "object": "organization"},
            "public_user_data": {"user_id": user, "identifier": format!("{user}@example.com"),
                "first_name": null, "last_name": null, "has_image": false},
        }),
    )
}

fn user(kind: &str, id: &str, banned: bool) -> String {
    clerk_event(
        kind,
        json!({
            "id": id, "object": "user", "banned": banned, "locked": false,
            "deleted": kind == "user.deleted", "updated_at": unix_now() * 1000,
        }),
    )
}

/// Sign and POST one event; returns the status.
async fn send(gateway: &str, id: &str, payload: &str) -> u16 {
    let ts = unix_now() as i64;
    let sig = svix_sign(WHSEC, &[(id.to_owned(), ts, payload.to_owned())]).await;
    deliver(gateway, id, ts, payload, &sig[0])
        .await
        .status()
        .as_u16()
}

async fn status(url: &str, token: &str) -> u16 {
    client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn clerk_webhooks_revoke_at_once_and_are_audited() {
    let issuer = Issuer::start().await;
    let upstream = Upstream::start().await;
    let mut setup = Setup::new(Db::Sqlite, "webhooks", &issuer, &upstream.url).await;
    setup.set("PORTCULLIS_CLERK_WEBHOOK_SECRET", WHSEC);
    let gw = setup.start().await;
    let comps = |org: &str| format!("{}/api/v1/orgs/{org}/comps", gw.url);
    let now = unix_now();
    let alice = issuer.session_token("user_alice", "sess_alice", "org_a", "admin", now);
    assert_eq!(status(&comps("org_a"), &alice).await, 200);

    // Login and logout: the session's still-valid token stops at once.
    assert_eq!(
        send(
            &gw.url,
            "msg_1",
            &session("session.created", "sess_alice", "user_alice")
        )
        .await,
        204
    );
    assert_eq!(
        send(
            &gw.url,
            "msg_2",
            &session("session.ended", "sess_alice", "user_alice")
        )
        .await,
        204
    );
    assert_eq!(status(&comps("org_a"), &alice).await, 401);
    let other_session = issuer.session_token("user_alice", "sess_alice_2", "org_a", "admin", now);
    assert_eq!(
        status(&comps("org_a"), &other_session).await,
        200,
        "only that session"
    );

    // Bad, stale, replayed and unsigned deliveries are refused.
    let payload = session("session.revoked", "sess_x", "user_x");
    let ts = unix_now() as i64;
    let good = svix_sign(WHSEC, &[("msg_3".into(), ts, payload.clone())]).await;
    let forged = svix_sign(
        "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB",
        &[("msg_3".into(), ts, payload.clone())],
    )
    .await;
    assert_eq!(
        deliver(&gw.url, "msg_3", ts, &payload, &forged[0])
            .await
            .status(),
        401
    );
    let tampered = payload.replace("sess_x", "sess_y");
    assert_eq!(
        deliver(&gw.url, "msg_3", ts, &tampered, &good[0])
            .await
            .status(),
        401
    );
    let old = ts - 600;
    let stale = svix_sign(WHSEC, &[("msg_4".into(), old, payload.clone())]).await;
    assert_eq!(
        deliver(&gw.url, "msg_4", old, &payload, &stale[0])
            .await
            .status(),
        400
    );
    let rotating = format!(
        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {}",
        good[0]
    );
    assert_eq!(
        deliver(&gw.url, "msg_3", ts, &payload, &rotating)
            .await
            .status(),
        204,
        "several signatures, one good"
    );
    assert_eq!(
        deliver(&gw.url, "msg_3", ts, &payload, &good[0])
            .await
            .status(),
        400,
        "a replay"
    );
    let res = client()
        .post(format!("{}/webhooks/clerk", gw.url))
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "no signature headers");

    // A role downgrade stops the old role's still-valid token at once; a token issued after the
    // change (with the new role) works.
    let before = unix_now();
    let bob_admin = issuer.session_token("user_bob", "sess_bob", "org_a", "admin", before - 1);
    assert_eq!(status(&comps("org_a"), &bob_admin).await, 200);
    assert_eq!(
        send(
            &gw.url,
            "msg_5",
            &membership(
                "organizationMembership.created",
                "user_bob",
                "org_a",
                "admin",
                (before - 100) * 1000
            )
        )
        .await,
        204
    );
    assert_eq!(
        send(
            &gw.url,
            "msg_6",
            &membership(
                "organizationMembership.updated",
                "user_bob",
                "org_a",
                "member",
                before * 1000
            )
        )
        .await,
        204
    );
    assert_eq!(
        status(&comps("org_a"), &bob_admin).await,
        401,
        "the admin token stops"
    );
    let bob_member = issuer.session_token("user_bob", "sess_bob", "org_a", "member", before + 1);
    assert_eq!(
        status(&comps("org_a"), &bob_member).await,
        200,
        "the member token works"
    );

    // Removed from org_a: refused there, still fine in org_b.
    let carol_a = issuer.session_token("user_carol", "sess_carol", "org_a", "member", now);
    let carol_b = issuer.session_token("user_carol", "sess_carol", "org_b", "member", now);
    assert_eq!(
        send(
            &gw.url,
            "msg_7",
            &membership(
                "organizationMembership.deleted",
                "user_carol",
                "org_a",
                "member",
                now * 1000
            )
        )
        .await,
        204
    );
    assert_eq!(status(&comps("org_a"), &carol_a).await, 401);
    assert_eq!(status(&comps("org_b"), &carol_b).await, 200);

    // Deleted, and banned then unbanned.
    let dave = issuer.session_token("user_dave", "sess_dave", "org_a", "member", now);
    assert_eq!(
        send(&gw.url, "msg_8", &user("user.deleted", "user_dave", false)).await,
        204
    );
    assert_eq!(status(&comps("org_a"), &dave).await, 401);
    let erin = issuer.session_token("user_erin", "sess_erin", "org_a", "member", now);
    assert_eq!(
        send(&gw.url, "msg_9", &user("user.updated", "user_erin", true)).await,
        204
    );
    assert_eq!(status(&comps("org_a"), &erin).await, 401);
    assert_eq!(
        send(&gw.url, "msg_10", &user("user.updated", "user_erin", false)).await,
        204
    );
    assert_eq!(status(&comps("org_a"), &erin).await, 200, "unbanned");

    // Without webhooks: the CLI, against the same store, reaches the running gateway.
    let frank = issuer.session_token("user_frank", "sess_frank", "org_a", "member", now);
    assert_eq!(status(&comps("org_a"), &frank).await, 200);
    let (code, _, err) = setup
        .run(&["revoke", "session", "sess_frank", "--by", "tester"])
        .await;
    assert_eq!(code, 0, "{err}");
    let start = Instant::now();
    while status(&comps("org_a"), &frank).await != 401 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the CLI revocation did not reach the gateway"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(gw.terminate().await, 0);
    let events = setup.audit_events();
    let find = |action: &str| {
        events
            .iter()
            .filter(|e| e["action"] == action)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(find("session.started").len(), 1);
    assert!(
        find("session.ended")
            .iter()
            .any(|e| e["target"]["id"] == "sess_alice")
    );
    let changed = find("membership.role_changed");
    let downgrade = changed
        .iter()
        .find(|e| e["change"]["after"] == "member")
        .expect("the downgrade was audited");
    assert_eq!(downgrade["change"]["before"], "admin");
    assert_eq!(downgrade["org_id"], "org_a");
    assert_eq!(find("membership.removed").len(), 1);
    assert_eq!(find("user.deactivated").len(), 2);
    assert_eq!(find("user.reactivated").len(), 1);
    assert!(
        find("session.revoked")
            .iter()
            .any(|e| e["actor"]["id"] == "cli:tester")
    );
    let rejected: Vec<String> = find("webhook.rejected")
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect();
    for reason in [
        "bad_signature",
        "stale_timestamp",
        "replayed",
        "malformed_webhook",
    ] {
        assert!(
            rejected.iter().any(|r| r == reason),
            "{reason} not audited: {rejected:?}"
        );
    }

    // Dormancy: the users the gateway saw are in the access review.
    let (code, out, err) = setup
        .run(&["review", "--org", "org_a", "--format", "json"])
        .await;
    assert_eq!(code, 0, "{err}");
    let review: Value = serde_json::from_str(&out).unwrap();
    let seen: Vec<&str> = review["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    for user in ["user_alice", "user_bob", "user_erin", "user_frank"] {
        assert!(seen.contains(&user), "{user} not in {seen:?}");
    }
    assert!(
        review["users"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["status"] == "active")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn three_gateways_on_postgres_refuse_an_ended_session_within_a_second() {
    let issuer = Issuer::start().await;
    let upstream = Upstream::start().await;
    let mut setup = Setup::new(Db::Postgres, "replicas", &issuer, &upstream.url).await;
    setup.set("PORTCULLIS_CLERK_WEBHOOK_SECRET", WHSEC);
    // The schema's connections carry its name as their application name, so that the cut below
    // hits only these gateways' listeners.
    let app = format!("gw_replicas_{}", std::process::id());
    assert!(
        setup.env.iter().any(|(k, v)| k == "PORTCULLIS_DATABASE_URL"
            && v.contains(&format!("application_name={app}")))
    );
    let mut gateways = Vec::new();
    for i in 0..3 {
        setup.set(
            "PORTCULLIS_AUDIT",
            &format!(
                "jsonl:{}",
                setup.dir.path().join(format!("audit{i}.jsonl")).display()
            ),
        );
        gateways.push(setup.start().await);
    }
    let urls: Vec<String> = gateways
        .iter()
        .map(|g| format!("{}/api/v1/orgs/org_a/comps", g.url))
        .collect();

    let mut times = Vec::new();
    for i in 0..20 {
        if i == 10 {
            // Cut every listener of the three gateways; they reconnect and reload by themselves.
            use sqlx::Connection;
            let mut admin = sqlx::PgConnection::connect(portcullis_test_support::PG)
                .await
                .unwrap();
            let cut: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = '{app}' AND query ILIKE 'LISTEN%'"
            )))
            .fetch_one(&mut admin)
            .await
            .unwrap();
            assert!(cut >= 3, "the listeners were cut ({cut})");
        }
        let sid = format!("sess_{i}");
        let token = issuer.session_token(&format!("user_{i}"), &sid, "org_a", "member", unix_now());
        for url in &urls {
            assert_eq!(status(url, &token).await, 200, "try {i}: valid before");
        }
        // Signed first (by node), so that the clock runs from the delivery only.
        let (id, payload, ts) = (
            format!("msg_r{i}"),
            session("session.ended", &sid, &format!("user_{i}")),
            unix_now() as i64,
        );
        let signature = svix_sign(WHSEC, &[(id.clone(), ts, payload.clone())]).await;
        let start = Instant::now();
        let receiver = &gateways[i % 3].url;
        assert_eq!(
            deliver(receiver, &id, ts, &payload, &signature[0])
                .await
                .status(),
            204
        );
        let mut pending: Vec<&String> = urls.iter().collect();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for url in pending {
                if status(url, &token).await != 401 {
                    still.push(url);
                }
            }
            pending = still;
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "try {i}: not converged"
            );
        }
        times.push(start.elapsed());
    }
    let after_cut = *times[10..].iter().max().unwrap();
    times.sort();
    let median = times[times.len() / 2];
    let worst = *times.last().unwrap();
    eprintln!(
        "session.ended seen by all three gateways: median {median:?}, worst {worst:?} over 20 tries (after the cut: worst {after_cut:?})"
    );
    assert!(
        worst < Duration::from_secs(1),
        "worst propagation {worst:?}"
    );
    for gw in gateways {
        assert_eq!(gw.terminate().await, 0);
    }
}
