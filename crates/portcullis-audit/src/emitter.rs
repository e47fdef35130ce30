//! The emitter: takes events from every layer and writes them in batches, losing none silently.

use std::{
    fs::{File, OpenOptions},
    future::Future,
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use portcullis_core::audit::{AuditEvent, AuditSink, AuditUnavailable, Outcome, RecordFuture};
use tokio::sync::{mpsc, oneshot};

use crate::{JsonlSink, PgAuditSink};

/// A boxed future of writing a batch.
pub type WriteFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Where the emitter's writer puts batches: a JSON Lines file, PostgreSQL, or anything else.
pub trait EventWriter: Send + Sync + 'static {
    /// Write `events` durably, or fail (the emitter retries, then spools).
    fn write<'a>(&'a self, events: &'a [AuditEvent]) -> WriteFuture<'a>;
}

impl<W: EventWriter> EventWriter for Arc<W> {
    fn write<'a>(&'a self, events: &'a [AuditEvent]) -> WriteFuture<'a> {
        (**self).write(events)
    }
}

/// A [`JsonlSink`] as the emitter's writer (appends run on the blocking pool).
#[derive(Clone, Debug)]
pub struct JsonlWriter(Arc<Mutex<JsonlSink>>);

impl JsonlWriter {
    /// Write through `sink`.
    pub fn new(sink: JsonlSink) -> Self {
        Self(Arc::new(Mutex::new(sink)))
    }
}

impl EventWriter for JsonlWriter {
    fn write<'a>(&'a self, events: &'a [AuditEvent]) -> WriteFuture<'a> {
        let sink = self.0.clone();
        let events = events.to_vec();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                sink.lock()
                    .map_err(|_| "the audit file lock is poisoned".to_owned())?
                    .append(&events)
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())?
        })
    }
}

impl EventWriter for PgAuditSink {
    fn write<'a>(&'a self, events: &'a [AuditEvent]) -> WriteFuture<'a> {
        Box::pin(async move {
            self.insert(events)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// One JSON object per line on standard output, for log shippers (no hash chain: the shipper's
/// store is the record).
#[derive(Clone, Copy, Debug, Default)]
pub struct StdoutWriter;

impl EventWriter for StdoutWriter {
    fn write<'a>(&'a self, events: &'a [AuditEvent]) -> WriteFuture<'a> {
        let mut out = Vec::with_capacity(events.len() * 512);
        for event in events {
            if let Err(e) = serde_json::to_writer(&mut out, event) {
                return Box::pin(std::future::ready(Err(e.to_string())));
            }
            out.push(b'\n');
        }
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&out)?;
                stdout.flush()
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
        })
    }
}

/// How the emitter queues, waits and spools.
#[derive(Clone, Debug)]
pub struct AuditorConfig {
    /// Events queued in memory (default 10 000).
    pub queue: usize,
    /// Most events written in one batch (default 4096: a full batch is what sustains PostgreSQL;
    /// under light load a batch is whatever is queued).
    pub batch: usize,
    /// How long a routine event waits for room in a full queue before it is spooled (100 ms).
    pub block_for: Duration,
    /// How long a sensitive event may take to be written before the action is refused (2 s).
    pub sensitive_timeout: Duration,
    /// Attempts at a failing batch before its routine events are spooled (3).
    pub attempts: u32,
    /// How long the writer waits after the first event of a batch for more (1 ms).
    pub linger: Duration,
    /// The spool file: routine events that could not be queued or written wait here, on disk.
    pub spool: PathBuf,
    /// The largest spool, in bytes (64 MiB); past it events are refused (503) and counted.
    pub spool_max_bytes: u64,
}

impl AuditorConfig {
    /// Defaults, spooling to `spool`.
    pub fn new(spool: impl Into<PathBuf>) -> Self {
        Self {
            queue: 10_000,
            batch: 4096,
            block_for: Duration::from_millis(100),
            sensitive_timeout: Duration::from_secs(2),
            attempts: 3,
            linger: Duration::from_millis(1),
            spool: spool.into(),
            spool_max_bytes: 64 * 1024 * 1024,
        }
    }
}

// Nearly every message is an event; boxing them would add an allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Event(
        AuditEvent,
        Option<oneshot::Sender<Result<(), AuditUnavailable>>>,
    ),
    Flush(oneshot::Sender<()>),
}

/// Counts, for metrics and tests.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Events written to the sink.
    pub written: AtomicU64,
    /// Events that went to the spool.
    pub spooled: AtomicU64,
    /// Events that could not be recorded at all (each one also counted in an `audit.gap` event).
    pub lost: AtomicU64,
    /// Whether the last batch failed every attempt (the sink is down); cleared by the next
    /// batch that is written.
    pub failing: AtomicBool,
}

