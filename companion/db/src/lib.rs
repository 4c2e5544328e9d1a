//! The key companion's database (docs/ARCHITECTURE.md#the-database).
//!
//! Two backends through sqlx, chosen by the URL ([`Backend::of_url`]):
//!
//! - **SQLite** (the default, `sqlite://PATH`), opened in WAL mode with foreign keys on and a busy
//!   timeout, so the running companion and `kms-admin` can use one file at the same time;
//! - **PostgreSQL** (`postgres://…`, `postgresql://…`): the database must exist; its tables are
//!   created by the migrations.
//!
//! Both go through sqlx's `Any` driver: one pool type ([`Db::pool`] is an `AnyPool`) and one text
//! per query, in the SQL the two dialects share, with numbered placeholders (`$1`, `$2`, …: sqlx
//! binds them by number on SQLite too). An enum of the two pools with a dispatch macro was the
//! alternative; `Any` was chosen because every query the crate needs is expressible in the common
//! dialect, so one code path is tested on both (its types, `i64`, `String`, `Option`, `Vec<u8>`,
//! `bool`, are all `Any` types; the PostgreSQL schema uses BIGINT for every integer so values read
//! back as `i64`). Where the dialects differ the code asks [`Db::backend`]: the write lock
//! ([`Db::begin_write`]: SQLite's `BEGIN IMMEDIATE`, PostgreSQL's transaction-scoped advisory
//! lock [`POSTGRES_WRITE_LOCK`]), the per-connection pragmas, the audit appender's durability.
//!
//! Migrations are embedded, one set per backend with the same versions and descriptions
//! ([`MIGRATOR`] from `migrations/sqlite/`, [`POSTGRES_MIGRATOR`] from `migrations/postgres/`),
//! and run by [`Db::open`]. A database holding a migration this binary does not know is refused
//! ([`DbError::NewerSchema`]); an unreachable server is retried for
//! [`DbOptions::connect_retry`] ([`DbError::Unreachable`], the URL without its password:
//! [`redact_url`]). All queries are runtime queries (no compile-time database).
//!
//! Tests: with feature `testing`, the module `kms_db::testing` gives each test a database of its
//! own, on SQLite or, when `KMS_TEST_POSTGRES_URL` names a server, a fresh PostgreSQL database
//! (`test.sh` runs this crate's, `kms-admin`'s and the companion's tests both ways, with a server
//! started by `scripts/postgres.sh`).
//!
//! Tables: wallets, passkey credentials, derived addresses, WebAuthn
//! ceremonies (challenges), API keys (hashed), agent keys and their sessions (one row per grant
//! on an account: [`AgentSession`]), JWT secret metadata, intents, ERC-7715 permission requests
//! ([`PermissionRequest`]), a hash-chained append-only audit log, and the checkpoints of that log
//! signed in the TA (`audit_checkpoints`: the anchored audit, see [`Db::verify_anchored`]).
//!
//! Nothing secret is stored: API keys and agent credentials are kept as
//! SHA-256 digests only.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod agents;
mod anchor;
mod api_keys;
mod audit;
mod audit_tail;
mod challenges;
mod intents;
mod jwt_meta;
mod leases;
mod permission_requests;
mod sessions;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod wallets;

use std::str::FromStr;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{AnyConnection, AnyPool};
use sqlx::{ConnectOptions, Connection};

