use std::time::Duration;

use portcullis_core::{OrgId, ScopeSet};
use sqlx::{
    AnyPool, AssertSqlSafe, Row, SqlSafeStr, SqlStr,
    any::{AnyPoolOptions, AnyRow},
};

use super::{ApiKeyRecord, BoxFuture, KeyStore, StoreError};
use crate::Digest;

/// The PostgreSQL channel on which a revocation is announced, in the revoking transaction.
pub const REVOCATION_CHANNEL: &str = "portcullis_api_keys";

const MIGRATIONS_SQLITE: &str = include_str!("../../migrations/sqlite/0001_api_keys.sql");
const MIGRATIONS_POSTGRES: &str = include_str!("../../migrations/postgres/0001_api_keys.sql");

/// Serializes migrations of every Portcullis replica on one PostgreSQL database.
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(7305281771239116)";

const COLUMNS: &str = "id, org_id, name, scopes, created_by, created_at, expires_at, revoked_at, \
                       last_used_at, start, last4, secret_version";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// Keys in SQLite (the embedded default: one process) or PostgreSQL (production, many replicas),
/// through sqlx. The table is created by [`SqlStore::connect`] from the migrations shipped in
/// `migrations/`.
///
/// On PostgreSQL a revocation also sends `NOTIFY portcullis_api_keys, '<digest hex>'` in the
/// revoking transaction, so that replicas listening on the channel evict the key.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    /// Kept for the revocation listener; never logged (it may hold a password).
    url: std::sync::Arc<str>,
    dialect: Dialect,
    sql: Queries,
}

/// The statements, built once from constant text (no input ever goes into them) and shared.
#[derive(Clone, Debug)]
struct Queries {
    find: SqlStr,
    insert: SqlStr,
    list: SqlStr,
    revoke: SqlStr,
    rehash: SqlStr,
    touch: SqlStr,
}

impl Queries {
    fn new(dialect: Dialect) -> Self {
        let q = |sql: String| {
            let sql = match dialect {
                Dialect::Sqlite => sql,
                Dialect::Postgres => numbered(&sql),
            };
            AssertSqlSafe(sql).into_sql_str()
        };
        Self {
            find: q(format!(
                "SELECT {COLUMNS} FROM portcullis_api_keys WHERE digest = ?"
            )),
            insert: q(format!(
                "INSERT INTO portcullis_api_keys ({COLUMNS}, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )),
            list: q(format!(
                "SELECT {COLUMNS} FROM portcullis_api_keys WHERE org_id = ? ORDER BY created_at DESC, id DESC"
            )),
            revoke: q(
                "UPDATE portcullis_api_keys SET revoked_at = COALESCE(revoked_at, ?) \
                       WHERE org_id = ? AND id = ? RETURNING digest"
                    .into(),
            ),
            rehash: q(
                "UPDATE portcullis_api_keys SET digest = ?, secret_version = ? WHERE id = ?".into(),
            ),
            touch: q("UPDATE portcullis_api_keys SET last_used_at = ? \
                      WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)"
                .into()),
        }
    }
}

/// `?` placeholders as PostgreSQL's `$1, $2, …`.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

fn db_error(e: sqlx::Error) -> StoreError {
    // sqlx errors name neither keys nor secrets; connection strings are not in them.
    StoreError::new(e.to_string())
}

impl SqlStore {
    /// Connect to `url` (`sqlite://path` or `postgres://…`) and apply the migrations.
    ///
    /// A SQLite file is created when missing, in WAL mode.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = if url.starts_with("sqlite:") {
            let url = if url.contains("mode=") {
                url.to_owned()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (Dialect::Sqlite, url)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            (Dialect::Postgres, url.to_owned())
        } else {
            return Err(StoreError::new(
                "the database URL must start with sqlite: or postgres:",
            ));
        };
        let options = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite { 4 } else { 16 })
            .acquire_timeout(Duration::from_secs(3))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        sqlx::raw_sql("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;")
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect(&url).await.map_err(db_error)?;
        let store = Self {
            pool,
            url: url.into(),
            dialect,
            sql: Queries::new(dialect),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Apply the shipped migrations (idempotent). On PostgreSQL they run in one transaction under
    /// an advisory lock, so that replicas starting together do not race.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.dialect {
            Dialect::Sqlite => {
                sqlx::raw_sql(MIGRATIONS_SQLITE)
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?;
            }
            Dialect::Postgres => {
                let mut tx = self.pool.begin().await.map_err(db_error)?;
                sqlx::raw_sql(MIGRATION_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                sqlx::raw_sql(MIGRATIONS_POSTGRES)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
            }
        }
        Ok(())
    }

    /// Whether the store is PostgreSQL (and so announces revocations).
    pub fn is_postgres(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    /// The connection pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The connection URL (it may hold a password: never log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `sql` with its `?` placeholders as this store's database wants them (`$1, $2…` on
    /// PostgreSQL), for other tables that share the store's database.
    pub fn placeholders(&self, sql: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => sql.to_owned(),
            Dialect::Postgres => numbered(sql),
        }
    }
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

fn record(row: &AnyRow) -> Result<ApiKeyRecord, StoreError> {
    let text = |c: &str| row.try_get::<String, _>(c).map(String::into_boxed_str);
    let corrupt = |what: &str| StoreError::new(format!("corrupt row: {what}"));
    let org: String = row.try_get("org_id").map_err(db_error)?;
    let scopes: String = row.try_get("scopes").map_err(db_error)?;
    let version: i64 = row.try_get("secret_version").map_err(db_error)?;
    Ok(ApiKeyRecord {
        id: text("id").map_err(db_error)?,
        org: OrgId::new(&org).map_err(|_| corrupt("org_id"))?,
        name: text("name").map_err(db_error)?,
        scopes: ScopeSet::parse(scopes.split_whitespace()).map_err(|_| corrupt("scopes"))?,
        created_by: text("created_by").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        expires_at: row.try_get("expires_at").map_err(db_error)?,
        revoked_at: row.try_get("revoked_at").map_err(db_error)?,
        last_used_at: row.try_get("last_used_at").map_err(db_error)?,
        start: text("start").map_err(db_error)?,
        last4: text("last4").map_err(db_error)?,
        secret_version: u16::try_from(version).map_err(|_| corrupt("secret_version"))?,
    })
}

fn digest_of(bytes: &[u8]) -> Result<Digest, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::new("corrupt row: digest"))
}

