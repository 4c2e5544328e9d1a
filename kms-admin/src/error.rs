//! Errors and exit codes.
//!
//! Every failure maps to one [`Exit`] code, so scripts can tell a missing database from an
//! unreachable TA or node without parsing messages:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (for `revoke-agent-key`: every layer revoked, already revoked, or had nothing to revoke) |
//! | 1 | an operation failed (the message says what; e.g. the chain refused, the TA refused) |
//! | 2 | usage error (bad arguments; clap's own code) |
//! | 3 | unknown key: no such agent key, API key, wallet, or the operator key does not exist |
//! | 4 | database missing or unusable |
//! | 5 | TEE (TA) unreachable |
//! | 6 | RPC (node) unreachable or failing |
//! | 7 | configuration incomplete for this command (e.g. no RPC URL or validator address) |
//! | 8 | the audit log does not verify (`audit verify`: truncated, rewritten, a checkpoint missing or not the TA's; `audit checkpoint`: the log does not chain from the TA's anchor) |
//! | 9 | the wallet is held by another TA than this host's (several TAs over one database): run the command on a board of that TA |

use kms_tee_client::TeeError;

/// The process exit codes (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exit {
    /// 1: an operation failed.
    Failure = 1,
    /// 2: usage error.
    Usage = 2,
    /// 3: unknown key.
    UnknownKey = 3,
    /// 4: database missing or unusable.
    Database = 4,
    /// 5: TEE unreachable.
    TeeUnreachable = 5,
    /// 6: RPC unreachable.
    RpcUnreachable = 6,
    /// 7: configuration incomplete.
    NotConfigured = 7,
    /// 8: the audit log does not verify against the TA's anchor.
    AuditFailed = 8,
    /// 9: the wallet is held by another TA than this host's.
    OtherTa = 9,
}

impl Exit {
    /// The numeric exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// A stable machine-readable name (the `code` of `--json` errors).
    pub fn name(self) -> &'static str {
        match self {
            Exit::Failure => "failure",
            Exit::Usage => "usage",
            Exit::UnknownKey => "unknown_key",
            Exit::Database => "database_unavailable",
            Exit::TeeUnreachable => "tee_unreachable",
            Exit::RpcUnreachable => "rpc_unreachable",
            Exit::NotConfigured => "not_configured",
            Exit::AuditFailed => "audit_verification_failed",
            Exit::OtherTa => "wallet_on_other_ta",
        }
    }
}

/// A failure: what happened, its exit code, and a hint on what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AdminError {
    /// The exit code.
    pub exit: Exit,
    /// What went wrong (never a secret, never a URL).
    pub message: String,
    /// What to do about it, if there is something useful to say.
    pub hint: Option<String>,
}

impl AdminError {
    /// An error of kind `exit`.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    /// The same error with a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A database error.
    pub fn db(e: kms_db::DbError) -> Self {
        match e {
            kms_db::DbError::Missing(path) => Self::new(
                Exit::Database,
                format!("database not found: {}", path.display()),
            )
            .hint(
                "the companion creates it on its first start; point kms-admin at it with \
                 --data-dir / KMS_DATA_DIR or --database-url / KMS_DATABASE_URL",
            ),
            e @ kms_db::DbError::Unreachable { .. } => Self::new(Exit::Database, e.to_string())
                .hint(
                    "is the database server running and reachable? The database is set with \
                     --database-url / KMS_DATABASE_URL (sqlite://PATH or postgres://...)",
                ),
            e @ kms_db::DbError::NewerSchema { .. } => Self::new(Exit::Database, e.to_string())
                .hint("use the kms-admin of the same release as the companion that migrated it"),
            other => Self::new(Exit::Database, format!("database unusable: {other}")),
        }
    }

    /// A TEE error.
    pub fn tee(e: TeeError) -> Self {
        match e {
            TeeError::Unavailable { .. } => Self::new(Exit::TeeUnreachable, e.to_string()).hint(
                "is ta-sim (or the TA with tee-supplicant) running? The backend is set with \
                 --tee / KMS_TEE_BACKEND (default sim:<DATA_DIR>/ta.sock)",
            ),
            TeeError::NotBuilt(_) => Self::new(Exit::NotConfigured, e.to_string()),
            TeeError::Ta(
                kms_proto::TaError::AgentNotFound
                | kms_proto::TaError::WalletNotFound
                | kms_proto::TaError::OperatorKeyMissing,
            ) => Self::new(Exit::UnknownKey, e.to_string()),
            TeeError::Ta(kms_proto::TaError::StateRolledBack { .. }) => {
                Self::new(Exit::Failure, e.to_string()).hint(
                    "an older copy of the TA's sealed state was put back; read `kms-admin \
                     accept-restore --help` before accepting it",
                )
            }
            other => Self::new(Exit::Failure, other.to_string()),
        }
    }
}

impl From<kms_db::DbError> for AdminError {
    fn from(e: kms_db::DbError) -> Self {
        Self::db(e)
    }
}

impl From<TeeError> for AdminError {
    fn from(e: TeeError) -> Self {
        Self::tee(e)
    }
}

/// Result alias.
pub type Result<T, E = AdminError> = std::result::Result<T, E>;