pub use agents::{AgentActivation, AgentKey, AgentStatus};
pub use anchor::{
    checkpoint_signed_by, AnchorError, Anchored, AuditProblem, AuditReport, Stored,
    StoredCheckpoint, TaAnchorSummary,
};
pub use api_keys::{ApiKeyInfo, NewApiKey, API_KEY_PREFIX};
pub use audit::{AuditAppender, AuditEvent, AuditRecord, AuditVerification, GENESIS_HASH};
pub use audit_tail::{AuditTail, MAX_TAIL_ROWS};
pub use challenges::{Challenge, ChallengeKind, ChallengeRefusal, NewChallenge};
pub use intents::{Intent, IntentChange, IntentReason, IntentStatus, NewIntent};
pub use jwt_meta::{jwt_secret_meta_from_ta, JwtSecretMeta, JwtSecretState, UNNAMED_TA};
pub use leases::Lease;
pub use permission_requests::{NewPermissionRequest, PermissionRequest, PermissionRequestStatus};
pub use sessions::{AccountKind, AgentSession, NewSession, SessionStatus};
pub use wallets::{NewWallet, PasskeyCredential, Wallet, WalletAddress};

/// The embedded migrations of a SQLite database (`migrations/sqlite/`).
///
/// These files never change once released: their checksums are recorded in every database
/// they migrated.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The embedded migrations of a PostgreSQL database (`migrations/postgres/`): the same versions
/// and descriptions as [`MIGRATOR`], written in PostgreSQL's dialect (a test keeps them in step).
pub static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The key of the transaction-scoped advisory lock that serialises writers on PostgreSQL
/// (see [`Db::begin_write`]); any constant, the same for every companion and `kms-admin`.
pub const POSTGRES_WRITE_LOCK: i64 = 0x6b6d_735f_6462; // "kms_db"

/// A database error.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The SQL layer failed.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database file does not exist (or cannot be opened) and was not to be created.
    #[error("database not found: {}", .0.display())]
    Missing(std::path::PathBuf),
    /// The database URL names neither SQLite nor PostgreSQL.
    #[error("unsupported database URL {0} (expected sqlite:PATH, sqlite://PATH, postgres://... or postgresql://...)")]
    UnsupportedUrl(String),
    /// The database server did not answer within the start-up retry budget
    /// ([`DbOptions::connect_retry`]). `url` has its password removed.
    #[error("database {url} unreachable after {} ms of retries: {reason}", .waited.as_millis())]
    Unreachable {
        /// The URL, without its password.
        url: String,
        /// How long it was retried.
        waited: Duration,
        /// The last error.
        reason: String,
    },
    /// The database was migrated by a newer version of this software: it holds a migration
    /// this binary does not know, so this binary refuses to use it.
    #[error(
        "the database schema is newer than this binary: it has migration {version}, this \
         binary knows migrations up to {known}; run the newer version (or restore a backup \
         taken before the upgrade)"
    )]
    NewerSchema {
        /// The unknown migration's version found in the database.
        version: i64,
        /// The last migration this binary knows.
        known: i64,
    },
    /// A row violates an invariant (e.g. a status string not known).
    #[error("database row is invalid: {0}")]
    Invalid(String),
    /// The randomness source failed.
    #[error("randomness source failed")]
    Entropy,
}

impl DbError {
    /// Whether the database could not be reached: no connection within the pool's wait, the pool
    /// closed, or the connection failed (I/O, TLS). Not a refusal of the query itself.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            DbError::Sql(
                sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
            ) | DbError::Unreachable { .. }
        )
    }
}

/// Result alias.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// Which database server a [`Db`] talks to, from its URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file (`sqlite:PATH`, `sqlite://PATH`): the default.
    Sqlite,
    /// A PostgreSQL server (`postgres://…`, `postgresql://…`).
    Postgres,
}

impl Backend {
    /// The backend a database URL names.
    pub fn of_url(url: &str) -> Result<Self> {
        let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            _ => Err(DbError::UnsupportedUrl(redact_url(url))),
        }
    }

    /// Its migrations.
    pub fn migrator(self) -> &'static sqlx::migrate::Migrator {
        match self {
            Self::Sqlite => &MIGRATOR,
            Self::Postgres => &POSTGRES_MIGRATOR,
        }
    }
}

