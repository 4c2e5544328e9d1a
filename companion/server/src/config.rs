//! Configuration: one struct, from flags and environment variables (clap).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser, ValueEnum};

/// Default credential lifetime: 3 days (the TA's cap).
pub const DEFAULT_JWT_TTL_SECS: u64 = kms_proto::jwt::MAX_TTL_SECS;
/// Default issue period of a JWT secret before rotation: 30 days.
pub const DEFAULT_ROTATION_PERIOD_SECS: u64 = 30 * 24 * 3600;
/// Verify-only overlap of a rotated JWT secret: 7 days (enforced by the TA).
pub const VERIFY_ONLY_SECS: u64 = kms_proto::jwt::VERIFY_ONLY_OVERLAP_SECS;

/// The shortest `--jwt-rotation-period-secs` accepted with credentials of
/// `jwt_ttl_secs`: `max(jwt_ttl_secs, VERIFY_ONLY_SECS)`, that is 7 days
/// (`--jwt-ttl-secs` is at most 3 days).
///
/// The rule, derived: kid K is current from its creation `c` until the
/// rotation `r` that retires it; the task rotates once the current kid is
/// `period` old, so `r ≥ c + period`. Every credential K signs is minted in
/// `[c, r]` and expires by `r + ttl`; K verifies until `r + overlap`, and
/// `overlap ≥ ttl` (`kms_proto::jwt`), so K outlives its credentials as long
/// as nothing drops it before its retire time. The TA never does: at its bound
/// of verify-only kids it refuses a normal rotation instead. The task's next
/// rotation, of K's successor (created at `r`), comes at `r + period` or
/// later; with `period ≥ overlap` K has retired by then, so a task rotation
/// never meets a verify-only kid still in its overlap: it is never refused,
/// and the task alone never keeps more than one verify-only kid. (With the
/// earlier "one verify-only kid kept" store, `period ≥ ttl` was what kept
/// K's credentials alive at that rotation; `overlap ≥ ttl` makes it part of
/// this rule.) `ttl + overlap` is not needed: the overlap is counted from the
/// rotation, which comes after the last credential K signs, so the credential
/// lifetime is already inside it. A shorter period cannot kill credentials
/// (the TA refuses instead) but is not kept: rotations pile up verify-only
/// kids until the TA refuses them for days.
pub fn min_rotation_period_secs(jwt_ttl_secs: u64) -> u64 {
    jwt_ttl_secs.max(VERIFY_ONLY_SECS)
}
/// Lifetime of a WebAuthn ceremony (and of the TA nonce it uses).
pub const CEREMONY_TTL_SECS: i64 = 300;
/// Default of `--client-rate-limit`: failed agent authentications per minute per client address.
pub const DEFAULT_CLIENT_RATE_LIMIT: u32 = 120;
/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How the signing routes wait for their audit event (`--audit-durability`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuditDurability {
    /// The event is committed, and the WAL fsynced (`synchronous = FULL` for the audit
    /// transaction), before the signature is released: it survives a power loss.
    Sync,
    /// The event is committed (`synchronous = NORMAL`) before the signature is released: it
    /// survives a crash of the companion, not a power loss or an OS crash.
    Commit,
    /// The event is queued and the signature released at once: a crash loses the events not
    /// yet committed (milliseconds' worth). For measurements (the baseline of the load driver).
    Queued,
}

/// The key companion: an HTTP service in front of the TEE-held keys.
///
/// Every option can also be set through the environment variable shown.
#[derive(Clone, Debug, Parser)]
#[command(name = "companion", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "KMS_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// Directory for the database file (and, by default, the TA simulator
    /// socket). Created if missing.
    #[arg(long, env = "KMS_DATA_DIR", default_value = "./kms-data")]
    pub data_dir: PathBuf,

    /// Database URL [default: sqlite://<DATA_DIR>/kms.db]: `sqlite://PATH` (an SQLite file,
    /// created if missing) or `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (a PostgreSQL
    /// server; the database must exist, its tables are created at start). Never logged with its
    /// password.
    #[arg(long, env = "KMS_DATABASE_URL")]
    pub database_url: Option<String>,

    /// At start-up, how long an unreachable database server is retried (backoff from 50 ms to
    /// 1 s) before the companion gives up and exits, in seconds (0: one try).
    #[arg(long, env = "KMS_DB_CONNECT_RETRY_SECS", default_value_t = 5)]
    pub db_connect_retry_secs: u64,

    /// Most database connections in the pool.
    #[arg(long, env = "KMS_DB_MAX_CONNECTIONS", default_value_t = 8)]
    pub db_max_connections: u32,

    /// TEE backend: `sim:<socket path>` (the ta-sim process) or `optee`
    /// [default: sim:<DATA_DIR>/ta.sock].
    #[arg(long, env = "KMS_TEE_BACKEND")]
    pub tee: Option<String>,

    /// Most agent signatures sent to the TA in one call (`SignAgentUserOps`) when several wait
    /// at once; at most 64. 1 turns batching off: each signature is its own call at once, with
    /// no bound on how many are at the TA together (`--tee-sign-parallel` is then unused).
    #[arg(long, env = "KMS_TEE_SIGN_BATCH", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub tee_sign_batch: u32,

    /// Most calls of agent signatures at the TA at once (each on its own TA session); while
    /// they are all out, new ones wait and go together. 0: one per core, and at least 2.
    #[arg(long, env = "KMS_TEE_SIGN_PARALLEL", default_value_t = 0)]
    pub tee_sign_parallel: u32,

    /// WebAuthn relying party id (the domain passkeys are scoped to). The TA
    /// binds each wallet to it.
    #[arg(long, env = "KMS_RP_ID", default_value = "localhost")]
    pub rp_id: String,

    /// WebAuthn relying party display name.
    #[arg(long, env = "KMS_RP_NAME", default_value = "Agent Key Companion")]
    pub rp_name: String,

    /// Allowed WebAuthn origins, comma-separated (e.g.
    /// `https://wallet.example.com`; by default `https://<RP_ID>`, or
    /// `http://localhost:<port>` when the rp id is localhost).
    #[arg(long = "origin", env = "KMS_ORIGIN", value_delimiter = ',')]
    pub origins: Vec<String>,

    /// Serve without API keys (open mode). Development only; the start-up
    /// log warns loudly. Ignored when --require-api-key is set. The
    /// variable takes 1/0, true/false, yes/no, on/off.
    #[arg(long = "open", env = "KMS_ALLOW_OPEN_MODE", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub open_mode: bool,

    /// Always require an API key (fail closed), even in --dev and even if
    /// --open is given.
    #[arg(long, env = "KMS_REQUIRE_API_KEY", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub require_api_key: bool,

    /// Create an API key with this label, print it once on stdout, and exit.
    #[arg(long, value_name = "LABEL")]
    pub create_api_key: Option<String>,

    /// Requests per minute allowed per API key (all API-key routes together).
    #[arg(long, env = "KMS_RATE_LIMIT", default_value_t = 600)]
    pub rate_limit: u32,

    /// Signing requests per minute allowed per agent credential
    /// (`/kms/sign-agent`, `POST /agent/intents`), checked before any TEE
    /// call and charged only once the presented credential is the agent's
    /// current one.
    #[arg(long, env = "KMS_AGENT_RATE_LIMIT", default_value_t = 20)]
    pub agent_rate_limit: u32,

    /// Intent status reads per minute allowed per agent credential
    /// (`GET /agent/intents/{userOpHash}`), charged once the credential
    /// matches. Between chain checks (--intent-poll-secs) a read is answered
    /// from the database.
    #[arg(long, env = "KMS_AGENT_READ_RATE_LIMIT", default_value_t = 120)]
    pub agent_read_rate_limit: u32,

    /// Failed agent authentications per minute allowed per client address
    /// (the TCP peer; behind a reverse proxy, the proxy) on the Bearer
    /// routes. Once spent, the address is refused 429 before any check until
    /// its bucket refills. IPv6 addresses count per /64.
    #[arg(long, env = "KMS_CLIENT_RATE_LIMIT", default_value_t = DEFAULT_CLIENT_RATE_LIMIT)]
    pub client_rate_limit: u32,

    /// Default lifetime of agent credentials in seconds (at most 3 days).
    /// A request may ask for a shorter one with `ttlSecs`.
    #[arg(long, env = "KMS_JWT_TTL_SECS", default_value_t = DEFAULT_JWT_TTL_SECS)]
    pub jwt_ttl_secs: u64,

    /// Rotate the JWT secret when the current one is older than this many
    /// seconds (30 days by default). At least the 7-day verify-only overlap
    /// (which covers --jwt-ttl-secs): a rotation then never meets a previous
    /// secret still verifying credentials.
    #[arg(long, env = "KMS_JWT_ROTATION_PERIOD_SECS", default_value_t = DEFAULT_ROTATION_PERIOD_SECS)]
    pub jwt_rotation_period_secs: u64,

    /// Development and tests only: accept a --jwt-rotation-period-secs
    /// shorter than the 7-day overlap (warned at start). The TA still keeps
    /// every verify-only secret until its retire time, so no credential dies
    /// early, but rotations pile up verify-only secrets and the TA refuses
    /// them at its bound until one retires. The variable takes 1/0,
    /// true/false, yes/no, on/off.
    #[arg(long, env = "KMS_ALLOW_SHORT_JWT_ROTATION_PERIOD", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub allow_short_jwt_rotation_period: bool,

    /// How often the rotation task runs, in seconds (24 h by default). The
    /// verify-only overlap of a rotated secret is 7 days, enforced by the TA.
    #[arg(long, env = "KMS_JWT_ROTATION_TICK_SECS", default_value_t = 24 * 3600)]
    pub jwt_rotation_tick_secs: u64,

    /// When the audit event of a signature is durable. `sync`: committed and fsynced before the
    /// signature is answered (survives a power loss); `commit`: committed (survives a crash of
    /// the companion, not of the machine); `queued`: not waited for (a crash loses the events
    /// still queued). Concurrent requests share one commit (group commit). Applies to
    /// /kms/sign-agent and POST /agent/intents; /Sign and /SignHash always wait for the commit.
    /// With sync or commit, a signature whose event cannot be committed is withheld (503
    /// audit_unavailable).
    #[arg(long, env = "KMS_AUDIT_DURABILITY", value_enum, default_value = "sync")]
    pub audit_durability: AuditDurability,

    /// Seconds between audit checkpoints: the TA signs the head of the audit log (its anchor)
    /// when rows were added since the last one. 0 turns the checkpoint task off (`kms-admin
    /// audit checkpoint` still makes one).
    #[arg(long, env = "KMS_AUDIT_CHECKPOINT_SECS", default_value_t = 60)]
    pub audit_checkpoint_secs: u64,

    /// Also checkpoint as soon as this many audit events were committed since the last
    /// checkpoint (0: by time only).
    #[arg(long, env = "KMS_AUDIT_CHECKPOINT_EVENTS", default_value_t = 1000)]
    pub audit_checkpoint_events: u64,

    /// How often expired WebAuthn ceremonies are deleted, in seconds.
    #[arg(long, env = "KMS_CHALLENGE_CLEANUP_SECS", default_value_t = 600)]
    pub challenge_cleanup_secs: u64,

    /// Ethereum JSON-RPC URL of the chain the agents' accounts live on. With
    /// --bundler-url, --validator-address and --account-factory it turns on
    /// the chain routes (`/kms/agent-sessions`, `/agent/intents`) and on-chain
    /// revocation.
    #[arg(long, env = "KMS_RPC_URL")]
    pub rpc_url: Option<String>,

    /// ERC-4337 bundler JSON-RPC URL (it must serve --entry-point).
    #[arg(long, env = "KMS_BUNDLER_URL")]
    pub bundler_url: Option<String>,

    /// SessionKeyValidator contract address.
    #[arg(long, env = "KMS_VALIDATOR_ADDRESS")]
    pub validator_address: Option<String>,

    /// AgentAccountFactory contract address (the factory of --entry-point).
    #[arg(long, env = "KMS_ACCOUNT_FACTORY")]
    pub account_factory: Option<String>,

    /// The account implementation owners' EOAs delegate to with EIP-7702
    /// (`Eip7702Account`; EntryPoint v0.8 only). With it, a session grant naming
    /// the wallet's owner address delegates that EOA in the same passkey
    /// ceremony; without it such a grant is 422 `unsupported_account`.
    #[arg(long, env = "KMS_EIP7702_ACCOUNT")]
    pub eip7702_account: Option<String>,

    /// EntryPoint version: v0.7 or v0.8.
    #[arg(long, env = "KMS_ENTRY_POINT_VERSION", default_value = "v0.7")]
    pub entry_point_version: String,

    /// EntryPoint contract address [default: the canonical address of
    /// --entry-point-version].
    #[arg(long, env = "KMS_ENTRY_POINT")]
    pub entry_point: Option<String>,

    /// Chain id the node and the bundler must report (checked at start-up)
    /// [default: whatever they agree on].
    #[arg(long, env = "KMS_CHAIN_ID")]
    pub chain_id: Option<u64>,

    /// Validity an agent's session must have left for an intent to be
    /// accepted, in seconds (bundlers refuse operations about to expire).
    #[arg(long, env = "KMS_SESSION_MARGIN_SECS", default_value_t = 30)]
    pub session_margin_secs: u64,

    /// How long `/kms/agent-sessions` waits for the owner's operation to be
    /// included before answering with status `pending`, in seconds.
    #[arg(long, env = "KMS_RECEIPT_WAIT_SECS", default_value_t = 60)]
    pub receipt_wait_secs: u64,

    /// Timeout of each request to the node and the bundler, in seconds
    /// (answers are also capped at 4 MiB).
    #[arg(long, env = "KMS_CHAIN_TIMEOUT_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub chain_timeout_secs: u64,

    /// Highest maxFeePerGas of any operation the companion builds, in gwei;
    /// a higher quote is refused (503 gas_above_ceiling), nothing signed.
    #[arg(long, env = "KMS_MAX_FEE_PER_GAS_GWEI", default_value_t = 1_000)]
    pub max_fee_per_gas_gwei: u64,

    /// Highest preVerificationGas (the bundler's own share) of any operation
    /// the companion builds.
    #[arg(
        long,
        env = "KMS_MAX_PRE_VERIFICATION_GAS",
        default_value_t = 1_000_000
    )]
    pub max_pre_verification_gas: u64,

    /// Highest sum of the gas limits of any operation the companion builds.
    #[arg(long, env = "KMS_MAX_OP_GAS", default_value_t = 15_000_000)]
    pub max_op_gas: u64,

    /// Highest maximum cost (gas limits × maxFeePerGas) of any operation the
    /// companion builds, in gwei (0.5 ETH by default).
    #[arg(long, env = "KMS_MAX_OP_COST_GWEI", default_value_t = 500_000_000)]
    pub max_op_cost_gwei: u64,

    /// Longest an HTTP request is answered after, in seconds: past it the
    /// client gets 503 request_timeout (work already started, such as an
    /// intent's submission, runs to its end and is recorded). Must exceed
    /// --receipt-wait-secs.
    #[arg(long, env = "KMS_REQUEST_TIMEOUT_SECS", default_value_t = 120)]
    pub request_timeout_secs: u64,

    /// How long an ERC-7715 `wallet_grantPermissions` call (`POST /rpc`) waits for the owner
    /// to approve or cancel it on /ui, in seconds; past it the request expires (JSON-RPC error
    /// -32011). At most --request-timeout-secs minus 5 s is waited (the request's own bound).
    #[arg(long, env = "KMS_PERMISSION_REQUEST_TIMEOUT_SECS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub permission_request_timeout_secs: u64,

    /// Most HTTP requests in progress at once; one more is answered 503
    /// overloaded at once.
    #[arg(long, env = "KMS_MAX_CONCURRENT_REQUESTS", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_concurrent_requests: u64,

    /// How often open intents are checked for their receipts, in seconds.
    #[arg(long, env = "KMS_INTENT_POLL_SECS", default_value_t = 2)]
    pub intent_poll_secs: u64,

    /// Development instance: a temporary data directory, its own ta-sim,
    /// rp id `localhost` with origin `http://localhost:<port>`, and a generated
    /// API key printed at start (or open mode if --open is also given).
    #[arg(long)]
    pub dev: bool,

    /// The ta-sim binary started by --dev [default: `ta-sim` next to this
    /// executable, else on PATH].
    #[arg(long, env = "KMS_TA_SIM_BIN")]
    pub ta_sim_bin: Option<PathBuf>,

    /// Log filter (error, warn, info, debug, trace, or tracing directives).
    #[arg(long, env = "KMS_LOG", default_value = "info")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "KMS_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// The chain settings, parsed (see [`Config::chain_settings`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainSettings {
    /// Node JSON-RPC URL.
    pub rpc_url: kms_chain::Url,
    /// Bundler JSON-RPC URL.
    pub bundler_url: kms_chain::Url,
    /// SessionKeyValidator.
    pub validator: [u8; 20],
    /// AgentAccountFactory.
    pub factory: [u8; 20],
    /// `v0.7` or `v0.8` (checked when the chain client is built).
    pub entry_point_version: String,
    /// EntryPoint address, if not the canonical one.
    pub entry_point: Option<[u8; 20]>,
    /// Expected chain id.
    pub chain_id: Option<u64>,
    /// The EIP-7702 account implementation, if configured.
    pub eip7702_account: Option<[u8; 20]>,
}

