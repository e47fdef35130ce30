//! Revocations stored in the key store's database, and shared by every replica.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use portcullis_apikey::{SqlStore, StoreError};
use portcullis_core::{Principal, PrincipalKind, clock};
use sqlx::{AssertSqlSafe, Row, postgres::PgListener};
use tokio::task::JoinHandle;

use crate::list::{Revocation, RevocationList, Target};

const MIGRATION: &str = include_str!("../migrations/0001_revocation.sql");

/// The PostgreSQL channel revocations are announced on (payload empty: listeners reload).
pub const CHANNEL: &str = "portcullis_revocations";

fn db(e: sqlx::Error) -> StoreError {
    StoreError::new(e.to_string())
}

/// Revocations, memberships and last-seen times in the key store's database, mirrored into a
/// [`RevocationList`].
///
/// On PostgreSQL every change is announced with `NOTIFY` in its own transaction, and
/// [`RevocationStore::watch`] makes each replica reload the list when it hears one — and after
/// its listener reconnects, since notices may have been missed meanwhile.
#[derive(Clone, Debug)]
pub struct RevocationStore {
    store: SqlStore,
    list: RevocationList,
    lifetime: i64,
    seen: Arc<SeenUsers>,
}

impl RevocationStore {
    /// Create the tables if needed and load the revocations in force into `list`.
    ///
    /// `max_token_lifetime` is the longest lifetime of a token the issuer mints, plus leeway:
    /// a revocation is kept that long, after which every token it could refuse has expired.
    pub async fn open(
        store: SqlStore,
        list: RevocationList,
        max_token_lifetime: Duration,
    ) -> Result<Self, StoreError> {
        sqlx::raw_sql(AssertSqlSafe(MIGRATION))
            .execute(store.pool())
            .await
            .map_err(db)?;
        let this = Self {
            store,
            list,
            lifetime: i64::try_from(max_token_lifetime.as_secs()).unwrap_or(i64::MAX / 2),
            seen: Arc::default(),
        };
        this.reload().await?;
        Ok(this)
    }

    /// The list this store keeps current.
    pub fn list(&self) -> &RevocationList {
        &self.list
    }

    fn sql(&self, sql: &str) -> AssertSqlSafe<String> {
        AssertSqlSafe(self.store.placeholders(sql))
    }

    /// Read every revocation in force into the list.
    pub async fn reload(&self) -> Result<usize, StoreError> {
        let rows = sqlx::query(self.sql(
            "SELECT kind, subject, org_id, not_before, expires_at, reason \
             FROM portcullis_revocations WHERE expires_at > ?",
        ))
        .bind(clock::unix_seconds())
        .fetch_all(self.store.pool())
        .await
        .map_err(db)?;
        let entries: Vec<Revocation> = rows
            .iter()
            .filter_map(|row| {
                let target = Target::from_columns(
                    row.try_get::<String, _>(0).ok()?.as_str(),
                    row.try_get(1).ok()?,
                    row.try_get(2).ok()?,
                )?;
                Some(Revocation {
                    target,
                    not_before: row.try_get(3).ok()?,
                    expires_at: row.try_get(4).ok()?,
                    reason: row.try_get(5).ok()?,
                })
            })
            .collect();
        let n = entries.len();
        self.list.replace(entries);
        Ok(n)
    }

