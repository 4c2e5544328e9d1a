//! Test databases (feature `testing`, and this crate's own tests): the suite runs against SQLite
//! by default, and against a real PostgreSQL server when [`POSTGRES_URL_VAR`] names one
//! (`test.sh` starts one, `scripts/postgres.sh`). Each caller gets a database of its own: a file
//! in its temporary directory, or a fresh PostgreSQL database with a random name.
//!
//! A server that is named but does not answer is a failure, never a silent fallback to SQLite.

use std::path::Path;

use sqlx::{AnyConnection, Connection};

use crate::{default_database_url, random_bytes, redact_url, wait_for_server, DbError, Result};

/// The environment variable that names the PostgreSQL server to test against: a URL whose user
/// may create databases (e.g. `postgres://postgres@127.0.0.1:5433/postgres`).
pub const POSTGRES_URL_VAR: &str = "KMS_TEST_POSTGRES_URL";

/// The PostgreSQL server named by [`POSTGRES_URL_VAR`], if any (set and not empty).
pub fn postgres_server() -> Option<String> {
    std::env::var(POSTGRES_URL_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// Creates a database with a random name (`kms_test_<hex>`) on the server at `server_url` and
/// returns its URL (the server's URL with that database). Fails with [`DbError::Unreachable`]
/// when the server does not answer within 5 s.
pub async fn fresh_postgres_database(server_url: &str) -> Result<String> {
    sqlx::any::install_default_drivers();
    wait_for_server(server_url, std::time::Duration::from_secs(5)).await?;
    let name = format!("kms_test_{}", hex::encode(random_bytes::<8>()?));
    let mut conn = AnyConnection::connect(server_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let mut url =
        url::Url::parse(server_url).map_err(|_| DbError::UnsupportedUrl(redact_url(server_url)))?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// The database URL a test uses: a fresh PostgreSQL database when [`POSTGRES_URL_VAR`] is set,
/// else the SQLite file `kms.db` in `dir`.
///
/// # Panics
/// When the PostgreSQL server is named but cannot be reached or refuses to create a database:
/// the test fails rather than quietly testing SQLite instead.
pub async fn test_database_url(dir: &Path) -> String {
    match postgres_server() {
        Some(server) => fresh_postgres_database(&server).await.unwrap_or_else(|e| {
            panic!(
                "{POSTGRES_URL_VAR} names {} but no test database could be created there: {e}",
                redact_url(&server)
            )
        }),
        None => default_database_url(dir),
    }
}

/// Drops one of the schema's guard triggers (`audit_log_no_update`, `audit_log_no_delete`,
/// `audit_checkpoints_no_update`, `audit_checkpoints_no_delete`, `intents_status_known`,
/// `intents_status_transition`, or the `audit_log_refuse` of [`refuse_audit_inserts`]), in
/// either dialect: for the tests that tamper with a table behind its guards' back.
///
/// # Panics
/// On a trigger name not listed, or when the statement fails.
pub async fn drop_trigger(db: &crate::Db, name: &str) {
    let table = ["audit_checkpoints", "audit_log", "intents"]
        .into_iter()
        .find(|t| name.starts_with(&format!("{t}_")))
        .unwrap_or_else(|| panic!("no known table for trigger {name}"));
    let sql = match db.backend() {
        crate::Backend::Sqlite => format!("DROP TRIGGER {name}"),
        crate::Backend::Postgres => format!("DROP TRIGGER {name} ON {table}"),
    };
    sqlx::query(&sql).execute(db.pool()).await.unwrap();
}

/// A connection of its own to the database at `url`, inside a transaction that holds the write
/// lock every writer of this crate takes ([`crate::Db::begin_write`]: SQLite's `BEGIN IMMEDIATE`,
/// PostgreSQL's advisory lock), so no write can commit until `ROLLBACK` (or `COMMIT`) on it, or
/// its drop.
///
/// # Panics
/// When the database cannot be reached or the lock taken.
pub async fn hold_write_lock(url: &str) -> AnyConnection {
    sqlx::any::install_default_drivers();
    let backend = crate::Backend::of_url(url).unwrap();
    let mut conn = AnyConnection::connect(url).await.unwrap();
    sqlx::query(crate::write_begin(backend))
        .execute(&mut conn)
        .await
        .unwrap();
    if backend == crate::Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(crate::POSTGRES_WRITE_LOCK)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn
}

/// Makes every insert into `audit_log` fail with `message` (a trigger named `audit_log_refuse`;
/// [`drop_trigger`] removes it): the audit log made unavailable, in either dialect.
///
/// # Panics
/// When the statements fail.
pub async fn refuse_audit_inserts(db: &crate::Db, message: &str) {
    let statements = match db.backend() {
        crate::Backend::Sqlite => vec![format!(
            "CREATE TRIGGER audit_log_refuse BEFORE INSERT ON audit_log \
             BEGIN SELECT RAISE(ABORT, '{message}'); END"
        )],
        crate::Backend::Postgres => vec![
            format!(
                "CREATE OR REPLACE FUNCTION audit_log_refuse() RETURNS trigger \
                 LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{message}'; END; $$"
            ),
            "CREATE TRIGGER audit_log_refuse BEFORE INSERT ON audit_log \
             FOR EACH ROW EXECUTE FUNCTION audit_log_refuse()"
                .to_owned(),
        ],
    };
    for q in statements {
        sqlx::query(&q).execute(db.pool()).await.unwrap();
    }
}