/// Which API-key policy is in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiKeyMode {
    /// Every API-key route requires a valid key; with none provisioned,
    /// every such request is refused.
    Required,
    /// No key is checked (explicitly chosen).
    Open,
}

impl Config {
    /// Parse from the command line and the environment.
    pub fn from_args() -> Self {
        Self::parse()
    }

    /// A configuration with every default (for tests and embedding).
    pub fn defaults() -> Self {
        Self::parse_from(["companion"])
    }

    /// The database URL in force.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| kms_db::default_database_url(&self.data_dir))
    }

    /// The TEE backend string in force.
    pub fn tee_backend(&self) -> String {
        self.tee.clone().unwrap_or_else(|| {
            kms_tee_client::TeeBackend::default_for_data_dir(&self.data_dir).to_string()
        })
    }

    /// The API-key mode in force.
    pub fn api_key_mode(&self) -> ApiKeyMode {
        if self.open_mode && !self.require_api_key {
            ApiKeyMode::Open
        } else {
            ApiKeyMode::Required
        }
    }

    /// Allowed origins, given the port actually bound.
    pub fn origins_for_port(&self, port: u16) -> Vec<String> {
        if !self.origins.is_empty() {
            return self.origins.clone();
        }
        if self.rp_id == "localhost" {
            vec![format!("http://localhost:{port}")]
        } else {
            vec![format!("https://{}", self.rp_id)]
        }
    }

    /// Check values that clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.jwt_ttl_secs == 0 || self.jwt_ttl_secs > kms_proto::jwt::MAX_TTL_SECS {
            return Err(format!(
                "--jwt-ttl-secs must be between 1 and {}",
                kms_proto::jwt::MAX_TTL_SECS
            ));
        }
        if self.rate_limit == 0
            || self.agent_rate_limit == 0
            || self.agent_read_rate_limit == 0
            || self.client_rate_limit == 0
        {
            return Err("rate limits must be at least 1 per minute".into());
        }
        let min_period = min_rotation_period_secs(self.jwt_ttl_secs);
        if self.jwt_rotation_period_secs < min_period && !self.allow_short_jwt_rotation_period {
            return Err(format!(
                "--jwt-rotation-period-secs ({}) must be at least {min_period} (7 days, the TA's \
                 verify-only overlap, which covers --jwt-ttl-secs {}): a shorter period rotates \
                 while the previous JWT secret still verifies live credentials, so rotations pile \
                 up verify-only secrets until the TA refuses them. Use a period of at least \
                 {min_period} (default {DEFAULT_ROTATION_PERIOD_SECS}), or, for development and \
                 tests only, --allow-short-jwt-rotation-period",
                self.jwt_rotation_period_secs, self.jwt_ttl_secs
            ));
        }
        if self.jwt_rotation_tick_secs == 0 || self.challenge_cleanup_secs == 0 {
            return Err("task intervals must be at least 1 second".into());
        }
        if self.rp_id.is_empty() {
            return Err("--rp-id must not be empty".into());
        }
        if self.intent_poll_secs == 0 {
            return Err("--intent-poll-secs must be at least 1".into());
        }
        if self.request_timeout_secs <= self.receipt_wait_secs {
            return Err(format!(
                "--request-timeout-secs ({}) must exceed --receipt-wait-secs ({}): a grant waits \
                 that long for its receipt before answering",
                self.request_timeout_secs, self.receipt_wait_secs
            ));
        }
        if self.max_fee_per_gas_gwei == 0
            || self.max_pre_verification_gas == 0
            || self.max_op_gas == 0
            || self.max_op_cost_gwei == 0
        {
            return Err("gas and fee ceilings must be above 0".into());
        }
        self.chain_settings()?;
        Ok(())
    }

    /// Timeouts and body cap of node and bundler requests.
    pub fn chain_http_limits(&self) -> kms_chain::http::HttpLimits {
        let timeout = std::time::Duration::from_secs(self.chain_timeout_secs);
        kms_chain::http::HttpLimits {
            timeout,
            connect_timeout: timeout.min(std::time::Duration::from_secs(5)),
            ..kms_chain::http::HttpLimits::default()
        }
    }

    /// Ceilings on the gas and fees of every operation built.
    pub fn gas_ceilings(&self) -> kms_chain::client::GasCeilings {
        const GWEI: u128 = 1_000_000_000;
        kms_chain::client::GasCeilings {
            max_fee_per_gas: u128::from(self.max_fee_per_gas_gwei) * GWEI,
            max_pre_verification_gas: u128::from(self.max_pre_verification_gas),
            max_total_gas: u128::from(self.max_op_gas),
            max_cost_wei: alloy::primitives::U256::from(u128::from(self.max_op_cost_gwei) * GWEI),
        }
    }

    /// The chain settings, when the chain routes are configured: all of
    /// --rpc-url, --bundler-url, --validator-address and --account-factory,
    /// or none of them.
    pub fn chain_settings(&self) -> Result<Option<ChainSettings>, String> {
        let given = [
            ("--rpc-url", self.rpc_url.as_deref()),
            ("--bundler-url", self.bundler_url.as_deref()),
            ("--validator-address", self.validator_address.as_deref()),
            ("--account-factory", self.account_factory.as_deref()),
        ];
        let missing: Vec<&str> = given
            .iter()
            .filter(|(_, v)| v.is_none_or(str::is_empty))
            .map(|(n, _)| *n)
            .collect();
        if missing.len() == given.len() {
            return Ok(None);
        }
        if !missing.is_empty() {
            return Err(format!(
                "the chain settings go together: missing {}",
                missing.join(", ")
            ));
        }
        let url = |name: &str, v: &str| -> Result<kms_chain::Url, String> {
            v.parse().map_err(|e| format!("{name}: invalid URL: {e}"))
        };
        let addr = |name: &str, v: &str| -> Result<[u8; 20], String> {
            let h = v.strip_prefix("0x").unwrap_or(v);
            let b = hex::decode(h).map_err(|_| format!("{name}: not hex"))?;
            b.try_into()
                .map_err(|_| format!("{name}: an address is 20 bytes"))
        };
        let version = self.entry_point_version.as_str();
        let entry_point = match &self.entry_point {
            Some(v) => Some(addr("--entry-point", v)?),
            None => None,
        };
        Ok(Some(ChainSettings {
            rpc_url: url("--rpc-url", self.rpc_url.as_deref().unwrap_or_default())?,
            bundler_url: url(
                "--bundler-url",
                self.bundler_url.as_deref().unwrap_or_default(),
            )?,
            validator: addr(
                "--validator-address",
                self.validator_address.as_deref().unwrap_or_default(),
            )?,
            factory: addr(
                "--account-factory",
                self.account_factory.as_deref().unwrap_or_default(),
            )?,
            entry_point_version: version.to_owned(),
            entry_point,
            chain_id: self.chain_id,
            eip7702_account: match self.eip7702_account.as_deref() {
                Some(v) if !v.is_empty() => Some(addr("--eip7702-account", v)?),
                _ => None,
            },
        }))
    }
}