fn hex(d: &Digest) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl KeyStore for SqlStore {
    fn find<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<ApiKeyRecord>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(self.sql.find.clone())
                .bind(digest.to_vec())
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
            row.as_ref().map(record).transpose()
        })
    }

    fn insert<'a>(
        &'a self,
        r: &'a ApiKeyRecord,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query(self.sql.insert.clone())
                .bind(r.id.to_string())
                .bind(r.org.to_string())
                .bind(r.name.to_string())
                .bind(r.scopes.to_string())
                .bind(r.created_by.to_string())
                .bind(r.created_at)
                .bind(r.expires_at)
                .bind(r.revoked_at)
                .bind(r.last_used_at)
                .bind(r.start.to_string())
                .bind(r.last4.to_string())
                .bind(i64::from(r.secret_version))
                .bind(digest.to_vec())
                .execute(&self.pool)
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn list<'a>(&'a self, org: &'a OrgId) -> BoxFuture<'a, Result<Vec<ApiKeyRecord>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(self.sql.list.clone())
                .bind(org.to_string())
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
            rows.iter().map(record).collect()
        })
    }

    fn revoke<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a str,
        at: i64,
    ) -> BoxFuture<'a, Result<Option<Digest>, StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(db_error)?;
            let row = sqlx::query(self.sql.revoke.clone())
                .bind(at)
                .bind(org.to_string())
                .bind(id.to_owned())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            let digest = match row {
                Some(row) => Some(digest_of(
                    &row.try_get::<Vec<u8>, _>("digest").map_err(db_error)?,
                )?),
                None => None,
            };
            if let (Some(d), Dialect::Postgres) = (&digest, self.dialect) {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(REVOCATION_CHANNEL)
                    .bind(hex(d))
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
            }
            tx.commit().await.map_err(db_error)?;
            Ok(digest)
        })
    }

    fn touch<'a>(&'a self, used: &'a [(Box<str>, i64)]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(db_error)?;
            for (id, at) in used {
                sqlx::query(self.sql.touch.clone())
                    .bind(*at)
                    .bind(id.to_string())
                    .bind(*at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
            }
            tx.commit().await.map_err(db_error)?;
            Ok(())
        })
    }

    fn rehash<'a>(
        &'a self,
        id: &'a str,
        digest: &'a Digest,
        version: u16,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query(self.sql.rehash.clone())
                .bind(digest.to_vec())
                .bind(i64::from(version))
                .bind(id.to_owned())
                .execute(&self.pool)
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders() {
        assert_eq!(super::numbered("a = ? AND b = ?"), "a = $1 AND b = $2");
    }
}