/// `url` without its password (in the user-info part or a `password=` parameter), for logs
/// and errors.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        // Not a URL: keep only what precedes a possible user-info part.
        return match url.rfind('@') {
            Some(at) => {
                let scheme_end = url[..at].find("//").map_or(0, |i| i + 2);
                format!("{}…@{}", &url[..scheme_end], &url[at + 1..])
            }
            None => url.to_owned(),
        };
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("password"))
    {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                if k.eq_ignore_ascii_case("password") {
                    (k.into_owned(), "***".to_owned())
                } else {
                    (k.into_owned(), v.into_owned())
                }
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// Options for [`Db::open_with`].
#[derive(Clone, Debug)]
pub struct DbOptions {
    /// Most pooled connections.
    pub max_connections: u32,
    /// How long a writer waits for a lock before failing (SQLite's busy timeout; PostgreSQL's
    /// `lock_timeout`, which bounds the wait for [`Db::begin_write`]'s lock and for row locks).
    pub busy_timeout: Duration,
    /// How long a caller waits for a pooled connection.
    pub acquire_timeout: Duration,
    /// Create the database file if it does not exist (the companion does; `kms-admin` does
    /// not, and reports a missing database as [`DbError::Missing`]). A PostgreSQL database is
    /// never created: it must exist (its tables are created by the migrations).
    pub create_if_missing: bool,
    /// At start-up, how long an unreachable database server is retried (with backoff from
    /// 50 ms doubling to 1 s) before [`DbError::Unreachable`]. Zero tries once.
    pub connect_retry: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            busy_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(30),
            create_if_missing: true,
            connect_retry: Duration::from_secs(5),
        }
    }
}

/// A handle to the database (cheap to clone: a connection pool).
///
/// The pool is sqlx's `Any` pool, so one set of runtime queries serves both backends: every
/// query is written in the SQL that SQLite and PostgreSQL share, with numbered placeholders
/// (`$1`, `$2`, …, which SQLite binds by number too). Where the dialects differ (a JSON
/// function, the write lock) the code asks [`Db::backend`]. `Any` was chosen over an enum of
/// the two pools because the queries are the same text on both: one code path, tested on both.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    busy_timeout: Duration,
}

impl Db {
    /// Open (creating if missing) the database at `url` (`sqlite:PATH`, `sqlite://PATH`,
    /// `postgres://…` or `postgresql://…`) and run pending migrations.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, &DbOptions::default()).await
    }

    /// [`Db::open`] with explicit pool options.
    ///
    /// Fails with [`DbError::Unreachable`] when a database server does not answer within
    /// [`DbOptions::connect_retry`], and with [`DbError::NewerSchema`] when the database holds
    /// a migration this binary does not know.
    pub async fn open_with(url: &str, opts: &DbOptions) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        match backend {
            Backend::Sqlite => {
                // Create the file (or report it missing) and switch it to WAL, which is
                // persistent, through SQLite's own options; the pool's connections then set
                // their per-connection pragmas in `prepare_connection`.
                let connect = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(opts.create_if_missing)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(opts.busy_timeout);
                let filename = connect.get_filename().to_owned();
                let conn = connect.connect().await.map_err(|e| {
                    if !opts.create_if_missing && is_cant_open(&e) {
                        DbError::Missing(filename)
                    } else {
                        DbError::Sql(e)
                    }
                })?;
                conn.close().await?;
            }
            Backend::Postgres => wait_for_server(url, opts.connect_retry).await?,
        }
        let busy_timeout = opts.busy_timeout;
        let pool = AnyPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .min_connections(1)
            .acquire_timeout(opts.acquire_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move { prepare_connection(conn, backend, busy_timeout).await })
            })
            .connect(url)
            .await?;
        let db = Self {
            pool,
            backend,
            busy_timeout,
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Run the pending migrations; refuse a database that has migrations this binary does not
    /// know (a newer version migrated it).
    async fn migrate(&self) -> Result<()> {
        let migrator = self.backend.migrator();
        let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        match migrator.run(&self.pool).await {
            Ok(()) => Ok(()),
            Err(sqlx::migrate::MigrateError::VersionMissing(version)) if version > known => {
                Err(DbError::NewerSchema { version, known })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The underlying pool (for tests and tools). Queries on it must work on both backends
    /// (numbered placeholders), or check [`Db::backend`].
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which backend this database is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A write transaction that excludes every other writer until it ends: SQLite's
    /// `BEGIN IMMEDIATE` (the database's write lock), and on PostgreSQL `BEGIN` followed by the
    /// transaction-scoped advisory lock [`POSTGRES_WRITE_LOCK`], which every such transaction
    /// takes (of every companion and `kms-admin` on that database). Reads inside it see every
    /// write committed before the lock was granted, so read-then-write (`MAX(…) + 1`, the
    /// audit chain's head) is race-free on both.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        begin_write_on(
            self.pool.begin_with(write_begin(self.backend)).await?,
            self.backend,
        )
        .await
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Close the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The statement that opens a write transaction on `backend`.
pub(crate) fn write_begin(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN",
    }
}

/// Takes PostgreSQL's write lock in a transaction opened with [`write_begin`].
pub(crate) async fn begin_write_on<'c>(
    mut tx: sqlx::Transaction<'c, sqlx::Any>,
    backend: Backend,
) -> Result<sqlx::Transaction<'c, sqlx::Any>> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(POSTGRES_WRITE_LOCK)
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx)
}

