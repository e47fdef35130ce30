//! The real binary in front of a real upstream, on SQLite and on PostgreSQL.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use support::{Db, Issuer, Setup, Upstream, client};

const ALL: &[&str] = &[
    "comps:read",
    "audit:read",
    "reports:write",
    "api_keys:manage",
];

async fn json(res: reqwest::Response) -> Value {
    res.json().await.unwrap()
}

/// Allowed, wrong scope, wrong org, unmatched route, spoofed headers, public route, API keys
/// created and revoked from the CLI and the API, and the audit trail of all of it.
async fn the_policy_is_enforced(db: Db, name: &str) {
    let issuer = Issuer::start().await;
    let upstream = Upstream::start().await;
    let setup = Setup::new(db, name, &issuer, &upstream.url).await;
    let (key, key_id) = setup.create_key("org_a", "comps:read").await;
    let gw = setup.start().await;
    let http = client();
    let admin = issuer.token("user_admin", "org_a", ALL);
    let reader = issuer.token("user_reader", "org_a", &["comps:read"]);
    let other = issuer.token("user_other", "org_b", ALL);
    let comps = format!("{}/api/v1/orgs/org_a/comps", gw.url);

    // Allowed, with spoofed identity headers that must not reach the upstream.
    let res = http
        .get(&comps)
        .bearer_auth(&admin)
        .header("x-portcullis-subject", "user_root")
        .header("x-portcullis-org", "org_b")
        .header("X-Portcullis-Scopes", "everything")
        .header("x-portcullis-custom", "1")
        .header("x-request-id", "req-e2e-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"], "req-e2e-1");
    let seen = upstream.last_headers();
    assert_eq!(seen["x-portcullis-subject"], "user_admin");
    assert_eq!(seen["x-portcullis-subject-kind"], "user");
    assert_eq!(seen["x-portcullis-org"], "org_a");
    assert_eq!(seen["x-portcullis-org-role"], "admin");
    assert_eq!(
        seen["x-portcullis-scopes"],
        "api_keys:manage audit:read comps:read reports:write"
    );
    assert_eq!(seen["x-request-id"], "req-e2e-1");
    // The upstream is addressed by its own name; where the request came from is said once.
    let gateway_host = gw.url.trim_start_matches("http://");
    let upstream_host = upstream.url.trim_start_matches("http://");
    assert_eq!(seen["host"], upstream_host);
    assert_eq!(seen["x-forwarded-host"], gateway_host);
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.get_all("host").iter().count(), 1);
    assert!(!seen.contains_key("x-portcullis-custom"));
    assert!(!seen.contains_key("x-portcullis-actor"));
    assert!(
        !seen.contains_key("authorization"),
        "the credential is not forwarded"
    );
    assert_eq!(seen.get_all("x-portcullis-subject").iter().count(), 1);

    // A protected catch-all route.
    let res = http
        .get(format!("{}/api/v1/docs/guides/setup.md", gw.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["path"], "/api/v1/docs/guides/setup.md");
    let forwarded = upstream.requests();

    // Refusals never reach the upstream.
    let res = http
        .get(format!("{}/api/v1/orgs/org_a/audit", gw.url))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    assert_eq!(json(res).await["error"], "insufficient_scope");

    let res = http.get(&comps).bearer_auth(&other).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(json(res).await["error"], "org_forbidden");

    let res = http
        .get(format!("{}/api/v1/orgs/org_a/secrets", gw.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "unmatched route");
    assert_eq!(json(res).await["error"], "forbidden");
    let res = http.post(&comps).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(res.status(), 403, "a method the route does not allow");

    // Authentication comes first, even on an unmatched path.
    let res = http
        .get(format!("{}/nowhere", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()["www-authenticate"],
        r#"Bearer realm="portcullis""#
    );
    let res = http
        .get(&comps)
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(json(res).await["error"], "invalid_token");
    let res = http
        .get(&comps)
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(upstream.requests(), forwarded, "no refusal was forwarded");

    // A public route: no authentication, spoofed headers removed, no identity added.
    let res = http
        .get(format!("{}/public/status", gw.url))
        .header("x-portcullis-subject", "user_root")
        .header("x-forwarded-for", "10.9.9.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = upstream.last_headers();
    assert!(
        seen.keys()
            .all(|k| !k.as_str().starts_with("x-portcullis-"))
    );
    assert!(!seen.contains_key("authorization"));
    // An earlier proxy's x-forwarded-for is kept and extended; the others are the gateway's.
    assert_eq!(seen["x-forwarded-for"], "10.9.9.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], gateway_host);
    for name in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "host",
    ] {
        assert_eq!(seen.get_all(name).iter().count(), 1, "{name}");
    }

    // The key created with the CLI is a service account of org_a.
    let res = http.get(&comps).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = upstream.last_headers();
    assert_eq!(seen["x-portcullis-subject"], key_id.as_str());
    assert_eq!(seen["x-portcullis-subject-kind"], "service_account");
    assert_eq!(seen["x-portcullis-scopes"], "comps:read");
    assert!(!seen.contains_key("x-portcullis-org-role"));
    let res = http
        .get(format!("{}/api/v1/orgs/org_b/comps", gw.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    // The management API, mounted by the gateway: create, use, revoke, refused at once.
    let res = http
        .post(format!("{}/api/v1/api-keys", gw.url))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "ci", "scopes": ["comps:read"], "expires_in_days": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created = json(res).await;
    let api_key = created["key"].as_str().unwrap();
    assert_eq!(
        http.get(&comps)
            .bearer_auth(api_key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let res = http
        .delete(format!(
            "{}/api/v1/api-keys/{}",
            gw.url,
            created["id"].as_str().unwrap()
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        http.get(&comps)
            .bearer_auth(api_key)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let res = http
        .get(format!("{}/api/v1/api-keys", gw.url))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "the management API checks its own scope");

    // A sensitive route records its decision before forwarding.
    let res = http
        .delete(format!("{}/api/v1/orgs/org_a/reports/r1", gw.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    assert_eq!(gw.terminate().await, 0, "a clean shutdown");
    let (code, out, err) = setup
        .run(&["audit", "verify", setup.audit_file().to_str().unwrap()])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let events = setup.audit_events();
    let has = |action: &str, reason: Option<&str>| {
        events.iter().any(|e| {
            e["action"] == action && reason.is_none_or(|r| e["reason"].as_str() == Some(r))
        })
    };
    assert!(has("api_key.created", None));
    assert!(has("api_key.revoked", None));
    assert!(has("authz.denied", Some("insufficient_scope")));
    assert!(has("authz.denied", Some("no_route")));
    assert!(has("org.forbidden", None));
    assert!(has("authn.failed", Some("unauthorized")));
    assert!(has("authn.failed", Some("invalid_token")));
    let allowed = events
        .iter()
        .find(|e| e["action"] == "authz.allowed")
        .expect("the sensitive decision was recorded");
    assert_eq!(allowed["sensitive"], true);
    assert_eq!(allowed["actor"]["id"], "user_admin");
    let cli = events
        .iter()
        .find(|e| e["action"] == "api_key.created" && e["actor"]["kind"] == "operator")
        .expect("the CLI's creation was recorded");
    assert_eq!(cli["actor"]["id"], "cli:tester");
    // No credential in the trail.
    let trail = std::fs::read_to_string(setup.audit_file()).unwrap();
    assert!(!trail.contains(&admin) && !trail.contains(&key) && !trail.contains(api_key));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_is_enforced_on_sqlite() {
    the_policy_is_enforced(Db::Sqlite, "policy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_is_enforced_on_postgres() {
    the_policy_is_enforced(Db::Postgres, "policy").await;
}

/// 50 MB up and 50 MB down through the gateway, without its memory growing with the body.
async fn bodies_stream(db: Db, name: &str) {
    let issuer = Issuer::start().await;
    let upstream = Upstream::start().await;
    let setup = Setup::new(db, name, &issuer, &upstream.url).await;
    let gw = setup.start().await;
    let http = client();
    let token = issuer.token("user_admin", "org_a", ALL);
    let files = format!("{}/api/v1/orgs/org_a/files", gw.url);
    // Warm up, then take the baseline.
    assert_eq!(
        http.get(format!("{}/public/status", gw.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let baseline = gw.peak_rss_kib();

    const CHUNK: usize = 256 * 1024;
    const UPLOAD: usize = 50 * 1024 * 1024;
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
        (0..UPLOAD / CHUNK).map(|_| Ok::<_, std::io::Error>(vec![7u8; CHUNK])),
    ));
    let res = http
        .post(&files)
        .bearer_auth(&token)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["received"], UPLOAD);

    let res = http.get(&files).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let mut received = 0;
    while let Some(chunk) = stream.next().await {
        received += chunk.unwrap().len();
    }
    assert_eq!(received, support::DOWNLOAD_BYTES);

    let grown = gw.peak_rss_kib().saturating_sub(baseline);
    eprintln!("peak RSS {baseline} KiB before, grew by {grown} KiB over 100 MB streamed");
    assert!(
        grown < 16 * 1024,
        "memory grew by {grown} KiB: a body was buffered"
    );
    gw.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_stream_with_flat_memory_on_sqlite() {
    bodies_stream(Db::Sqlite, "stream").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_stream_with_flat_memory_on_postgres() {
    bodies_stream(Db::Postgres, "stream").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_upstream_is_a_502_and_audited() {
    let issuer = Issuer::start().await;
    // A port that was free a moment ago: nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let setup = Setup::new(Db::Sqlite, "down", &issuer, &closed).await;
    let gw = setup.start().await;
    let token = issuer.token("user_admin", "org_a", ALL);
    let res = client()
        .get(format!("{}/api/v1/orgs/org_a/comps", gw.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let body = json(res).await;
    assert_eq!(body["error"], "bad_gateway");
    assert!(body["request_id"].is_string());
    gw.terminate().await;
    let failed = setup
        .audit_events()
        .into_iter()
        .find(|e| e["action"] == "proxy.upstream_failed")
        .expect("the failure was audited");
    assert_eq!(failed["reason"], "upstream_unreachable");
    assert_eq!(failed["actor"]["id"], "user_admin");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_upstream_is_a_504_and_shutdown_drains_in_flight_requests() {
    let issuer = Issuer::start().await;
    let upstream = Upstream::start().await;
    let mut setup = Setup::new(Db::Sqlite, "slow", &issuer, &upstream.url).await;
    setup.set("PORTCULLIS_UPSTREAM_TIMEOUT_SECS", "1");
    let gw = setup.start().await;
    let token = issuer.token("user_admin", "org_a", ALL);
    let slow = format!("{}/api/v1/orgs/org_a/slow", gw.url);
    let res = client()
        .get(&slow)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 504);
    gw.terminate().await;

    // With time enough, a request in flight when SIGTERM arrives still gets its answer.
    setup.set("PORTCULLIS_UPSTREAM_TIMEOUT_SECS", "10");
    let gw = setup.start().await;
    let slow = format!("{}/api/v1/orgs/org_a/slow", gw.url);
    let in_flight = tokio::spawn({
        let token = token.clone();
        async move { client().get(&slow).bearer_auth(&token).send().await }
    });
    // SIGTERM once the request is in the upstream's hands (not after a guessed delay).
    let before = upstream.requests();
    let start = std::time::Instant::now();
    while upstream.requests() == before {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gw.terminate().await, 0);
    let res = in_flight.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "slow answer");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_clients_are_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let issuer = Issuer::start().await;
    let upstream = Upstream::start().await;
    let mut setup = Setup::new(Db::Sqlite, "client-timeout", &issuer, &upstream.url).await;
    setup.set("PORTCULLIS_CLIENT_TIMEOUT_SECS", "1");
    let gw = setup.start().await;
    let addr = gw.url.trim_start_matches("http://").to_owned();
    // Whether the gateway closes the connection within `within`, answering nothing more.
    async fn closed_within(conn: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 1024];
        matches!(
            tokio::time::timeout(within, conn.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    // A request head that never ends.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert!(closed_within(&mut slow, Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A kept-alive connection serves requests that come in time, and is closed once idle.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    for _ in 0..2 {
        idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    gw.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness() {
    let issuer = Issuer::start().await;
    let upstream = Upstream::start().await;
    let mut setup = Setup::new(Db::Sqlite, "ready", &issuer, &upstream.url).await;
    let gw = setup.start().await;
    let http = client();
    let res = http
        .get(format!("{}/healthz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = http.get(format!("{}/readyz", gw.url)).send().await.unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    gw.terminate().await;

    // An issuer whose JWKS cannot be fetched: alive, not ready, and JWTs get 503.
    setup.set("PORTCULLIS_JWKS_URL", "http://127.0.0.1:9/jwks.json");
    let gw = setup.start().await;
    let res = http
        .get(format!("{}/healthz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = http.get(format!("{}/readyz", gw.url)).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(json(res).await["failing"], serde_json::json!(["jwks"]));
    let res = http
        .get(format!("{}/api/v1/orgs/org_a/comps", gw.url))
        .bearer_auth(issuer.token("user_admin", "org_a", ALL))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    gw.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callout_guard_can_deny_and_fails_closed() {
    let issuer = Issuer::start().await;
    let upstream = Upstream::start().await;
    let mut setup = Setup::new(Db::Sqlite, "guard", &issuer, &upstream.url).await;
    let policy = setup.dir.path().join("guarded.toml");
    std::fs::write(
        &policy,
        format!(
            "[[routes]]\npath = \"/api/v1/orgs/{{org}}/instruments/{{id}}/run\"\nmethods = [\"POST\"]\nscopes = [\"comps:read\"]\nguard = {{ url = \"{}/guard\", timeout_ms = 2000 }}\n",
            upstream.url
        ),
    )
    .unwrap();
    setup.set("PORTCULLIS_POLICY", policy.to_str().unwrap());
    let gw = setup.start().await;
    let token = issuer.token("user_admin", "org_a", ALL);
    let run = |id: &str| {
        client()
            .post(format!("{}/api/v1/orgs/org_a/instruments/{id}/run", gw.url))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(run("ok1").await.unwrap().status(), 200);
    let res = run("blocked7").await.unwrap();
    assert_eq!(res.status(), 403);
    let body = json(res).await;
    assert_eq!(body["error"], "guard_denied");
    assert_eq!(body["reason"], "checklist incomplete for user_admin");
    let res = run("hang").await.unwrap();
    assert_eq!(
        res.status(),
        503,
        "a guard that does not answer in time fails closed"
    );
    // A guard runs after authorization: a missing scope never reaches it.
    let res = client()
        .post(format!(
            "{}/api/v1/orgs/org_a/instruments/blocked/run",
            gw.url
        ))
        .bearer_auth(issuer.token("user_x", "org_a", &["audit:read"]))
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["error"], "insufficient_scope");
    gw.terminate().await;
    let denied = setup
        .audit_events()
        .into_iter()
        .find(|e| e["action"] == "guard.denied")
        .expect("the guard's refusal was audited");
    assert!(
        denied["reason"]
            .as_str()
            .unwrap()
            .contains("checklist incomplete")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configuration_exits_2_naming_the_key() {
    let issuer = Issuer::start().await;
    let upstream = Upstream::start().await;
    let mut setup = Setup::new(Db::Sqlite, "config", &issuer, &upstream.url).await;
    let bad_policy = setup.dir.path().join("bad.toml");
    std::fs::write(
        &bad_policy,
        "[[routes]]\npath = \"/ok\"\n[[routes]]\npath = \"/x\"\nscopes = [\"pizza:eat\"]\n",
    )
    .unwrap();
    let cases = [
        (
            "PORTCULLIS_POLICY",
            bad_policy.to_str().unwrap(),
            "routes[1] (path `/x`)",
        ),
        ("PORTCULLIS_UPSTREAM", "ftp://x", "PORTCULLIS_UPSTREAM"),
        (
            "PORTCULLIS_API_KEY_SECRET",
            "short",
            "PORTCULLIS_API_KEY_SECRET",
        ),
        ("STRICT_SCOPES", "perhaps", "STRICT_SCOPES"),
        ("PORTCULLIS_LISTEN", "here", "PORTCULLIS_LISTEN"),
    ];
    for (key, value, named) in cases {
        let saved = setup.env.clone();
        setup.set(key, value);
        let (code, _, err) = setup.run(&["serve"]).await;
        assert_eq!(code, 2, "{key}={value}: {err}");
        assert!(err.contains(named), "{key}={value}: {err}");
        setup.env = saved;
    }
    setup.env.retain(|(k, _)| k != "PORTCULLIS_API_KEY_SECRET");
    let (code, _, err) = setup.run(&["serve"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("PORTCULLIS_API_KEY_SECRET"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_cli_and_access_review() {
    let issuer = Issuer::start().await;
    let upstream = Upstream::start().await;
    let setup = Setup::new(Db::Sqlite, "review", &issuer, &upstream.url).await;
    let (_, active) = setup.create_key("org_a", "comps:read").await;
    let (_, revoked) = setup.create_key("org_a", "comps:read,reports:read").await;
    let (_, other_org) = setup.create_key("org_b", "comps:read").await;
    let (code, out, err) = setup
        .run(&[
            "keys", "revoke", "--org", "org_a", &revoked, "--by", "tester",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&revoked));
    let (code, _, _) = setup
        .run(&["keys", "revoke", "--org", "org_a", &other_org])
        .await;
    assert_eq!(code, 1, "another org's key cannot be revoked");

    let (code, out, _) = setup
        .run(&["keys", "list", "--org", "org_a", "--format", "json"])
        .await;
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["keys"].as_array().unwrap().len(), 2);
    assert!(
        !out.contains("pc_sk_") || !out.contains("hash"),
        "no secret is listed"
    );

    let (code, out, _) = setup
        .run(&[
            "review",
            "--org",
            "org_a",
            "--format",
            "json",
            "--expiring-days",
            "60",
        ])
        .await;
    assert_eq!(code, 0);
    let review: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(review["summary"]["revoked"], 1);
    assert_eq!(
        review["summary"]["expiring"], 1,
        "a 30-day key expires within 60 days"
    );
    let status_of = |id: &str| {
        review["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status_of(&active), "expiring");
    assert_eq!(status_of(&revoked), "revoked");

    let (code, out, _) = setup.run(&["review", "--org", "org_a"]).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with("# Access review: API keys of `org_a`"),
        "{out}"
    );
    assert!(out.contains(&format!("| revoked | `{revoked}` |")), "{out}");

    let (code, _, err) = setup
        .run(&[
            "keys",
            "create",
            "--org",
            "org_a",
            "--name",
            "x",
            "--scopes",
            "pizza:eat",
        ])
        .await;
    assert_eq!(code, 2);
    assert!(err.contains("pizza:eat"));
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_names_the_first_bad_line() {
    let issuer = Issuer::start().await;
    let upstream = Upstream::start().await;
    let setup = Setup::new(Db::Sqlite, "verify", &issuer, &upstream.url).await;
    for _ in 0..3 {
        setup.create_key("org_a", "comps:read").await;
    }
    let file = setup.audit_file();
    let (code, out, _) = setup
        .run(&["audit", "verify", file.to_str().unwrap()])
        .await;
    assert_eq!(code, 0);
    assert!(out.contains("ok, 3 events"), "{out}");
    let text = std::fs::read_to_string(&file).unwrap();
    let tampered = text.replacen("cli:tester", "cli:mallory", 2);
    let second = tampered.lines().nth(1).unwrap().to_owned();
    assert!(second.contains("mallory"));
    let first_changed = tampered
        .lines()
        .zip(text.lines())
        .position(|(a, b)| a != b)
        .unwrap()
        + 1;
    std::fs::write(&file, tampered).unwrap();
    let (code, _, err) = setup
        .run(&["audit", "verify", file.to_str().unwrap()])
        .await;
    assert_eq!(code, 1);
    assert!(err.contains(&format!("line {first_changed}")), "{err}");
}

/// node `jose` verifies the forwarded assertion against the gateway's published JWKS.
async fn jose_verify(jwks_url: &str, token: &str, issuer: &str, audience: &str) -> Value {
    let request = serde_json::json!({"jwks_url": jwks_url, "token": token, "issuer": issuer, "audience": audience});
    support::node_peer("verify.mjs", &request).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_assertion_of_the_identity_verifies_with_jose() {
    let issuer = Issuer::start().await;
    let upstream = Upstream::start().await;
    let mut setup = Setup::new(Db::Sqlite, "assert", &issuer, &upstream.url).await;
    let key = setup.dir.path().join("assertion.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            key.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    setup.set("PORTCULLIS_ASSERTION_KEY", key.to_str().unwrap());
    setup.set("PORTCULLIS_ASSERTION_AUDIENCE", "https://comps.internal");
    let gw = setup.start().await;
    let token = issuer.token("user_admin", "org_a", &["comps:read", "audit:read"]);
    let res = client()
        .get(format!("{}/api/v1/orgs/org_a/comps", gw.url))
        .bearer_auth(&token)
        .header("x-portcullis-assertion", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let assertion = upstream.last_headers()["x-portcullis-assertion"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(assertion, "forged");
    let jwks_url = format!("{}/.well-known/portcullis/jwks.json", gw.url);
    let verified = jose_verify(
        &jwks_url,
        &assertion,
        "portcullis-gateway",
        "https://comps.internal",
    )
    .await;
    assert_eq!(verified["ok"], true, "{verified}");
    let claims = &verified["payload"];
    assert_eq!(claims["sub"], "user_admin");
    assert_eq!(claims["sub_kind"], "user");
    assert_eq!(claims["org_id"], "org_a");
    assert_eq!(claims["org_role"], "admin");
    assert_eq!(claims["scope"], "audit:read comps:read");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
    // A wrong audience does not verify: the check above can fail.
    let wrong = jose_verify(&jwks_url, &assertion, "portcullis-gateway", "https://other").await;
    assert_eq!(wrong["ok"], false);

    // Public routes get no assertion, and a forged one is removed.
    let res = client()
        .get(format!("{}/public/status", gw.url))
        .header("x-portcullis-assertion", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        !upstream
            .last_headers()
            .contains_key("x-portcullis-assertion")
    );
    gw.terminate().await;
}
