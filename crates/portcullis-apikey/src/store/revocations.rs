use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;

use super::{SqlStore, StoreError, sql::REVOCATION_CHANNEL};
use crate::{ApiKeyVerifier, Digest};

/// A task that evicts keys revoked by other replicas; it stops when dropped.
///
/// Created by [`SqlStore::watch_revocations`]. Each notification evicts one digest at once.
/// Delivery is at most once, so when the connection is lost the verifier forgets everything it
/// cached, and the next requests go back to the store.
#[derive(Debug)]
pub struct RevocationFeed {
    task: JoinHandle<()>,
}

impl Drop for RevocationFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SqlStore {
    /// Listen for revocations on PostgreSQL and evict them from `verifier` (no-op on SQLite,
    /// which serves one process).
    pub async fn watch_revocations(
        &self,
        verifier: ApiKeyVerifier,
    ) -> Result<Option<RevocationFeed>, StoreError> {
        if !self.is_postgres() {
            return Ok(None);
        }
        let mut listener = PgListener::connect(self.url())
            .await
            .map_err(|e| StoreError::new(e.to_string()))?;
        listener
            .listen(REVOCATION_CHANNEL)
            .await
            .map_err(|e| StoreError::new(e.to_string()))?;
        let task = tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => match parse_hex(notification.payload()) {
                        Some(digest) => verifier.evict(&digest).await,
                        None => {
                            tracing::warn!(target: "portcullis::api_keys", "malformed revocation notice");
                        }
                    },
                    Ok(None) => {
                        // Lost: notices may have been missed. Flush now, and again once listening
                        // anew, so that a key cached in between cannot outlive a missed notice.
                        tracing::warn!(target: "portcullis::api_keys", "revocation feed reconnecting; cached keys flushed");
                        verifier.evict_all();
                        if listener.listen(REVOCATION_CHANNEL).await.is_ok() {
                            verifier.evict_all();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(target: "portcullis::api_keys", error = %e, "revocation feed failed; cached keys flushed");
                        verifier.evict_all();
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(Some(RevocationFeed { task }))
    }
}

fn parse_hex(s: &str) -> Option<Digest> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex() {
        let d = [0xab; 32];
        let s: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::parse_hex(&s), Some(d));
        assert_eq!(super::parse_hex("zz"), None);
        assert_eq!(super::parse_hex(&"é".repeat(32)), None);
    }
}
