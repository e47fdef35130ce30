//! Test-only helpers shared by the Portcullis crates (never a dependency of a library).
//!
//! Tests talk to the real PostgreSQL of the machine (`127.0.0.1:5432`, trust authentication,
//! database `test`). Each test works in a schema of its own, so that tests run in parallel and
//! a rerun starts clean.

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