/// Per-connection settings: SQLite's pragmas (foreign keys, `synchronous = NORMAL` in WAL
/// mode, the busy timeout); on PostgreSQL the same bound on lock waits (`lock_timeout`: the
/// write lock of [`Db::begin_write`] and row locks), its defaults doing the rest (foreign keys
/// always enforced, `synchronous_commit = on`).
pub(crate) async fn prepare_connection(
    conn: &mut AnyConnection,
    backend: Backend,
    busy_timeout: Duration,
) -> std::result::Result<(), sqlx::Error> {
    let statements = match backend {
        Backend::Sqlite => vec![
            "PRAGMA foreign_keys = ON".to_owned(),
            "PRAGMA synchronous = NORMAL".to_owned(),
            format!("PRAGMA busy_timeout = {}", busy_timeout.as_millis()),
        ],
        Backend::Postgres => vec![format!(
            "SET lock_timeout = '{}ms'",
            busy_timeout.as_millis().max(1)
        )],
    };
    for q in statements {
        sqlx::query(&q).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Waits until the server at `url` accepts a connection, retrying connection failures (refused,
/// reset, timed out; a server still starting) with backoff for at most `budget`.
async fn wait_for_server(url: &str, budget: Duration) -> Result<()> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = tokio::time::timeout(
            budget.max(Duration::from_secs(1)),
            AnyConnection::connect(url),
        )
        .await;
        let err = match attempt {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                return Ok(());
            }
            Ok(Err(e)) if is_retryable(&e) => e.to_string(),
            Ok(Err(e)) => return Err(DbError::Sql(e)),
            Err(_) => "connecting timed out".to_owned(),
        };
        let waited = started.elapsed();
        if waited + backoff > budget {
            return Err(DbError::Unreachable {
                url: redact_url(url),
                waited,
                reason: err,
            });
        }
        tracing::warn!(url = %redact_url(url), error = %err, "database unreachable; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Whether a connection error may go away by itself (the server is down or starting).
fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        // 57P03 cannot_connect_now: the server is starting up or shutting down.
        sqlx::Error::Database(d) => d.code().as_deref() == Some("57P03"),
        _ => false,
    }
}

/// Whether `e` is SQLite's "unable to open database file" (`SQLITE_CANTOPEN`, 14).
fn is_cant_open(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.code().as_deref() == Some("14"),
        _ => false,
    }
}

