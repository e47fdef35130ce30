//! Stores for the tests: in memory, SQLite in a temporary file, PostgreSQL in a fresh schema.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::Arc;

use portcullis_apikey::{KeyStore, MemoryStore, SqlStore};

pub enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

pub async fn store(backend: &Backend, name: &str) -> Arc<dyn KeyStore> {
    match backend {
        Backend::Memory => Arc::new(MemoryStore::new()),
        Backend::Sqlite => {
            let dir =
                std::env::temp_dir().join(format!("portcullis-keys-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Arc::new(
                SqlStore::connect(&format!("sqlite://{}", dir.join("keys.db").display()))
                    .await
                    .unwrap(),
            )
        }
        Backend::Postgres => {
            let url = portcullis_test_support::pg_schema(&format!("keys_{name}")).await;
            Arc::new(SqlStore::connect(&url).await.unwrap())
        }
    }
}
