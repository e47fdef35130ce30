//! Test-only helpers shared by the Portcullis crates (never a dependency of a library).
//!
//! Tests talk to the real PostgreSQL of the machine (`127.0.0.1:5432`, trust authentication,
//! database `test`). Each test works in a schema of its own, so that tests run in parallel and
//! a rerun starts clean.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use portcullis_core::audit::{AuditEvent, AuditSink, AuditUnavailable, RecordFuture};

/// The PostgreSQL every test uses.
pub const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Drop and create the schema `schema` (a plain identifier: letters, digits, `_`).
pub async fn fresh_schema(schema: &str) {
    use sqlx::Connection;
    assert!(
        schema
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "a schema name is a plain identifier"
    );
    let mut admin = sqlx::PgConnection::connect(PG)
        .await
        .expect("PostgreSQL runs on 127.0.0.1:5432");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; \
         GRANT USAGE ON SCHEMA {schema} TO PUBLIC;"
    )))
    .execute(&mut admin)
    .await
    .expect("the schema can be made");
}

/// A URL of `base` whose connections work in `schema` and name themselves after it
/// (`application_name`), so that a test can find, or cut, its own connections.
pub fn schema_url(base: &str, schema: &str) -> String {
    format!("{base}?options=-c%20search_path%3D{schema}&application_name={schema}")
}

/// A fresh schema `<name>_<process id>` on [`PG`], and the URL that works in it.
pub async fn pg_schema(name: &str) -> String {
    let schema = format!("{name}_{}", std::process::id());
    fresh_schema(&schema).await;
    schema_url(PG, &schema)
}

/// The Node.js peers of `tests/peers` (node `jose`, `oidc-provider`, `svix`), installed by
/// `tests/peers/install.sh`, which the test command runs.
pub fn node_peers() -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers");
    assert!(
        dir.join("node_modules/.package-lock.sha256").exists(),
        "the node peers are not installed: run tests/peers/install.sh (the test command does)"
    );
    dir
}

/// Run one of the Node.js peers: one JSON request on stdin, one JSON answer on stdout.
pub async fn node_peer(script: &str, request: &serde_json::Value) -> serde_json::Value {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("node")
        .arg(node_peers().join(script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(request.to_string().as_bytes())
        .await
        .expect("the peer reads its request");
    drop(stdin);
    let out = child.wait_with_output().await.expect("the peer ends");
    assert!(out.status.success(), "{script} failed");
    serde_json::from_slice(&out.stdout).expect("the peer answers JSON")
}

/// An audit sink that keeps the events it is given, and refuses every event while it is
/// [down](Self::set_down), as a sink whose store is unreachable does.
#[derive(Debug, Default)]
pub struct RecordingSink {
    events: Mutex<Vec<AuditEvent>>,
    down: AtomicBool,
}

impl RecordingSink {
    /// The events taken so far, oldest first.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events
            .lock()
            .expect("no test panicked holding it")
            .clone()
    }

    /// Refuse (`true`) or take (`false`) the events that follow.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn take(&self, event: AuditEvent) -> RecordFuture {
        let result = if self.down.load(Ordering::SeqCst) {
            Err(AuditUnavailable)
        } else {
            self.events
                .lock()
                .expect("no test panicked holding it")
                .push(event);
            Ok(())
        };
        Box::pin(std::future::ready(result))
    }
}

impl AuditSink for RecordingSink {
    fn record_sensitive(&self, event: AuditEvent) -> RecordFuture {
        self.take(event)
    }

    fn record(&self, event: AuditEvent) -> RecordFuture {
        self.take(event)
    }
}