/// The database URL used when none is configured: `sqlite://<data_dir>/kms.db` (the companion
/// and `kms-admin` resolve it the same way).
pub fn default_database_url(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}", data_dir.join("kms.db").display())
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| DbError::Entropy)?;
    Ok(b)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A database of the test's own: SQLite in a temporary directory, or a fresh PostgreSQL
    /// database when `KMS_TEST_POSTGRES_URL` is set ([`crate::testing`]).
    pub async fn temp_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::testing::test_database_url(dir.path()).await;
        let db = Db::open(&url).await.unwrap();
        (dir, db)
    }

    pub async fn wallet(db: &Db, id: &str) {
        db.insert_wallet(&NewWallet {
            key_id: id.into(),
            description: "d".into(),
            key_usage: "SIGN_VERIFY".into(),
            key_spec: "ECC_SECG_P256K1".into(),
            origin: "EXTERNAL_KMS".into(),
            address: format!("0x{:0>40}", id.len()).parse().unwrap(),
            public_key: "02aa".into(),
            derivation_path: "m/44'/60'/0'/0/0".into(),
            rp_id: "localhost".into(),
            credential_id: format!("cred-{id}"),
            passkey_public_key: "04bb".into(),
            passkey_json: "{}".into(),
            sign_count: 0,
            ta_id: None,
            now: 100,
        })
        .await
        .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_database_is_reported_when_not_to_be_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        let url = default_database_url(dir.path());
        let opts = DbOptions {
            create_if_missing: false,
            ..DbOptions::default()
        };
        match Db::open_with(&url, &opts).await {
            Err(DbError::Missing(p)) => assert_eq!(p, path),
            other => panic!("expected Missing, got {other:?}"),
        }
        assert!(!path.exists(), "nothing was created");
        // Once it exists (the companion created it), it opens.
        Db::open(&url).await.unwrap().close().await;
        Db::open_with(&url, &opts).await.unwrap().close().await;
    }

    #[test]
    fn the_backend_is_chosen_by_the_url() {
        assert_eq!(
            Backend::of_url("sqlite:///d/kms.db").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(Backend::of_url("sqlite:kms.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::of_url("postgres://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::of_url("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        match Backend::of_url("mysql://u:hunter2@h/db") {
            Err(e @ DbError::UnsupportedUrl(_)) => {
                assert!(!e.to_string().contains("hunter2"), "{e}")
            }
            other => panic!("expected UnsupportedUrl, got {other:?}"),
        }
    }

    #[test]
    fn a_url_loses_its_password() {
        assert_eq!(
            redact_url("postgres://kms:s3cret@db.example:5432/kms"),
            "postgres://kms:***@db.example:5432/kms"
        );
        let r = redact_url("postgres://kms@db/kms?sslmode=require&password=s3cret");
        assert!(
            !r.contains("s3cret") && r.contains("sslmode=require"),
            "{r}"
        );
        assert_eq!(redact_url("sqlite:///d/kms.db"), "sqlite:///d/kms.db");
        assert!(!redact_url("not a url kms:s3cret@host").contains("s3cret"));
        assert_eq!(
            redact_url("postgres://kms:s3cret@host:notaport/kms"),
            "postgres://…@host:notaport/kms"
        );
    }

    #[test]
    fn the_two_migration_sets_have_the_same_versions_and_descriptions() {
        let of = |m: &sqlx::migrate::Migrator| -> Vec<(i64, String)> {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect()
        };
        assert_eq!(of(&MIGRATOR), of(&POSTGRES_MIGRATOR));
        assert_eq!(MIGRATOR.iter().count(), 11);
    }

    /// An unreachable server is retried for the configured time, then reported with its URL
    /// but never its password.
    #[tokio::test]
    async fn an_unreachable_server_is_retried_then_named_without_its_password() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://kms:hunter2@127.0.0.1:{port}/kms");
        let opts = DbOptions {
            connect_retry: Duration::from_millis(700),
            ..DbOptions::default()
        };
        let started = Instant::now();
        let err = Db::open_with(&url, &opts).await.unwrap_err();
        let took = started.elapsed();
        let msg = err.to_string();
        match &err {
            DbError::Unreachable { url, waited, .. } => {
                assert_eq!(url, &format!("postgres://kms:***@127.0.0.1:{port}/kms"));
                assert!(*waited >= Duration::from_millis(300), "{waited:?}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
        assert!(took < Duration::from_secs(3), "bounded: {took:?}");
    }

    /// A database that a newer binary migrated (a migration this one does not know) is refused.
    #[tokio::test]
    async fn a_schema_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = testing::test_database_url(dir.path()).await;
        let db = Db::open(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES ($1, $2, TRUE, $3, 0)",
        )
        .bind(9999_i64)
        .bind("from the future")
        .bind(vec![0u8; 48])
        .execute(db.pool())
        .await
        .unwrap();
        db.close().await;
        match Db::open(&url).await {
            Err(
                e @ DbError::NewerSchema {
                    version: 9999,
                    known: 11,
                },
            ) => {
                assert!(e.to_string().contains("newer"), "{e}")
            }
            other => panic!("expected NewerSchema, got {other:?}"),
        }
    }

    /// Against PostgreSQL (`KMS_TEST_POSTGRES_URL`; `test.sh` runs it with `--include-ignored`):
    /// both migration sets give the same tables with the same columns (besides PostgreSQL's
    /// `rowid` standing for SQLite's implicit one).
    #[tokio::test]
    #[ignore = "needs a PostgreSQL server: KMS_TEST_POSTGRES_URL (test.sh provides one)"]
    async fn both_schemas_have_the_same_tables_and_columns() {
        let server = testing::postgres_server()
            .unwrap_or_else(|| panic!("{} is not set", testing::POSTGRES_URL_VAR));
        let pg = Db::open(&testing::fresh_postgres_database(&server).await.unwrap())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let lite = Db::open(&default_database_url(dir.path())).await.unwrap();
        let lite_cols: Vec<(String, String)> = sqlx::query_as(
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT IN ('sqlite_sequence', '_sqlx_migrations') \
             ORDER BY m.name, p.name",
        )
        .fetch_all(lite.pool())
        .await
        .unwrap();
        let pg_cols: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations' \
             AND column_name <> 'rowid' ORDER BY table_name, column_name",
        )
        .fetch_all(pg.pool())
        .await
        .unwrap();
        assert!(lite_cols.len() > 100, "{}", lite_cols.len());
        let mut lite_sorted = lite_cols.clone();
        lite_sorted.sort();
        let mut pg_sorted = pg_cols.clone();
        pg_sorted.sort();
        assert_eq!(lite_sorted, pg_sorted);
        // Every integer column is BIGINT (read as i64 on both).
        let narrow: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND data_type IN ('integer', 'smallint', 'numeric')",
        )
        .fetch_all(pg.pool())
        .await
        .unwrap();
        assert_eq!(narrow, vec![]);
    }

    /// A writer waits for another's write lock at most `busy_timeout`, then fails; once the
    /// lock is released it writes. The same on both backends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_waits_for_the_write_lock_at_most_the_busy_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let url = testing::test_database_url(dir.path()).await;
        let opts = DbOptions {
            busy_timeout: Duration::from_millis(300),
            ..DbOptions::default()
        };
        let db = Db::open_with(&url, &opts).await.unwrap();
        test_support::wallet(&db, "w").await;
        let mut lock = testing::hold_write_lock(&url).await;
        let started = Instant::now();
        let refused = db.reserve_agent_index("w", "", 1).await;
        let waited = started.elapsed();
        assert!(matches!(refused, Err(DbError::Sql(_))), "{refused:?}");
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
        assert_eq!(db.reserve_agent_index("w", "", 1).await.unwrap(), 0);
    }
}
