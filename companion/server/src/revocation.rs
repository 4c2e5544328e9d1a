//! Revoking an agent: the one code path of `POST /kms/revoke-agent-credential` (the owner's
//! passkey) and `kms-admin revoke-agent-key` (the operator on the host).
//!
//! [`revoke_agent`] runs three layers, each idempotent, each outcome reported:
//!
//! 1. **database**: the agent row becomes `revoked` (the host refuses its credential at once);
//! 2. **TEE**: the TA's generation is bumped (`RevokeAgentKey`), so the TA itself refuses every
//!    credential of the key, and the database takes that generation;
//! 3. **chain**: for every account where the agent has a live session (`active` session rows, and
//!    `revoke_failed` ones: see [`kms_db::SessionStatus`]), the operator's `revokeSession` signed
//!    in the TA ([`NodeClient::revoke_session`]), each account's outcome recorded on its rows
//!    (`revoked`, or `revoke_failed` with the error, retried by the next revocation) and
//!    reported ([`AccountRevocation`]). A session already revoked on chain counts as done; one
//!    that is not on chain at all is closed and reported as such (`not_on_chain`).
//!
//! A grant still `pending` is not one of the agent's sessions, but it may be on chain already
//! (its receipt not seen yet): its account is checked too, and reported only when a live session
//! was found and revoked there (or the check failed). Its row stays pending; a grant included for
//! an agent that is revoked by then is revoked on chain as soon as it is seen
//! ([`crate::service::sessions`]: the grant route and the background task). A grant that failed
//! (refused, reverted, dropped) never comes into it.
//!
//! The TA and the chain are reached through [`TaAccess`] and [`ChainAccess`]: the companion's
//! [`crate::tee::Tee`] and chain state, or `kms-admin`'s own TA session and node.
//!
//! The operator key sends one transaction at a time across every process on the database
//! (companions sharing it, `kms-admin` beside them): each `revokeSession` holds the lease
//! [`operator_lease_name`] from reading the operator's nonce to its receipt. Two transactions
//! built from the same pending nonce would otherwise replace one another, and one session would
//! stay live on chain.

use std::future::Future;
use std::time::Duration;

use alloy::primitives::{Address, B256};
use kms_chain::client::{ChainError, RevokeOutcome};
use kms_chain::node::NodeClient;
use kms_chain::operator::OperatorSigner;

use crate::tee::TaOperator;
use kms_db::{AgentKey, AgentSession, AgentStatus, Db, SessionStatus};
use kms_proto::{AgentState, GetAgentState, RevokeAgentKey, TaError, WalletId};
use kms_tee_client::{TeeClient, TeeError};

/// Why a layer (or one account) could not be revoked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RevokeFailure {
    /// The database failed.
    #[error("database: {0}")]
    Database(String),
    /// The TA failed or refused.
    #[error("{0}")]
    Tee(TeeError),
    /// The companion refuses to use a TA found rolled back (`ta_rolled_back`).
    #[error("the TA's state is rolled back: {0}")]
    TaRolledBack(String),
    /// The TA does not know a key the database holds as issued.
    #[error("the TA does not know this key ({0}); is this the companion's TA?")]
    UnknownToTa(TaError),
    /// The agent row has no usable address.
    #[error("the agent key's recorded address is not an address")]
    BadRecord,
    /// The chain side could not be set up (no node configured, node unreachable, ...).
    #[error("{message}")]
    ChainUnavailable {
        /// What failed (never a URL).
        message: String,
        /// What to do about it.
        hint: Option<String>,
        /// Which kind of failure.
        kind: Unavailable,
    },
    /// The TA has no operator key: it cannot be any session's revoker.
    #[error("the TA has no operator key, so it cannot be this session's revoker")]
    OperatorMissing,
    /// The session names another revoker: the chain would refuse the operator.
    #[error(
        "the operator {operator} is not this session's revoker ({revoker}), so the chain would \
         refuse its revokeSession"
    )]
    NotRevoker {
        /// The operator key's address.
        operator: Address,
        /// The session's revoker.
        revoker: Address,
    },
    /// The node, the transaction, or the TA's operator ceilings failed the revocation.
    #[error("{message}")]
    Chain {
        /// What failed (never a URL).
        message: String,
        /// Whether the node could not be reached (rather than refusing).
        node: bool,
    },
}