impl Config {
    /// How long a `wallet_grantPermissions` call waits for the owner: the flag, within the
    /// request timeout (5 s before it, so the call answers its own JSON-RPC error).
    pub fn permission_wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.permission_request_timeout_secs
                .min(self.request_timeout_secs.saturating_sub(5))
                .max(1),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_modes() {
        let c = Config::defaults();
        assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(c.jwt_ttl_secs, 3 * 24 * 3600);
        assert_eq!(c.agent_rate_limit, 20);
        assert_eq!(c.client_rate_limit, 120);
        assert_eq!(c.audit_durability, AuditDurability::Sync);
        assert_eq!(
            (c.audit_checkpoint_secs, c.audit_checkpoint_events),
            (60, 1000)
        );
        assert_eq!(
            Config::parse_from(["companion", "--audit-durability", "queued"]).audit_durability,
            AuditDurability::Queued
        );
        assert!(Config::try_parse_from(["companion", "--audit-durability", "never"]).is_err());
        assert!(
            Config::parse_from(["companion", "--client-rate-limit", "0"])
                .validate()
                .is_err()
        );
        assert_eq!(
            Config::parse_from(["companion", "--client-rate-limit", "7"]).client_rate_limit,
            7
        );
        assert_eq!(c.api_key_mode(), ApiKeyMode::Required);
        assert!(c.tee_backend().starts_with("sim:"));
        assert!(c.database_url().ends_with("kms.db"));
        assert_eq!(
            c.origins_for_port(8080),
            vec!["http://localhost:8080".to_string()]
        );
        let open = Config::parse_from(["companion", "--open"]);
        assert_eq!(open.api_key_mode(), ApiKeyMode::Open);
        let forced = Config::parse_from(["companion", "--open", "--require-api-key"]);
        assert_eq!(forced.api_key_mode(), ApiKeyMode::Required);
        assert!(
            Config::parse_from(["companion", "--jwt-ttl-secs", "300000"])
                .validate()
                .is_err()
        );
        let o = Config::parse_from([
            "companion",
            "--origin",
            "https://a.example,https://b.example",
        ]);
        assert_eq!(o.origins.len(), 2);
    }

