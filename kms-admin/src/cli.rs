//! The command line (clap). Every configuration option can also be set through the same
//! environment variable the companion reads, so one environment serves both.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes, shown at the end of every `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  an operation failed (see the message)
  2  usage error
  3  unknown key (agent key, API key, wallet, or no operator key yet)
  4  database missing or unusable
  5  TEE (TA) unreachable
  6  RPC (node) unreachable or failing
  7  configuration incomplete for this command (e.g. no RPC URL)
  8  the audit log does not verify (audit verify, audit checkpoint)
  9  the wallet is held by another TA than this host's (run the command on a board of that TA)";

/// Operator CLI of the key companion.
#[derive(Debug, Parser)]
#[command(
    name = "kms-admin",
    version,
    about = "Operator CLI of the key companion: JWT secrets, agent keys (database, TA and \
             chain), API keys, the operator key, the audit log.",
    long_about = "Operator CLI of the key companion: JWT secrets, agent keys (database, TA and \
chain), API keys, the operator key, the audit log.\n\n\
It reads the same configuration as the companion (flags or the same KMS_* environment \
variables) and works while the companion runs: the database is SQLite in WAL mode, and \
kms-admin opens its own session to the TA. It never prints a secret, except the API key that \
`api-key create` shows once.\n\n\
Human-readable tables by default; --json prints one JSON document on stdout for scripts (and \
errors as JSON on stderr).",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Where the database, the TA and the chain are.
    #[command(flatten)]
    pub config: AdminConfig,

    /// Print JSON instead of tables (errors go to stderr as JSON too).
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the database, the TA and the chain are: the companion's settings of the same names.
#[derive(Clone, Debug, Args)]
pub struct AdminConfig {
    /// The companion's data directory (holds kms.db and, by default, the ta-sim socket).
    #[arg(
        long,
        env = "KMS_DATA_DIR",
        default_value = "./kms-data",
        global = true,
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// Database URL [default: sqlite://<DATA_DIR>/kms.db]. Never created by kms-admin.
    #[arg(long, env = "KMS_DATABASE_URL", global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// TEE backend: `sim:<socket path>` (the ta-sim process) or `optee`
    /// [default: sim:<DATA_DIR>/ta.sock].
    #[arg(long, env = "KMS_TEE_BACKEND", global = true, value_name = "BACKEND")]
    pub tee: Option<String>,

    /// Ethereum JSON-RPC URL: on-chain revocation, session spends, the operator's balance.
    #[arg(long, env = "KMS_RPC_URL", global = true, value_name = "URL")]
    pub rpc_url: Option<String>,

