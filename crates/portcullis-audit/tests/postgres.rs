//! The PostgreSQL sink against the real server: idempotent batches, and proof at the database
//! that the writer role — and even the table's owner — cannot UPDATE, DELETE or TRUNCATE.

use portcullis_audit::PgAuditSink;
use portcullis_core::audit::{AuditEvent, Outcome};
use sqlx::Connection;

async fn schema(name: &str) -> String {
    portcullis_test_support::pg_schema(name).await
}

fn events(n: usize) -> Vec<AuditEvent> {
    (0..n)
        .map(|i| {
            AuditEvent::new("api_key.created", Outcome::Success)
                .target("api_key", format!("key_{i}"))
                .sensitive()
        })
        .collect()
}

#[tokio::test]
async fn batches_are_idempotent() {
    let url = schema("audit_batches").await;
    let sink = PgAuditSink::connect(&url).await.unwrap();
    let batch = events(10);
    assert_eq!(sink.insert(&batch).await.unwrap(), 10);
    assert_eq!(
        sink.insert(&batch).await.unwrap(),
        0,
        "a retried batch adds nothing"
    );
    assert_eq!(sink.count().await.unwrap(), 10);
    let action: String =
        sqlx::query_scalar("SELECT event->>'action' FROM portcullis_audit_events LIMIT 1")
            .fetch_one(sink.pool())
            .await
            .unwrap();
    assert_eq!(action, "api_key.created");
}

#[tokio::test]
async fn the_writer_role_cannot_update_delete_or_truncate() {
    let url = schema("audit_roles").await;
    let sink = PgAuditSink::connect(&url).await.unwrap();
    sink.insert(&events(3)).await.unwrap();
    let role: String = sqlx::query_scalar("SELECT current_user")
        .fetch_one(sink.pool())
        .await
        .unwrap();
    assert_eq!(role, "portcullis_audit_writer");

    for statement in [
        "UPDATE portcullis_audit_events SET action = 'forged'",
        "DELETE FROM portcullis_audit_events",
        "TRUNCATE portcullis_audit_events",
    ] {
        let e = sqlx::raw_sql(statement)
            .execute(sink.pool())
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("permission denied"),
            "{statement}: {e}"
        );
    }

    // The owner is refused too, by the triggers.
    let mut owner = sqlx::PgConnection::connect(&url).await.unwrap();
    for statement in [
        "UPDATE portcullis_audit_events SET action = 'forged'",
        "DELETE FROM portcullis_audit_events",
        "TRUNCATE portcullis_audit_events",
    ] {
        let e = sqlx::raw_sql(statement)
            .execute(&mut owner)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("append-only"), "{statement}: {e}");
    }
    assert_eq!(sink.count().await.unwrap(), 3, "nothing changed");
}