    /// The version of the revocations: bumped by every change, in its transaction.
    async fn stamp(&self) -> Result<i64, StoreError> {
        sqlx::query("SELECT version FROM portcullis_revocation_version WHERE id = 1")
            .fetch_one(self.store.pool())
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)
    }

    /// Revoke `target`: tokens issued before `not_before` (all of them when `None`) are refused
    /// from the next request on, here and, on PostgreSQL, on every replica.
    pub async fn revoke(
        &self,
        target: Target,
        not_before: Option<i64>,
        reason: &str,
    ) -> Result<Revocation, StoreError> {
        let now = clock::unix_seconds();
        let revocation = Revocation {
            target,
            not_before,
            expires_at: now.saturating_add(self.lifetime),
            reason: reason.to_owned(),
        };
        let mut tx = self.store.pool().begin().await.map_err(db)?;
        sqlx::query(self.sql(
            "INSERT INTO portcullis_revocations \
             (kind, subject, org_id, not_before, expires_at, created_at, reason) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (kind, subject, org_id) DO UPDATE SET \
             not_before = excluded.not_before, expires_at = excluded.expires_at, \
             created_at = excluded.created_at, reason = excluded.reason",
        ))
        .bind(revocation.target.kind())
        .bind(revocation.target.subject())
        .bind(revocation.target.org())
        .bind(revocation.not_before)
        .bind(revocation.expires_at)
        .bind(now)
        .bind(reason)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        self.announce(&mut tx).await?;
        tx.commit().await.map_err(db)?;
        self.list.insert(revocation.clone());
        Ok(revocation)
    }

    /// Lift the revocation of `target` (an unbanned user); `true` when there was one.
    pub async fn lift(&self, target: &Target) -> Result<bool, StoreError> {
        let mut tx = self.store.pool().begin().await.map_err(db)?;
        let done = sqlx::query(self.sql(
            "DELETE FROM portcullis_revocations WHERE kind = ? AND subject = ? AND org_id = ?",
        ))
        .bind(target.kind())
        .bind(target.subject())
        .bind(target.org())
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        self.announce(&mut tx).await?;
        tx.commit().await.map_err(db)?;
        self.list.remove(target);
        Ok(done > 0)
    }

    /// Mark a change, in its transaction: bump the version (for pollers) and, on PostgreSQL,
    /// notify the listeners (delivered at commit).
    async fn announce(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(), StoreError> {
        sqlx::query("UPDATE portcullis_revocation_version SET version = version + 1 WHERE id = 1")
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        if self.store.is_postgres() {
            sqlx::query(AssertSqlSafe(format!("NOTIFY {CHANNEL}")))
                .execute(&mut **tx)
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    /// Record `role` for (`user`, `org`) as of `at`; returns the role it replaces.
    pub async fn set_role(
        &self,
        user: &str,
        org: &str,
        role: &str,
        at: i64,
    ) -> Result<Option<String>, StoreError> {
        let before = self.role(user, org).await?;
        sqlx::query(self.sql(
            "INSERT INTO portcullis_memberships (user_id, org_id, role, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (user_id, org_id) DO UPDATE SET role = excluded.role, updated_at = excluded.updated_at",
        ))
        .bind(user)
        .bind(org)
        .bind(role)
        .bind(at)
        .execute(self.store.pool())
        .await
        .map_err(db)?;
        Ok(before)
    }

    /// Forget (`user`, `org`)'s membership; returns the role it had.
    pub async fn remove_member(&self, user: &str, org: &str) -> Result<Option<String>, StoreError> {
        let before = self.role(user, org).await?;
        sqlx::query(
            self.sql("DELETE FROM portcullis_memberships WHERE user_id = ? AND org_id = ?"),
        )
        .bind(user)
        .bind(org)
        .execute(self.store.pool())
        .await
        .map_err(db)?;
        Ok(before)
    }

    async fn role(&self, user: &str, org: &str) -> Result<Option<String>, StoreError> {
        sqlx::query(
            self.sql("SELECT role FROM portcullis_memberships WHERE user_id = ? AND org_id = ?"),
        )
        .bind(user)
        .bind(org)
        .fetch_optional(self.store.pool())
        .await
        .map_err(db)?
        .map(|row| row.try_get::<String, _>(0).map_err(db))
        .transpose()
    }

    /// Remember a webhook message id; `false` when it was seen before (a replay). Ids older
    /// than a day are purged by [`RevocationStore::purge_expired`] (Svix refuses timestamps
    /// older than five minutes anyway).
    pub async fn first_delivery(&self, message_id: &str) -> Result<bool, StoreError> {
        let now = clock::unix_seconds();
        let inserted = sqlx::query(self.sql(
            "INSERT INTO portcullis_webhook_messages (id, received_at) VALUES (?, ?) \
             ON CONFLICT (id) DO NOTHING",
        ))
        .bind(message_id)
        .bind(now)
        .execute(self.store.pool())
        .await
        .map_err(db)?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Forget a message id again: its processing failed and Svix will deliver it once more.
    pub async fn forget_delivery(&self, message_id: &str) -> Result<(), StoreError> {
        sqlx::query(self.sql("DELETE FROM portcullis_webhook_messages WHERE id = ?"))
            .bind(message_id)
            .execute(self.store.pool())
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Delete revocations whose tokens have all expired, and webhook message ids older than a
    /// day (the maintenance task does this every minute).
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let now = clock::unix_seconds();
        sqlx::query(self.sql("DELETE FROM portcullis_webhook_messages WHERE received_at < ?"))
            .bind(now - 86_400)
            .execute(self.store.pool())
            .await
            .map_err(db)?;
        let purged =
            sqlx::query(self.sql("DELETE FROM portcullis_revocations WHERE expires_at <= ?"))
                .bind(now)
                .execute(self.store.pool())
                .await
                .map_err(db)?;
        Ok(purged.rows_affected())
    }

    /// Note that `principal` made an authenticated request (users only; keys track their own
    /// last use). Costs a hash and a cache lookup; at most once a minute per user and org does
    /// it queue a write.
    pub fn mark_seen(&self, principal: &Principal) {
        if principal.kind() == PrincipalKind::User {
            self.seen.mark(
                principal.subject(),
                principal.org_id().map_or("", |o| o.as_str()),
            );
        }
    }

    /// Write the queued last-seen times (forward only). Returns how many were written.
    pub async fn flush_seen(&self) -> Result<usize, StoreError> {
        let batch = self.seen.drain();
        for (user, org, at) in &batch {
            sqlx::query(self.sql(
                "INSERT INTO portcullis_users_seen (user_id, org_id, last_seen) VALUES (?, ?, ?) \
                 ON CONFLICT (user_id, org_id) DO UPDATE SET last_seen = excluded.last_seen \
                 WHERE portcullis_users_seen.last_seen < excluded.last_seen",
            ))
            .bind(user.as_str())
            .bind(org.as_str())
            .bind(*at)
            .execute(self.store.pool())
            .await
            .map_err(db)?;
        }
        Ok(batch.len())
    }

    /// The users seen in `org` with their last authenticated request (Unix seconds), least
    /// recent first.
    pub async fn users_seen(&self, org: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(self.sql(
            "SELECT user_id, last_seen FROM portcullis_users_seen WHERE org_id = ? \
             ORDER BY last_seen, user_id",
        ))
        .bind(org)
        .fetch_all(self.store.pool())
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| Ok((r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?)))
            .collect()
    }

    /// Keep the list current: on PostgreSQL reload on every notice and after every reconnect;
    /// on SQLite (one gateway, but an operator's CLI may write too) look for a change every
    /// second. The task stops when dropped.
    pub async fn watch(&self) -> Result<Option<RevocationWatch>, StoreError> {
        if !self.store.is_postgres() {
            let this = self.clone();
            let task = tokio::spawn(async move {
                let mut last = this.stamp().await.ok();
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let Ok(stamp) = this.stamp().await else {
                        continue;
                    };
                    if last != Some(stamp) && this.reload().await.is_ok() {
                        last = Some(stamp);
                    }
                }
            });
            return Ok(Some(RevocationWatch { task }));
        }
        let mut listener = PgListener::connect(self.store.url()).await.map_err(db)?;
        listener.listen(CHANNEL).await.map_err(db)?;
        // Anything revoked between `open` and `listen` is in the store: read it once more.
        self.reload().await?;
        let this = self.clone();
        let task = tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        // The connection was lost: reconnect and listen again *before*
                        // reloading, so that no change can fall between the two.
                        tracing::warn!(target: "portcullis::revocation", "revocation feed lost; reconnecting and reloading");
                        while let Err(e) = listener.listen(CHANNEL).await {
                            tracing::warn!(target: "portcullis::revocation", error = %e, "revocation feed reconnect failed; retrying");
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(target: "portcullis::revocation", error = %e, "revocation feed failed; retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                }
                // Reload until it works: a notice means the list changed.
                while let Err(e) = this.reload().await {
                    tracing::warn!(target: "portcullis::revocation", error = %e, "revocation reload failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        });
        Ok(Some(RevocationWatch { task }))
    }

    /// Flush last-seen times and purge expired revocations every `interval`, in the background.
    pub fn spawn_maintenance(&self, interval: Duration) -> RevocationWatch {
        let this = self.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = this.flush_seen().await {
                    tracing::warn!(target: "portcullis::revocation", error = %e, "last-seen times could not be written");
                }
                let _ = this.purge_expired().await;
            }
        });
        RevocationWatch { task }
    }
}

/// A background task of the [`RevocationStore`]; it stops when dropped.
#[derive(Debug)]
pub struct RevocationWatch {
    task: JoinHandle<()>,
}

impl Drop for RevocationWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Last-seen minutes per (user, org), deduplicated in memory and queued for a batched write.
#[derive(Debug)]
struct SeenUsers {
    /// The minute each (user, org) was last queued, by a keyed hash of the pair: a collision
    /// (one in 2^64 per pair, not chosen by a client) can only cost last-seen writes.
    recent: quick_cache::sync::Cache<u64, i64>,
    /// Keyed per process, and cheaper than SipHash on this per-request path.
    hasher: ahash::RandomState,
    pending: Mutex<HashMap<(String, String), i64>>,
}

impl Default for SeenUsers {
    fn default() -> Self {
        Self {
            recent: quick_cache::sync::Cache::new(100_000),
            hasher: ahash::RandomState::new(),
            pending: Mutex::default(),
        }
    }
}

impl SeenUsers {
    fn mark(&self, user: &str, org: &str) {
        let minute = clock::unix_seconds() / 60 * 60;
        let key = self.hasher.hash_one((user, org));
        if self.recent.get(&key) == Some(minute) {
            return;
        }
        self.recent.insert(key, minute);
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert((user.to_owned(), org.to_owned()), minute);
        }
    }

    fn drain(&self) -> Vec<(String, String, i64)> {
        self.pending
            .lock()
            .map(|mut p| p.drain().map(|((u, o), t)| (u, o, t)).collect())
            .unwrap_or_default()
    }
}