    /// SessionKeyValidator contract address (on-chain revocation and session reads).
    #[arg(
        long,
        env = "KMS_VALIDATOR_ADDRESS",
        global = true,
        value_name = "ADDRESS"
    )]
    pub validator_address: Option<String>,

    /// Chain id the node must report (checked before anything is sent).
    #[arg(long, env = "KMS_CHAIN_ID", global = true, value_name = "ID")]
    pub chain_id: Option<u64>,

    /// How long `revoke-agent-key` waits for the revokeSession transaction to be mined.
    #[arg(
        long,
        env = "KMS_ADMIN_TX_TIMEOUT_SECS",
        default_value_t = 120,
        global = true,
        value_name = "SECS"
    )]
    pub tx_timeout_secs: u64,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rotate the JWT HMAC secret in the TA and record the result in jwt_secret_meta.
    ///
    /// Normal: a new current kid signs new credentials; the previous current kid stays
    /// verify-only for the 7-day overlap (credentials it signed keep working until they
    /// expire). Older verify-only kids are kept until their own retire time (only those past
    /// it are purged), up to the TA's limit of 4: at the limit the TA refuses the rotation,
    /// changes nothing, and the command fails (exit 1) saying when it can run. --force: every
    /// old kid is purged at once, so every outstanding credential is refused from now on.
    #[command(after_help = EXIT_CODES)]
    RotateJwtSecret {
        /// Purge every old kid now: every outstanding agent credential dies.
        #[arg(long)]
        force: bool,
    },

    /// Every JWT secret kid: status, created, retire-at, age (read from the TA, which
    /// jwt_secret_meta is brought in line with; retired kids come from the table's history).
    #[command(after_help = EXIT_CODES)]
    JwtSecretStatus,

    /// List agent keys with their credential and on-chain sessions.
    ///
    /// One line per session (a key granted on several accounts has several; a pending, failed
    /// or superseded grant is listed with that status). Each session's account, caps (value,
    /// gas, usage, per token), paymaster and window come from the database as granted; when an
    /// RPC URL and the validator address are configured, an active, revoked or revoke_failed
    /// session is read from the chain instead (value, gas and token caps and what was spent of
    /// them, operations used of the limit, window, active), at the latest block. The targets'
    /// functions always come from the database.
    #[command(after_help = EXIT_CODES)]
    ListAgentKeys {
        /// Only this wallet's agent keys (wallet UUID).
        #[arg(long, value_name = "WALLET_ID")]
        wallet: Option<String>,
        /// Only keys with this status.
        #[arg(long, value_enum)]
        status: Option<StatusFilter>,
        /// Do not read sessions from the chain even when an RPC URL is configured.
        #[arg(long)]
        no_chain: bool,
    },

    /// Revoke an agent key in every layer: database, TA (generation bump), chain.
    ///
    /// The database row is revoked first (the companion refuses the key at once), then the TA
    /// bumps the key's generation and refuses every credential of it, then the operator key
    /// sends SessionKeyValidator.revokeSession on every account where the key has a live
    /// session (each account's outcome printed). Each layer's outcome is printed; a layer
    /// already revoked is a success with a note, so re-running finishes what a failed run left
    /// undone. Exits non-zero if any layer (or account) failed. The same code path as the
    /// companion's POST /kms/revoke-agent-credential. A wallet the database records on another
    /// TA than this host's is refused before any layer (exit 9): run it on a board of that TA.
    #[command(after_help = EXIT_CODES)]
    RevokeAgentKey {
        /// The agent key: `<wallet_uuid>:<agent_index>`.
        #[arg(value_name = "WALLET:INDEX")]
        key_id: String,
        /// Revoke in the database and the TA only; do not touch the chain.
        #[arg(long)]
        db_only: bool,
    },

    /// Make the TA accept a restored (older) sealed state, and bring the database in line.
    ///
    /// The TA keeps a monotonic counter outside its sealed state (RPMB on OP-TEE, a file beside
    /// sealed.bin in ta-sim). When the sealed state is older than the counter (an older copy of
    /// it was put back: a backup restore, a copied file) the TA refuses every command that
    /// touches state, and the companion answers 503 ta_rolled_back on every route that reaches
    /// the TA; it does the same when the TA is behind its database. This command is the only
    /// way out, once you have decided to run with the restored state.
    ///
    /// What it does: the TA re-seals the state it holds with a version past its counter and
    /// serves it again; then the database follows the TA where the TA is behind it (an active
    /// agent the TA does not know is revoked in the database; an active agent at an older
    /// generation in the TA takes that generation, so its newest credential is refused until
    /// the owner refreshes it), and agents revoked in the database but live in the restored TA
    /// are revoked in the TA again. It is recorded in the audit log. The companion serves again
    /// within seconds.
    ///
    /// CONSEQUENCES: everything the restored copy predates comes back in the TA. Agents
    /// revoked since then are live again in the TA (those the database knows as revoked are
    /// revoked again by this command, others are not); removed wallets and replaced passkeys
    /// come back; an operator key created since is gone. Credentials do not come back: with a
    /// rolled-back state the TA force-rotates its JWT secrets in the same write (superseded
    /// credentials would otherwise verify again), so every agent credential dies and owners
    /// refresh them. Revoke on chain the sessions of agents the TA no longer knows.
    ///
    /// Who can call it: whoever can open a session to the TA (ta-sim: the user owning its
    /// socket, mode 0600; OP-TEE: any client allowed to open /dev/tee0). The intended gate is
    /// the TA checking the caller's OP-TEE login. Without --yes nothing is changed (exit 2).
    #[command(after_help = EXIT_CODES)]
    AcceptRestore {
        /// Confirm: accept the restored state with the consequences above.
        #[arg(long)]
        yes: bool,
    },

    /// Manage API keys (stored hashed; a new key is shown once).
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),

    /// The audit log: verify it against the checkpoints signed in the TA, or anchor it now.
    #[command(subcommand)]
    Audit(AuditCommand),

    /// The operator key's address (the revoker of sessions) and its balance.
    ///
    /// The operator key lives in the TA and signs only revokeSession transactions. It is not
    /// created implicitly: without --create a missing key is an error (exit 3). The balance
    /// needs an RPC URL.
    #[command(after_help = EXIT_CODES)]
    OperatorAddress {
        /// Create the operator key in the TA if it does not exist yet (no-op if it does).
        #[arg(long)]
        create: bool,
    },
}