/// The emitter: an [`AuditSink`] in front of an [`EventWriter`].
///
/// - **Sensitive events** are written before `record_sensitive` resolves; when the sink cannot
///   take them within the timeout it resolves to `Err`, and the caller refuses the action (503).
/// - **Routine events** go to a bounded queue drained by one writer task in batches. When the
///   queue is full, `record` waits (bounded), then appends the event to the spool file
///   (fsync'd), and only when the spool is full or failing refuses it with `Err`. A batch that
///   keeps failing is spooled, never dropped; the spool is replayed once the sink writes again.
///   Every event that could not be recorded is counted, and an `audit.gap` event with the count
///   is written as soon as the sink works.
/// - [`Auditor::flush`] waits for everything accepted so far to be written; dropping every
///   clone lets the writer drain the queue and the spool and stop ([`AuditorTask::join`]).
#[derive(Clone, Debug)]
pub struct Auditor {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: AuditorConfig,
    spool: Mutex<Spool>,
    stats: AuditStats,
}

/// The writer task of an [`Auditor`].
#[derive(Debug)]
pub struct AuditorTask(tokio::task::JoinHandle<()>);

impl AuditorTask {
    /// Wait for the writer to drain and stop (once every [`Auditor`] clone is dropped).
    pub async fn join(self) {
        let _ = self.0.await;
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl Auditor {
    /// Start the writer task (on the current tokio runtime) writing to `writer`.
    pub fn start(
        writer: impl EventWriter,
        config: AuditorConfig,
    ) -> std::io::Result<(Self, AuditorTask)> {
        let spool = Spool::open(config.spool.clone(), config.spool_max_bytes)?;
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let shared = Arc::new(Shared {
            config,
            spool: Mutex::new(spool),
            stats: AuditStats::default(),
        });
        let task = tokio::spawn(run(writer, rx, shared.clone()));
        Ok((Self { tx, shared }, AuditorTask(task)))
    }

    /// Wait until every event accepted before this call is written (or spooled, if the sink is
    /// down) and the spool was replayed if it could be.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// The counters.
    pub fn stats(&self) -> &AuditStats {
        &self.shared.stats
    }

    /// Whether the sink took the last batch (readiness probes): `false` while batches fail.
    pub fn is_healthy(&self) -> bool {
        !self.shared.stats.failing.load(Ordering::Relaxed) && !self.tx.is_closed()
    }
}

impl AuditSink for Auditor {
    fn record_sensitive(&self, event: AuditEvent) -> RecordFuture {
        let tx = self.tx.clone();
        let shared = self.shared.clone();
        Box::pin(async move {
            let (ack, written) = oneshot::channel();
            let deadline = shared.config.sensitive_timeout;
            let sent = tokio::time::timeout(deadline, tx.send(Msg::Event(event, Some(ack)))).await;
            if !matches!(sent, Ok(Ok(()))) {
                return Err(AuditUnavailable);
            }
            match tokio::time::timeout(deadline, written).await {
                Ok(Ok(result)) => result,
                _ => Err(AuditUnavailable),
            }
        })
    }

    fn record(&self, event: AuditEvent) -> RecordFuture {
        let msg = match self.tx.try_send(Msg::Event(event, None)) {
            Ok(()) => return Box::pin(std::future::ready(Ok(()))),
            Err(mpsc::error::TrySendError::Full(msg) | mpsc::error::TrySendError::Closed(msg)) => {
                msg
            }
        };
        let tx = self.tx.clone();
        let shared = self.shared.clone();
        Box::pin(async move {
            // Backpressure, bounded; then the spool; then refusal.
            let msg = match tokio::time::timeout(shared.config.block_for, tx.reserve()).await {
                Ok(Ok(permit)) => {
                    permit.send(msg);
                    return Ok(());
                }
                _ => msg,
            };
            let Msg::Event(event, _) = msg else {
                unreachable!("only events are recorded")
            };
            shared.spool_or_lose(std::slice::from_ref(&event))
        })
    }
}

impl Shared {
    fn spool_or_lose(&self, events: &[AuditEvent]) -> Result<(), AuditUnavailable> {
        let appended = self
            .spool
            .lock()
            .map_err(|_| AuditUnavailable)
            .and_then(|mut s| s.append(events).map_err(|_| AuditUnavailable));
        match appended {
            Ok(()) => {
                self.stats
                    .spooled
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.stats
                    .lost
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                tracing::error!(target: "portcullis::audit", count = events.len(), "audit events could not be recorded; an audit.gap event will say so");
                Err(e)
            }
        }
    }
}

async fn run(writer: impl EventWriter, mut rx: mpsc::Receiver<Msg>, shared: Arc<Shared>) {
    let config = shared.config.clone();
    let mut reported_lost = 0u64;
    let mut last_batch = 0usize;
    loop {
        let Some(first) = rx.recv().await else {
            // Every sender is gone: write what the spool holds, then stop.
            replay(&writer, &shared).await;
            return;
        };
        // Under light load, linger so that events arriving meanwhile join the batch and their
        // senders find the writer busy rather than parked (waking it is most of an event's
        // cost). Under load the batches are full and the writer never waits.
        if !config.linger.is_zero() && last_batch < config.batch / 4 {
            tokio::time::sleep(config.linger).await;
        }
        let mut msgs = vec![first];
        while msgs.len() < config.batch {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(_) => break,
            }
        }
        last_batch = msgs.len();
        let mut events = Vec::with_capacity(msgs.len());
        // Whether a caller waits on the event (record_sensitive): its action proceeds only on
        // success, so once refused, the event must not be written later.
        let mut awaited = Vec::with_capacity(msgs.len());
        let mut acks = Vec::new();
        let mut flushes = Vec::new();
        for m in msgs {
            match m {
                Msg::Event(e, ack) => {
                    awaited.push(ack.is_some());
                    if let Some(ack) = ack {
                        acks.push(ack);
                    }
                    events.push(e);
                }
                Msg::Flush(done) => flushes.push(done),
            }
        }
        // A gap is reported in the trail itself as soon as anything can be written.
        let lost = shared.stats.lost.load(Ordering::Relaxed);
        if lost > reported_lost {
            awaited.push(false);
            events.push(
                AuditEvent::new("audit.gap", Outcome::Failure).reason(format!(
                    "{} audit events could not be recorded",
                    lost - reported_lost
                )),
            );
        }
        let mut written = events.is_empty();
        for attempt in 0..config.attempts.max(1) {
            if written {
                break;
            }
            match writer.write(&events).await {
                Ok(()) => written = true,
                Err(e) => {
                    tracing::warn!(target: "portcullis::audit", error = %e, attempt, "audit write failed");
                    // Awaited events fail closed at once: their actions must not wait, and will
                    // not happen, so their records are dropped from the batch.
                    if !acks.is_empty() {
                        for ack in acks.drain(..) {
                            let _ = ack.send(Err(AuditUnavailable));
                        }
                        let mut keep = awaited.iter().map(|a| !a);
                        events.retain(|_| keep.next().unwrap_or(true));
                        awaited.retain(|a| !a);
                        written = events.is_empty();
                    }
                    tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
                }
            }
        }
        shared.stats.failing.store(!written, Ordering::Relaxed);
        if written {
            shared
                .stats
                .written
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            reported_lost = lost;
            for ack in acks {
                let _ = ack.send(Ok(()));
            }
            replay(&writer, &shared).await;
        } else {
            // The rest waits on disk (awaited events were dropped above); a gap record is made
            // again from the counter.
            let routine: Vec<AuditEvent> = events
                .into_iter()
                .filter(|e| e.action != "audit.gap")
                .collect();
            let _ = shared.spool_or_lose(&routine);
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Write the spool's events to the sink and empty it, if the sink takes them.
async fn replay(writer: &impl EventWriter, shared: &Shared) {
    let pending = match shared.spool.lock() {
        Ok(mut spool) => spool.read_all(),
        Err(_) => return,
    };
    let Ok(pending) = pending else {
        return;
    };
    if pending.is_empty() {
        return;
    }
    for chunk in pending.chunks(shared.config.batch.max(1)) {
        if writer.write(chunk).await.is_err() {
            return;
        }
    }
    shared
        .stats
        .written
        .fetch_add(pending.len() as u64, Ordering::Relaxed);
    if let Ok(mut spool) = shared.spool.lock() {
        // Events spooled while replaying stay for the next replay; only what was read goes.
        let _ = spool.drop_first(pending.len());
    }
}

/// A JSON Lines file of events waiting for the sink.
#[derive(Debug)]
struct Spool {
    path: PathBuf,
    file: File,
    bytes: u64,
    max: u64,
}

impl Spool {
    fn open(path: PathBuf, max: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let bytes = file.metadata()?.len();
        Ok(Self {
            path,
            file,
            bytes,
            max,
        })
    }

    fn append(&mut self, events: &[AuditEvent]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for e in events {
            serde_json::to_writer(&mut buf, e).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        if self.bytes + buf.len() as u64 > self.max {
            return Err(std::io::Error::other("the audit spool is full"));
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.bytes += buf.len() as u64;
        Ok(())
    }

    fn read_all(&mut self) -> std::io::Result<Vec<AuditEvent>> {
        if self.bytes == 0 {
            return Ok(Vec::new());
        }
        let reader = BufReader::new(File::open(&self.path)?);
        let mut events = Vec::new();
        for line in reader.lines() {
            let line = line?;
            // A torn last line (a crash mid-append) was never acknowledged.
            if let Ok(e) = serde_json::from_str(&line) {
                events.push(e);
            }
        }
        Ok(events)
    }

    /// Remove the first `n` events, keeping any appended since they were read.
    fn drop_first(&mut self, n: usize) -> std::io::Result<()> {
        let content = std::fs::read(&self.path)?;
        let mut cut = 0;
        for _ in 0..n {
            match content[cut..].iter().position(|b| *b == b'\n') {
                Some(i) => cut += i + 1,
                None => {
                    cut = content.len();
                    break;
                }
            }
        }
        let rest = &content[cut..];
        let tmp = self.path.with_extension("spool-tmp");
        std::fs::write(&tmp, rest)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)?;
        self.bytes = rest.len() as u64;
        Ok(())
    }
}
