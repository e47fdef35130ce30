//! PostgreSQL made unavailable through a fault-injecting TCP proxy on loopback (the shared server
//! keeps running): sensitive actions are refused, routine events are spooled and appear in the
//! table once the database is reachable again; counts in = counts out.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use portcullis_audit::{Auditor, AuditorConfig, PgAuditSink};
use portcullis_core::audit::{AuditEvent, AuditSink, Outcome};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// A TCP proxy to 127.0.0.1:5432 that can cut every connection and refuse new ones.
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    cut: Arc<Notify>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(Notify::new());
        let (d, c) = (down.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let c = c.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect("127.0.0.1:5432").await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = c.notified() => {}
                    }
                });
            }
        });
        Self { port, down, cut }
    }

    fn fail(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_refuses_sensitive_actions_and_loses_no_routine_event() {
    let schema = format!("audit_outage_{}", std::process::id());
    portcullis_test_support::fresh_schema(&schema).await;
    let proxy = Proxy::start().await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/test?options=-c%20search_path%3D{schema}",
        proxy.port
    );
    let sink = PgAuditSink::connect(&url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = AuditorConfig::new(dir.path().join("audit.spool"));
    config.sensitive_timeout = Duration::from_secs(2);
    config.attempts = 2;
    let (auditor, task) = Auditor::start(sink.clone(), config).unwrap();

    let routine = |i: usize| {
        AuditEvent::new("authn.failed", Outcome::Failure).target("request", i.to_string())
    };
    for i in 0..20 {
        auditor.record(routine(i)).await.unwrap();
    }
    auditor.flush().await;
    auditor
        .record_sensitive(AuditEvent::new("authz.allowed", Outcome::Success).sensitive())
        .await
        .unwrap();

    // The database becomes unreachable.
    proxy.fail();
    let refused = auditor
        .record_sensitive(
            AuditEvent::new("authz.allowed", Outcome::Success)
                .reason("during outage")
                .sensitive(),
        )
        .await;
    assert!(
        refused.is_err(),
        "a sensitive action is refused (503) while its event cannot be stored"
    );
    for i in 20..70 {
        auditor.record(routine(i)).await.unwrap();
    }
    auditor.flush().await;
    assert!(
        auditor.stats().spooled.load(Ordering::SeqCst) >= 50,
        "routine events wait in the spool"
    );

    // It returns: the spool reaches the table.
    proxy.restore();
    let mut stored = 0;
    for _ in 0..100 {
        auditor.flush().await;
        stored = sink.count().await.unwrap_or(0);
        if stored == 71 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stored, 71,
        "70 routine + 1 sensitive: counts in = counts out"
    );
    assert_eq!(auditor.stats().lost.load(Ordering::SeqCst), 0);
    let during: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM portcullis_audit_events WHERE event->>'reason' = 'during outage'",
    )
    .fetch_one(sink.pool())
    .await
    .unwrap();
    assert_eq!(during, 0, "the refused action has no success record");
    drop(auditor);
    task.join().await;
}