/// Why the chain side of a revocation could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// No node (or validator) configured.
    NotConfigured,
    /// The node could not be reached or checked.
    Node,
    /// The TA (holding the operator key) could not be reached.
    Tee,
    /// Anything else.
    Other,
}

impl From<ChainError> for RevokeFailure {
    fn from(e: ChainError) -> Self {
        match e {
            ChainError::Node { .. } => RevokeFailure::Chain {
                message: e.to_string(),
                node: true,
            },
            ChainError::OperatorSigner(e) => match crate::tee::tee_failure(e) {
                Ok(t) => RevokeFailure::Tee(t),
                Err(e) => RevokeFailure::Chain {
                    message: ChainError::OperatorSigner(e).to_string(),
                    node: false,
                },
            },
            ChainError::NotRevoker { operator, revoker } => {
                RevokeFailure::NotRevoker { operator, revoker }
            }
            other => RevokeFailure::Chain {
                message: other.to_string(),
                node: false,
            },
        }
    }
}

impl RevokeFailure {
    /// What to do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            RevokeFailure::ChainUnavailable { hint, .. } => hint.clone(),
            RevokeFailure::OperatorMissing | RevokeFailure::NotRevoker { .. } => {
                Some("the account owner must revoke the session".into())
            }
            _ => None,
        }
    }
}

/// What became of one layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layer {
    /// Revoked by this run.
    Revoked(String),
    /// Was already revoked, or there was nothing to revoke: a success, with a note.
    AlreadyDone(String),
    /// Not attempted on purpose (`kms-admin --db-only`): a success.
    Skipped(String),
    /// Failed.
    Failed(RevokeFailure),
}

impl Layer {
    /// The failure, if it failed.
    pub fn failure(&self) -> Option<&RevokeFailure> {
        match self {
            Layer::Failed(f) => Some(f),
            _ => None,
        }
    }
}

/// What became of the agent's session on one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountOutcome {
    /// The operator's `revokeSession` was mined.
    Revoked {
        /// Its transaction.
        tx_hash: B256,
        /// Its block.
        block_number: u64,
    },
    /// The session was already revoked on chain; nothing was sent.
    AlreadyRevoked,
    /// No session of the agent on that account on chain (never included there, or granted
    /// elsewhere); nothing was sent.
    NotOnChain,
    /// Not attempted (`kms-admin --db-only`).
    Skipped(String),
    /// The revocation failed: the session may still be live (recorded `revoke_failed`).
    Failed(RevokeFailure),
}

impl AccountOutcome {
    /// The status word of the HTTP answer and `kms-admin --json`: `revoked`,
    /// `already_revoked`, `not_on_chain`, `skipped` or `failed`.
    pub fn status(&self) -> &'static str {
        match self {
            AccountOutcome::Revoked { .. } => "revoked",
            AccountOutcome::AlreadyRevoked => "already_revoked",
            AccountOutcome::NotOnChain => "not_on_chain",
            AccountOutcome::Skipped(_) => "skipped",
            AccountOutcome::Failed(_) => "failed",
        }
    }

    /// The transaction, when one was mined.
    pub fn tx_hash(&self) -> Option<B256> {
        match self {
            AccountOutcome::Revoked { tx_hash, .. } => Some(*tx_hash),
            _ => None,
        }
    }

    /// The failure, if it failed.
    pub fn failure(&self) -> Option<&RevokeFailure> {
        match self {
            AccountOutcome::Failed(f) => Some(f),
            _ => None,
        }
    }

    /// Done on chain (revoked now or before, or nothing there).
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            AccountOutcome::Revoked { .. }
                | AccountOutcome::AlreadyRevoked
                | AccountOutcome::NotOnChain
        )
    }
}

/// The agent's session on one account, and what its revocation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRevocation {
    /// The smart account (`0x` lowercase).
    pub account: Address,
    /// What became of it.
    pub outcome: AccountOutcome,
    /// The session rows it closed (or marked `revoke_failed`).
    pub sessions: Vec<i64>,
    /// Whether the account had only a pending grant (checked on chain because it may have been
    /// included already).
    pub pending_grant: bool,
}

