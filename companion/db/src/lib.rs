//! The key companion's database (docs/ARCHITECTURE.md#the-database).
//!
//! SQLite through sqlx, opened in WAL mode with foreign keys on and a busy
//! timeout, so the running companion and `kms-admin` can use one file at
//! the same time. Migrations are embedded ([`MIGRATOR`]) and run by
//! [`Db::open`]. All queries are runtime queries (no compile-time database).
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
mod challenges;
mod intents;
mod jwt_meta;
mod permission_requests;
mod sessions;
mod wallets;

use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use agents::{AgentActivation, AgentKey, AgentStatus};
pub use anchor::{
    checkpoint_signed_by, AnchorError, Anchored, AuditProblem, AuditReport, Stored,
    StoredCheckpoint, TaAnchorSummary,
};
pub use api_keys::{ApiKeyInfo, NewApiKey, API_KEY_PREFIX};
pub use audit::{AuditAppender, AuditEvent, AuditRecord, AuditVerification, GENESIS_HASH};
pub use challenges::{Challenge, ChallengeKind, ChallengeRefusal, NewChallenge};
pub use intents::{Intent, IntentChange, IntentReason, IntentStatus, NewIntent};
pub use jwt_meta::{jwt_secret_meta_from_ta, JwtSecretMeta, JwtSecretState};
pub use permission_requests::{NewPermissionRequest, PermissionRequest, PermissionRequestStatus};
pub use sessions::{AccountKind, AgentSession, NewSession, SessionStatus};
pub use wallets::{NewWallet, PasskeyCredential, Wallet, WalletAddress};

/// The embedded migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

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
    /// A row violates an invariant (e.g. a status string not known).
    #[error("database row is invalid: {0}")]
    Invalid(String),
    /// The randomness source failed.
    #[error("randomness source failed")]
    Entropy,
}

/// Result alias.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// Options for [`Db::open_with`].
#[derive(Clone, Debug)]
pub struct DbOptions {
    /// Most pooled connections.
    pub max_connections: u32,
    /// How long a writer waits for the lock before failing.
    pub busy_timeout: Duration,
    /// How long a caller waits for a pooled connection.
    pub acquire_timeout: Duration,
    /// Create the database file if it does not exist (the companion does; `kms-admin` does
    /// not, and reports a missing database as [`DbError::Missing`]).
    pub create_if_missing: bool,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            busy_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(30),
            create_if_missing: true,
        }
    }
}

/// A handle to the database (cheap to clone: a connection pool).
#[derive(Clone, Debug)]
pub struct Db {
    pool: SqlitePool,
}

impl Db {
    /// Open (creating if missing) the database at `url` (`sqlite:PATH` or
    /// `sqlite://PATH`) and run pending migrations.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, &DbOptions::default()).await
    }

    /// [`Db::open`] with explicit pool options.
    pub async fn open_with(url: &str, opts: &DbOptions) -> Result<Self> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(opts.create_if_missing)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(opts.busy_timeout)
            .statement_cache_capacity(256);
        let filename = connect.get_filename().to_owned();
        let pool = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .min_connections(1)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| {
                if !opts.create_if_missing && is_cant_open(&e) {
                    DbError::Missing(filename)
                } else {
                    DbError::Sql(e)
                }
            })?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// The underlying pool (for tests and tools).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
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

    pub async fn temp_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("kms.db").display());
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
}