    #[test]
    fn rotation_period_must_cover_the_overlap() {
        const DAY: u64 = 24 * 3600;
        let period = |p: u64, extra: &[&str]| {
            let p = p.to_string();
            let mut args = vec!["companion", "--jwt-rotation-period-secs", p.as_str()];
            args.extend_from_slice(extra);
            Config::parse_from(args).validate()
        };
        // The default and the exact minimum pass.
        assert_eq!(Config::defaults().validate(), Ok(()));
        assert_eq!(min_rotation_period_secs(DEFAULT_JWT_TTL_SECS), 7 * DAY);
        assert_eq!(min_rotation_period_secs(3600), 7 * DAY);
        assert_eq!(period(7 * DAY, &[]), Ok(()));
        // Shorter than the overlap, even if longer than the credential lifetime:
        // refused, naming the flags.
        for p in [0, DAY, 3 * DAY, 4 * DAY, 7 * DAY - 1] {
            let err = period(p, &[]).unwrap_err();
            assert!(
                err.contains("--jwt-rotation-period-secs")
                    && err.contains("--jwt-ttl-secs")
                    && err.contains("--allow-short-jwt-rotation-period")
                    && err.contains(&(7 * DAY).to_string()),
                "{err}"
            );
        }
        let err = period(DAY, &["--jwt-ttl-secs", "3600"]).unwrap_err();
        assert!(err.contains("--jwt-ttl-secs 3600"), "{err}");
        // The development escape hatch.
        assert_eq!(period(1, &["--allow-short-jwt-rotation-period"]), Ok(()));
    }

