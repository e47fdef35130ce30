//! The PostgreSQL sink: batched, idempotent inserts through a role that may only insert and read.

use std::time::Duration;

use portcullis_core::audit::AuditEvent;
use sqlx::{
    Executor, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// The role the sink writes through: `INSERT` and `SELECT` on the audit table, nothing else.
pub const WRITER_ROLE: &str = "portcullis_audit_writer";

const MIGRATION: &str = include_str!("../migrations/postgres_0001_audit.sql");

/// A failure of the PostgreSQL sink.
#[derive(Debug)]
pub struct PgSinkError(String);

impl std::fmt::Display for PgSinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "audit store: {}", self.0)
    }
}

impl std::error::Error for PgSinkError {}

fn err(e: sqlx::Error) -> PgSinkError {
    PgSinkError(e.to_string())
}

/// Writes audit events to `portcullis_audit_events` in PostgreSQL.
///
/// [`PgAuditSink::connect`] applies the shipped migration (table, append-only triggers, the
/// [`WRITER_ROLE`]) with the connection's own role, which should own the table, then makes
/// every pooled connection `SET ROLE portcullis_audit_writer`: the sink can insert and read,
/// and the database refuses it, and anyone else, any `UPDATE`, `DELETE` or `TRUNCATE`.
/// Inserts are idempotent by event id, so a batch can be retried safely.
#[derive(Clone, Debug)]
pub struct PgAuditSink {
    pool: PgPool,
}

impl PgAuditSink {
    /// Migrate with `url`'s role, then connect a pool that writes as [`WRITER_ROLE`].
    pub async fn connect(url: &str) -> Result<Self, PgSinkError> {
        let options: PgConnectOptions = url.parse().map_err(err)?;
        {
            let owner = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await
                .map_err(err)?;
            let mut tx = owner.begin().await.map_err(err)?;
            sqlx::raw_sql(MIGRATION)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            tx.commit().await.map_err(err)?;
            owner.close().await;
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(3))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("SET ROLE portcullis_audit_writer").await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(err)?;
        Ok(Self { pool })
    }

    /// Insert `events` in one statement; events already stored (same id) are skipped. Returns
    /// how many rows were new.
    pub async fn insert(&self, events: &[AuditEvent]) -> Result<u64, PgSinkError> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(events.len());
        let mut times = Vec::with_capacity(events.len());
        let mut actions = Vec::with_capacity(events.len());
        let mut outcomes = Vec::with_capacity(events.len());
        let mut orgs: Vec<Option<&str>> = Vec::with_capacity(events.len());
        let mut actors: Vec<Option<&str>> = Vec::with_capacity(events.len());
        let mut sensitive = Vec::with_capacity(events.len());
        let mut bodies = Vec::with_capacity(events.len());
        for e in events {
            ids.push(e.id.as_str());
            times.push(e.time.as_str());
            actions.push(&*e.action);
            outcomes.push(e.outcome.as_str());
            orgs.push(e.org_id.as_ref().map(|o| o.as_str()));
            actors.push(e.actor.as_ref().map(|a| a.id.as_str()));
            sensitive.push(e.sensitive);
            bodies.push(serde_json::to_string(e).map_err(|e| PgSinkError(e.to_string()))?);
        }
        let done = sqlx::query(
            "INSERT INTO portcullis_audit_events \
               (id, time, action, outcome, org_id, actor_id, sensitive, event) \
             SELECT id, time, action, outcome, org_id, actor_id, sensitive, event::jsonb \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                         $7::bool[], $8::text[]) \
               AS t(id, time, action, outcome, org_id, actor_id, sensitive, event) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(ids)
        .bind(times)
        .bind(actions)
        .bind(outcomes)
        .bind(orgs)
        .bind(actors)
        .bind(sensitive)
        .bind(bodies)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(done.rows_affected())
    }

    /// How many events are stored.
    pub async fn count(&self) -> Result<i64, PgSinkError> {
        sqlx::query_scalar("SELECT count(*) FROM portcullis_audit_events")
            .fetch_one(&self.pool)
            .await
            .map_err(err)
    }

    /// The pool (connections act as [`WRITER_ROLE`]).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