/// What [`revoke_agent`] did, layer by layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// `"{wallet}:{index}"`.
    pub key_id: String,
    /// The database layer.
    pub database: Layer,
    /// The TEE layer.
    pub tee: Layer,
    /// The TA's generation after the revoke, when the TA answered.
    pub generation: Option<u32>,
    /// The chain layer as a whole (the first failure, if any account failed).
    pub chain: Layer,
    /// Each account with a live session, the most recently activated first (then accounts of
    /// pending grants where a live session was found, or the check failed).
    pub accounts: Vec<AccountRevocation>,
}

impl Revocation {
    /// The first failure of any layer.
    pub fn failure(&self) -> Option<&RevokeFailure> {
        self.database
            .failure()
            .or(self.tee.failure())
            .or(self.chain.failure())
    }
}

/// A failure of a TA call.
#[derive(Clone, Debug)]
pub enum TaCallError {
    /// The TA (or the way to it) failed or refused.
    Tee(TeeError),
    /// The companion refuses to use a TA found rolled back.
    RolledBack(String),
}

impl From<TaCallError> for RevokeFailure {
    fn from(e: TaCallError) -> Self {
        match e {
            TaCallError::Tee(t) => RevokeFailure::Tee(t),
            TaCallError::RolledBack(r) => RevokeFailure::TaRolledBack(r),
        }
    }
}

/// How a revocation reaches the TA.
pub trait TaAccess: Sync {
    /// Calls one TA command.
    fn call_ta<C>(&self, req: &C) -> impl Future<Output = Result<C::Output, TaCallError>> + Send
    where
        C: kms_proto::Command + Sync,
        C::Output: Send + 'static;
}

impl TaAccess for TeeClient {
    async fn call_ta<C>(&self, req: &C) -> Result<C::Output, TaCallError>
    where
        C: kms_proto::Command + Sync,
        C::Output: Send + 'static,
    {
        self.call_async(req).await.map_err(TaCallError::Tee)
    }
}

impl TaAccess for crate::tee::Tee {
    async fn call_ta<C>(&self, req: &C) -> Result<C::Output, TaCallError>
    where
        C: kms_proto::Command + Sync,
        C::Output: Send + 'static,
    {
        if let Some(reason) = self.rolled_back() {
            return Err(TaCallError::RolledBack(reason));
        }
        self.try_call(req).await.map_err(TaCallError::Tee)
    }
}

/// What the chain layer needs: the node, the operator key (in the TA) and how long to wait for
/// each `revokeSession` transaction.
#[derive(Clone, Debug)]
pub struct ChainSide {
    /// The node and the validator.
    pub node: NodeClient,
    /// The operator key.
    pub operator: TaOperator,
    /// How long to wait for each transaction.
    pub timeout: Duration,
}

/// How a revocation gets its [`ChainSide`], only when there is something to revoke on chain.
pub trait ChainAccess: Sync {
    /// The chain side, or why it cannot be had.
    fn open(&self) -> impl Future<Output = Result<ChainSide, RevokeFailure>> + Send;
}

/// The companion's chain side: its node, its operator key (created in the TA if missing), its
/// `--receipt-wait-secs`.
pub struct CompanionChain<'a>(pub &'a crate::state::AppState);

impl ChainAccess for CompanionChain<'_> {
    async fn open(&self) -> Result<ChainSide, RevokeFailure> {
        let s = self.0;
        let Some(chain) = s.chain.as_ref() else {
            return Err(RevokeFailure::ChainUnavailable {
                message: "the companion has no chain settings, so it cannot revoke the session \
                          on chain"
                    .into(),
                hint: Some(
                    "start the companion with --rpc-url, --bundler-url, --validator-address and \
                     --account-factory, or revoke with kms-admin"
                        .into(),
                ),
                kind: Unavailable::NotConfigured,
            });
        };
        let operator = s
            .operator()
            .await
            .map_err(|e| RevokeFailure::ChainUnavailable {
                message: format!("the operator key: {e}"),
                hint: None,
                kind: Unavailable::Tee,
            })?;
        Ok(ChainSide {
            node: chain.client.node().clone(),
            operator: operator.clone(),
            timeout: chain.receipt_wait,
        })
    }
}

