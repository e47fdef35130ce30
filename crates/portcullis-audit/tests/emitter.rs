//! The emitter over the real JSON Lines sink, with faults injected in front of it: nothing is
//! lost under a full queue or a sink outage (counts in = counts out), sensitive events fail
//! closed, and an event that cannot be recorded at all leaves an `audit.gap` in the trail.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use portcullis_audit::{
    Auditor, AuditorConfig, EventWriter, JsonlSink, JsonlWriter, WriteFuture, verify,
};
use portcullis_core::audit::{AuditEvent, AuditSink, Outcome};

/// The real JSON Lines sink behind a switch that makes writes fail, and an optional delay.
struct Faulty {
    sink: JsonlWriter,
    down: AtomicBool,
    delay_ms: AtomicU64,
}

impl EventWriter for Faulty {
    fn write<'a>(&'a self, events: &'a [AuditEvent]) -> WriteFuture<'a> {
        Box::pin(async move {
            let delay = self.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if self.down.load(Ordering::SeqCst) {
                return Err("connection refused".to_owned());
            }
            self.sink.write(events).await
        })
    }
}

fn faulty(path: &Path) -> Arc<Faulty> {
    Arc::new(Faulty {
        sink: JsonlWriter::new(JsonlSink::open(path).unwrap()),
        down: AtomicBool::new(false),
        delay_ms: AtomicU64::new(0),
    })
}

fn routine(i: usize) -> AuditEvent {
    AuditEvent::new("authn.succeeded", Outcome::Success).target("request", i.to_string())
}

fn actions(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_spools_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let writer = faulty(&path);
    writer.delay_ms.store(20, Ordering::SeqCst);
    let mut config = AuditorConfig::new(dir.path().join("audit.spool"));
    config.queue = 4;
    config.batch = 4;
    config.block_for = Duration::from_millis(1);
    let (auditor, task) = Auditor::start(writer.clone(), config).unwrap();

    for i in 0..300 {
        auditor.record(routine(i)).await.unwrap();
    }
    assert!(
        auditor.stats().spooled.load(Ordering::SeqCst) > 0,
        "the queue overflowed to the spool"
    );
    writer.delay_ms.store(0, Ordering::SeqCst);
    auditor.flush().await;
    auditor.flush().await;
    drop(auditor);
    task.join().await;
    assert_eq!(verify(&path).unwrap().events, 300, "counts in = counts out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_outage_fails_sensitive_actions_and_spools_routine_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let writer = faulty(&path);
    let mut config = AuditorConfig::new(dir.path().join("audit.spool"));
    config.sensitive_timeout = Duration::from_millis(500);
    let (auditor, task) = Auditor::start(writer.clone(), config).unwrap();

    auditor
        .record_sensitive(AuditEvent::new("api_key.created", Outcome::Success).sensitive())
        .await
        .unwrap();
    writer.down.store(true, Ordering::SeqCst);
    let refused = auditor
        .record_sensitive(AuditEvent::new("api_key.revoked", Outcome::Success).sensitive())
        .await;
    assert!(
        refused.is_err(),
        "a sensitive action cannot proceed unaudited"
    );
    for i in 0..50 {
        auditor.record(routine(i)).await.unwrap();
    }
    auditor.flush().await;
    assert_eq!(
        verify(&path).unwrap().events,
        1,
        "nothing written while down"
    );

    // The sink returns: the spool is replayed.
    writer.down.store(false, Ordering::SeqCst);
    auditor.record(routine(50)).await.unwrap();
    auditor.flush().await;
    drop(auditor);
    task.join().await;
    let actions = actions(&path);
    assert_eq!(
        actions.iter().filter(|a| *a == "authn.succeeded").count(),
        51,
        "counts in = counts out"
    );
    assert!(
        !actions.iter().any(|a| a == "api_key.revoked"),
        "the refused action left no success record"
    );
    assert!(verify(&path).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_cannot_be_recorded_leave_a_gap_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let writer = faulty(&path);
    let mut config = AuditorConfig::new(dir.path().join("audit.spool"));
    config.queue = 1;
    config.batch = 1;
    config.block_for = Duration::from_millis(1);
    config.attempts = 1;
    config.spool_max_bytes = 2_000;
    let (auditor, task) = Auditor::start(writer.clone(), config).unwrap();
    writer.down.store(true, Ordering::SeqCst);
    let mut refused = 0;
    for i in 0..100 {
        if auditor.record(routine(i)).await.is_err() {
            refused += 1;
        }
    }
    assert!(
        refused > 0,
        "a full spool refuses, so that the caller answers 503"
    );
    assert!(auditor.stats().lost.load(Ordering::SeqCst) > 0);

    // The sink returns: the writer writes the gap record and replays the spool, after which
    // events are accepted again.
    writer.down.store(false, Ordering::SeqCst);
    auditor.flush().await;
    auditor.record(routine(100)).await.unwrap();
    auditor.flush().await;
    let lost = auditor.stats().lost.load(Ordering::SeqCst);
    drop(auditor);
    task.join().await;
    let in_file = actions(&path)
        .iter()
        .filter(|a| *a == "authn.succeeded")
        .count() as u64;
    assert_eq!(
        in_file + lost,
        101,
        "every event is either written or counted in the gap"
    );
    let content = std::fs::read_to_string(&path).unwrap();
    assert!(content.contains("\"audit.gap\""), "the gap is in the trail");
    assert!(content.contains("audit events could not be recorded"));
    assert!(verify(&path).is_ok());
}