/// The `api-key` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key; it is printed once and only its hash is stored.
    #[command(after_help = EXIT_CODES)]
    Create {
        /// A label to recognise the key by.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List API keys (never the keys themselves).
    #[command(after_help = EXIT_CODES)]
    List,
    /// Revoke an API key by its id (as shown by `list`).
    #[command(after_help = EXIT_CODES)]
    Revoke {
        /// The key's id (16 hex digits).
        id: String,
    },
}

/// The `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the audit log against the TA: exit 0 if it verifies, 8 if not.
    ///
    /// The companion's audit log is a hash chain of rows; the TA keeps an anchor over the row
    /// hashes in its sealed (rollback-protected) state and signs a checkpoint of it with a key
    /// of its own every --audit-checkpoint-secs or --audit-checkpoint-events (the companion's
    /// settings), stored in the table audit_checkpoints.
    ///
    /// This command recomputes every row's hash and the anchor over all of them, reads the
    /// TA's audit public key and last checkpoint from the TA itself (never from the database),
    /// and checks every stored checkpoint's signature and anchor. It reports, each with a
    /// stable code: a broken chain (chain_broken: a row edited, inserted or deleted without
    /// re-hashing); a log shorter than the TA anchored (log_truncated: its tail deleted); a
    /// different anchor at the TA's row (anchor_mismatch: the log rewritten, even with every
    /// hash recomputed); a checkpoint that does not match the rows (checkpoint_mismatch),
    /// missing from the table (checkpoint_missing), or not signed by the TA's audit key
    /// (checkpoint_bad_signature). Checkpoints the TA signed before its state was restored
    /// with accept-restore (numbered past its last one, or twice) are checked like the
    /// others and noted (ta_anchor_restored): the TA no longer pins the rows they cover.
    ///
    /// Rows after the TA's last checkpoint are not anchored yet: they are counted
    /// (unanchoredRows), not judged; whoever controls the host could still change them. Run
    /// `kms-admin audit checkpoint` first to anchor everything up to now. The check is as
    /// trustworthy as the host it runs on and its channel to the TA: compare the audit key
    /// id with one recorded elsewhere.
    ///
    /// --json prints the report: {ok, rows, lastSeq, anchoredSeq, unanchoredRows,
    /// checkpoints, ta: {publicKey, keyId, index, seq, anchor, rowHead, taTime}, problems:
    /// [{code, message, seq, index, count}], notes: [same]}. Read-only: changes nothing.
    #[command(after_help = EXIT_CODES)]
    Verify,
    /// Have the TA sign a checkpoint of the audit log now, up to its last row.
    ///
    /// What the companion's checkpoint task does on its own: stores the TA's last checkpoint
    /// if the table lacks it, checks that the rows after it chain from it, and has the TA fold
    /// their hashes into its anchor and sign it (4096 rows per checkpoint). Refused (exit 8,
    /// nothing sent to the TA) when the rows do not chain: run `audit verify`.
    #[command(after_help = EXIT_CODES)]
    Checkpoint,
}

/// `--status` of `list-agent-keys`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusFilter {
    /// Credential issued and not revoked.
    Active,
    /// Revoked.
    Revoked,
    /// Creation in flight.
    Pending,
    /// Creation refused by the TA.
    Failed,
}

impl StatusFilter {
    /// The database status it selects.
    pub fn status(self) -> kms_db::AgentStatus {
        match self {
            StatusFilter::Active => kms_db::AgentStatus::Active,
            StatusFilter::Revoked => kms_db::AgentStatus::Revoked,
            StatusFilter::Pending => kms_db::AgentStatus::Pending,
            StatusFilter::Failed => kms_db::AgentStatus::Failed,
        }
    }
}