/// Revokes the agent of `row` (wallet `wallet`) in every layer: the database, then the TA, then
/// (unless `chain` is `None`: `kms-admin --db-only`, reported as skipped) each account where it
/// has a live session. `on_db_revoked` runs right after the database layer (the companion drops
/// its cached credential there). Never fails as a whole: each layer's outcome is reported.
pub async fn revoke_agent<T, C>(
    db: &Db,
    ta: &T,
    chain: Option<&C>,
    wallet: WalletId,
    row: &AgentKey,
    on_db_revoked: impl FnOnce() + Send,
) -> Revocation
where
    T: TaAccess,
    C: ChainAccess,
{
    let database = db_layer(db, row).await;
    on_db_revoked();
    let (tee, generation) = tee_layer(db, ta, row, wallet).await;
    let (chain, accounts) = match chain {
        None => {
            let skipped = skip_sessions(db, row, "--db-only").await;
            (Layer::Skipped("--db-only".into()), skipped)
        }
        Some(c) => chain_layer(db, c, row).await,
    };
    Revocation {
        key_id: row.key_id(),
        database,
        tee,
        generation,
        chain,
        accounts,
    }
}

/// Unix seconds as an RFC 3339 UTC timestamp, `2025-01-02T03:04:05Z`.
fn ts(secs: i64) -> String {
    // (year, month, day) of the day count since 1970-01-01 (Howard Hinnant's algorithm).
    let z = secs.div_euclid(86_400) + 719_468;
    let rem = secs.rem_euclid(86_400);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

async fn db_layer(db: &Db, row: &AgentKey) -> Layer {
    match row.status {
        AgentStatus::Revoked => Layer::AlreadyDone(format!(
            "already revoked at {}",
            row.revoked_at.map(ts).unwrap_or_else(|| "?".into())
        )),
        AgentStatus::Failed => {
            Layer::AlreadyDone("never issued (creation failed): nothing to revoke".into())
        }
        AgentStatus::Active | AgentStatus::Pending => {
            let now = kms_db::now_secs();
            match db
                .revoke_agent(&row.wallet_id, row.agent_index, None, now)
                .await
            {
                Ok(true) => Layer::Revoked(format!("status revoked at {}", ts(now))),
                // Revoked concurrently (the owner through the companion, or kms-admin).
                Ok(false) => Layer::AlreadyDone("already revoked".into()),
                Err(e) => Layer::Failed(RevokeFailure::Database(e.to_string())),
            }
        }
    }
}

async fn tee_layer<T: TaAccess>(
    db: &Db,
    ta: &T,
    row: &AgentKey,
    wallet: WalletId,
) -> (Layer, Option<u32>) {
    let index = row.agent_index;
    let state: AgentState = match ta
        .call_ta(&GetAgentState {
            wallet_id: wallet,
            agent_index: index,
        })
        .await
    {
        Ok(s) => s,
        Err(TaCallError::Tee(TeeError::Ta(TaError::AgentNotFound | TaError::WalletNotFound)))
            if matches!(row.status, AgentStatus::Pending | AgentStatus::Failed) =>
        {
            return (
                Layer::AlreadyDone("the TA never created this key: nothing to revoke".into()),
                None,
            )
        }
        Err(TaCallError::Tee(TeeError::Ta(
            e @ (TaError::AgentNotFound | TaError::WalletNotFound),
        ))) => return (Layer::Failed(RevokeFailure::UnknownToTa(e)), None),
        Err(e) => return (Layer::Failed(e.into()), None),
    };
    let (layer, generation) = if state.revoked {
        (
            Layer::AlreadyDone(format!(
                "already revoked at {} (generation {})",
                state
                    .revoked_at
                    .map(|t| ts(i64::try_from(t).unwrap_or(i64::MAX)))
                    .unwrap_or_else(|| "?".into()),
                state.generation
            )),
            state.generation,
        )
    } else {
        match ta
            .call_ta(&RevokeAgentKey {
                wallet_id: wallet,
                agent_index: index,
            })
            .await
        {
            Ok(after) => (
                Layer::Revoked(format!(
                    "generation {} → {}: every credential of the key is refused",
                    state.generation, after.generation
                )),
                after.generation,
            ),
            Err(e) => return (Layer::Failed(e.into()), None),
        }
    };
    // Record the TA's generation; the database status is already revoked (or was).
    if let Err(e) = db
        .revoke_agent(&row.wallet_id, index, Some(generation), kms_db::now_secs())
        .await
    {
        return (
            Layer::Failed(RevokeFailure::Database(e.to_string())),
            Some(generation),
        );
    }
    (layer, Some(generation))
}

/// The accounts to revoke on: those of live sessions (most recently activated first), then
/// those of pending grants not among them. `(account, live rows, pending grant only)`.
fn targets(sessions: &[AgentSession]) -> Vec<(Address, Vec<i64>, bool)> {
    let mut live: Vec<&AgentSession> = sessions.iter().filter(|s| s.status.is_live()).collect();
    live.sort_by_key(|s| std::cmp::Reverse((s.activated_at, s.id)));
    let mut out: Vec<(Address, Vec<i64>, bool)> = Vec::new();
    for s in live {
        match out.iter_mut().find(|(a, _, _)| *a == s.account) {
            Some((_, ids, _)) => ids.push(s.id),
            None => out.push((s.account, vec![s.id], false)),
        }
    }
    for s in sessions
        .iter()
        .filter(|s| s.status == SessionStatus::Pending)
    {
        if !out.iter().any(|(a, _, _)| *a == s.account) {
            out.push((s.account, Vec::new(), true));
        }
    }
    out
}

async fn skip_sessions(db: &Db, row: &AgentKey, why: &str) -> Vec<AccountRevocation> {
    let sessions = db
        .sessions_of_agent(&row.wallet_id, row.agent_index)
        .await
        .unwrap_or_default();
    targets(&sessions)
        .into_iter()
        .filter(|(_, ids, _)| !ids.is_empty())
        .map(|(account, sessions, _)| AccountRevocation {
            account,
            outcome: AccountOutcome::Skipped(why.to_owned()),
            sessions,
            pending_grant: false,
        })
        .collect()
}

async fn chain_layer<C: ChainAccess>(
    db: &Db,
    chain: &C,
    row: &AgentKey,
) -> (Layer, Vec<AccountRevocation>) {
    let sessions = match db.sessions_of_agent(&row.wallet_id, row.agent_index).await {
        Ok(s) => s,
        Err(e) => {
            return (
                Layer::Failed(RevokeFailure::Database(e.to_string())),
                Vec::new(),
            )
        }
    };
    let targets = targets(&sessions);
    if targets.is_empty() {
        return (
            Layer::AlreadyDone(
                "no live session recorded for this key: nothing to revoke on chain".into(),
            ),
            Vec::new(),
        );
    }
    let agent = row.agent_address;
    let side = match agent {
        None => Err(RevokeFailure::BadRecord),
        Some(agent) => chain.open().await.map(|side| (side, agent)),
    };
    let mut accounts = Vec::new();
    for (account, live, pending_grant) in targets {
        let outcome = match &side {
            Ok((side, agent)) => revoke_account(db, side, *agent, account, &live).await,
            Err(f) => {
                record_failure(db, &live, f).await;
                AccountOutcome::Failed(f.clone())
            }
        };
        // A pending grant is reported only when something live was found (and revoked) there,
        // or when its account could not be checked.
        if pending_grant
            && !matches!(
                outcome,
                AccountOutcome::Revoked { .. } | AccountOutcome::Failed(_)
            )
        {
            continue;
        }
        accounts.push(AccountRevocation {
            account,
            outcome,
            sessions: live,
            pending_grant,
        });
    }
    (summary(&accounts), accounts)
}

/// The chain layer as one outcome: the first failure, else revoked if anything was, else done.
fn summary(accounts: &[AccountRevocation]) -> Layer {
    if let Some(f) = accounts.iter().find_map(|a| a.outcome.failure()) {
        return Layer::Failed(f.clone());
    }
    let text = accounts
        .iter()
        .map(|a| format!("{:#x}: {}", a.account, describe(&a.outcome)))
        .collect::<Vec<_>>()
        .join("; ");
    if accounts.is_empty() {
        Layer::AlreadyDone("no live session on chain: nothing to revoke".into())
    } else if accounts
        .iter()
        .any(|a| matches!(a.outcome, AccountOutcome::Revoked { .. }))
    {
        Layer::Revoked(text)
    } else {
        Layer::AlreadyDone(text)
    }
}

/// One account's outcome in words.
pub fn describe(o: &AccountOutcome) -> String {
    match o {
        AccountOutcome::Revoked {
            tx_hash,
            block_number,
        } => format!("revokeSession tx {tx_hash} mined in block {block_number}"),
        AccountOutcome::AlreadyRevoked => "already revoked on chain".into(),
        AccountOutcome::NotOnChain => "no session on chain: nothing to revoke".into(),
        AccountOutcome::Skipped(why) => format!("skipped ({why})"),
        AccountOutcome::Failed(f) => f.to_string(),
    }
}

async fn record_failure(db: &Db, live: &[i64], f: &RevokeFailure) {
    let now = kms_db::now_secs();
    for id in live {
        if let Err(e) = db.session_revoke_failed(*id, &f.to_string(), now).await {
            tracing::warn!(session = id, error = %e, "could not record a failed session revocation");
        }
    }
}

/// The name of the lease held while the operator key of chain `chain_id` sends a transaction
/// (see the module docs).
pub fn operator_lease_name(chain_id: u64, operator: Address) -> String {
    format!("operator-tx:{chain_id}:{operator:#x}")
}

/// How often a revocation waiting for the operator's lease tries it again.
const OPERATOR_LEASE_POLL: Duration = Duration::from_millis(50);

/// The operator's transaction lease, held by one revocation ([`operator_lease_name`]).
struct OperatorLease {
    name: String,
    holder: String,
}

impl OperatorLease {
    /// Takes the lease, waiting while another process holds it for at most the transaction
    /// timeout (which bounds the holder's wait for its receipt). The lease lasts that timeout
    /// and a minute more, so one left by a process that died expires on its own.
    async fn take(db: &Db, side: &ChainSide) -> Result<Self, RevokeFailure> {
        let operator = side.operator.address();
        let name = operator_lease_name(side.node.chain_id(), operator);
        let holder = crate::replicas::new_replica_id();
        let ttl = i64::try_from(side.timeout.as_secs().saturating_add(60)).unwrap_or(i64::MAX);
        let deadline = tokio::time::Instant::now() + side.timeout;
        loop {
            match db.try_lease(&name, &holder, ttl, kms_db::now_secs()).await {
                Ok(true) => return Ok(Self { name, holder }),
                Ok(false) => {}
                Err(e) => return Err(RevokeFailure::Database(e.to_string())),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RevokeFailure::Chain {
                    message: format!(
                        "another process sharing this database is sending a transaction of the \
                         operator {operator} (lease {name}) and did not finish within {} s: \
                         nothing was sent; revoke again",
                        side.timeout.as_secs()
                    ),
                    node: false,
                });
            }
            tokio::time::sleep(OPERATOR_LEASE_POLL).await;
        }
    }

    /// Gives it up (a failure to is logged: the lease then expires on its own).
    async fn release(self, db: &Db) {
        if let Err(e) = db.release_lease(&self.name, &self.holder).await {
            tracing::warn!(lease = %self.name, error = %e,
                "could not give up the operator's transaction lease; it expires on its own");
        }
    }
}