    #[test]
    fn bounds_and_ceilings_are_checked_and_converted() {
        let c = Config::defaults();
        let g = c.gas_ceilings();
        assert_eq!(g.max_fee_per_gas, 1_000 * 1_000_000_000);
        assert_eq!(
            g.max_cost_wei,
            alloy::primitives::U256::from(500_000_000u128 * 1_000_000_000)
        );
        assert_eq!(c.chain_http_limits().timeout.as_secs(), 15);
        // The answer timeout must outlast the grant's receipt wait.
        let err = Config::parse_from([
            "companion",
            "--request-timeout-secs",
            "60",
            "--receipt-wait-secs",
            "60",
        ])
        .validate()
        .unwrap_err();
        assert!(
            err.contains("--request-timeout-secs") && err.contains("--receipt-wait-secs"),
            "{err}"
        );
        let err = Config::parse_from(["companion", "--max-op-gas", "0"])
            .validate()
            .unwrap_err();
        assert!(err.contains("ceilings"), "{err}");
        assert!(Config::try_parse_from(["companion", "--max-concurrent-requests", "0"]).is_err());
        assert!(Config::try_parse_from(["companion", "--chain-timeout-secs", "0"]).is_err());
    }

    #[test]
    fn chain_settings_go_together() {
        assert_eq!(Config::defaults().chain_settings(), Ok(None));
        let partial = Config::parse_from(["companion", "--rpc-url", "http://127.0.0.1:8545"]);
        let err = partial.chain_settings().unwrap_err();
        assert!(
            err.contains("--bundler-url") && err.contains("--account-factory"),
            "{err}"
        );
        assert!(partial.validate().is_err());
        let full = Config::parse_from([
            "companion",
            "--rpc-url",
            "http://127.0.0.1:8545",
            "--bundler-url",
            "http://127.0.0.1:4337",
            "--validator-address",
            "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0",
            "--account-factory",
            "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9",
        ]);
        let c = full.chain_settings().unwrap().unwrap();
        assert_eq!(c.entry_point_version, "v0.7");
        assert_eq!(c.entry_point, None);
        assert_eq!(c.validator[0], 0x9f);
        let bad = Config::parse_from([
            "companion",
            "--rpc-url",
            "http://127.0.0.1:8545",
            "--bundler-url",
            "http://127.0.0.1:4337",
            "--validator-address",
            "0x9fE4",
            "--account-factory",
            "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9",
        ]);
        assert!(bad.chain_settings().unwrap_err().contains("20 bytes"));
    }
}