/// Revokes the session of `agent` on `account` with the operator's `revokeSession` and records
/// the outcome on the session rows `live`: `revoked` (sent, already revoked, or not on chain) or
/// `revoke_failed`. Also used for a grant included after its agent was revoked.
pub async fn revoke_account(
    db: &Db,
    side: &ChainSide,
    agent: Address,
    account: Address,
    live: &[i64],
) -> AccountOutcome {
    let lease = match OperatorLease::take(db, side).await {
        Ok(lease) => lease,
        Err(f) => {
            record_failure(db, live, &f).await;
            return AccountOutcome::Failed(f);
        }
    };
    let sent = side
        .node
        .revoke_session(&side.operator, account, agent, side.timeout)
        .await;
    lease.release(db).await;
    let outcome = match sent {
        Ok(RevokeOutcome::Revoked {
            tx_hash,
            block_number,
        }) => AccountOutcome::Revoked {
            tx_hash,
            block_number,
        },
        Ok(RevokeOutcome::AlreadyRevoked) => AccountOutcome::AlreadyRevoked,
        Err(ChainError::NoSession { .. }) => AccountOutcome::NotOnChain,
        Err(e) => AccountOutcome::Failed(e.into()),
    };
    let now = kms_db::now_secs();
    match &outcome {
        AccountOutcome::Failed(f) => record_failure(db, live, f).await,
        done => {
            let tx = done.tx_hash().map(|h| format!("{h:#x}"));
            let note = match done {
                AccountOutcome::AlreadyRevoked => Some("already revoked on chain"),
                AccountOutcome::NotOnChain => Some("not on chain"),
                _ => None,
            };
            for id in live {
                if let Err(e) = db.revoke_session(*id, tx.as_deref(), note, now).await {
                    let f = RevokeFailure::Database(format!(
                        "{} on chain, but not recorded: {e}",
                        describe(done)
                    ));
                    return AccountOutcome::Failed(f);
                }
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(
        id: i64,
        account: u8,
        status: SessionStatus,
        activated: Option<i64>,
    ) -> AgentSession {
        AgentSession {
            id,
            wallet_id: "w".into(),
            agent_index: 0,
            account: Address::repeat_byte(account),
            account_kind: kms_db::AccountKind::AgentAccount,
            lane: None,
            status,
            grant_json: None,
            targets: None,
            spend_cap: None,
            valid_after: None,
            valid_until: None,
            revoker: None,
            user_op_hash: None,
            user_op_json: None,
            tx_hash: None,
            error: None,
            revoke_tx_hash: None,
            created_at: 0,
            updated_at: 0,
            activated_at: activated,
            revoked_at: None,
        }
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(ts(0), "1970-01-01T00:00:00Z");
        assert_eq!(ts(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(ts(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn every_live_account_once_then_pending_grants() {
        use SessionStatus::*;
        let rows = [
            session(6, 0xc, Pending, None),
            session(5, 0xa, Pending, None),
            session(4, 0xb, Failed, None),
            session(3, 0xb, RevokeFailed, Some(20)),
            session(2, 0xa, Active, Some(30)),
            session(1, 0xd, Revoked, Some(5)),
            session(0, 0xe, Superseded, Some(1)),
        ];
        assert_eq!(
            targets(&rows),
            [
                (Address::repeat_byte(0xa), vec![2], false),
                (Address::repeat_byte(0xb), vec![3], false),
                (Address::repeat_byte(0xc), vec![], true),
            ]
        );
        assert!(targets(&[session(1, 0xb, Failed, None)]).is_empty());
    }

    #[test]
    fn the_chain_layer_reports_the_first_failure() {
        let acc = |account: u8, outcome| AccountRevocation {
            account: Address::repeat_byte(account),
            outcome,
            sessions: vec![1],
            pending_grant: false,
        };
        let revoked = AccountOutcome::Revoked {
            tx_hash: B256::repeat_byte(1),
            block_number: 7,
        };
        assert!(matches!(summary(&[]), Layer::AlreadyDone(_)));
        match summary(&[
            acc(0xa, revoked.clone()),
            acc(0xb, AccountOutcome::NotOnChain),
        ]) {
            Layer::Revoked(text) => {
                assert!(
                    text.contains(&format!(
                        "{:#x}: revokeSession tx",
                        Address::repeat_byte(0xa)
                    )),
                    "{text}"
                );
                assert!(
                    text.contains(&format!(
                        "{:#x}: no session on chain",
                        Address::repeat_byte(0xb)
                    )),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            summary(&[acc(0xa, AccountOutcome::AlreadyRevoked)]),
            Layer::AlreadyDone(_)
        ));
        let failed = AccountOutcome::Failed(RevokeFailure::OperatorMissing);
        assert_eq!(
            summary(&[acc(0xa, revoked), acc(0xb, failed)]),
            Layer::Failed(RevokeFailure::OperatorMissing)
        );
    }
}
