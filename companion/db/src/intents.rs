//! Agent intents (ERC-4337 UserOperations) submitted through `/agent/intents`, and the state
//! machine of their statuses ([`IntentStatus`]).
//!
//! Open statuses: `signed` (recorded; not yet known to be accepted by the bundler: about to be
//! submitted, or to be re-submitted as is), `pending` (accepted by the bundler, not yet on
//! chain). Terminal statuses, each set only with evidence ([`Intent::evidence_json`]):
//! `included` (executed successfully), `failed` (cannot execute: its execution reverted, or the
//! bundler refused the identical operation in validation), `replaced` (the chain's nonce passed
//! it without it: another operation used its nonce), `dropped` (no longer held by the bundler,
//! not on chain, and its validity ended), `cancelled` (the companion withdrew it: its agent or
//! session was revoked before it reached the chain).
//!
//! Every status change is an UPDATE guarded by `status IN (<allowed predecessors>)` that reports
//! whether it applied ([`Db::transition_intent`]); triggers of migration 0006 refuse any other
//! change as a backstop. A terminal status never changes.

use alloy::primitives::{Address, U256};

use crate::{Db, DbError, Result};

/// The status of an intent (stored as its [`IntentStatus::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntentStatus {
    /// Recorded and signed; not yet known to be accepted by the bundler.
    Signed,
    /// Accepted by the bundler; not on chain yet.
    Pending,
    /// On chain, execution succeeded.
    Included,
    /// Cannot execute: on chain with a reverted execution, or refused by the bundler in
    /// validation (the identical operation, after checking it is neither held nor included).
    Failed,
    /// Not held by the bundler, not on chain, and no longer valid (its validity window or budget
    /// period ended): it can never be included.
    Dropped,
    /// The chain's nonce passed it without it: another operation used its nonce. It can never
    /// be included.
    Replaced,
    /// Withdrawn by the companion (its agent or session was revoked) before it reached the
    /// chain; never re-submitted.
    Cancelled,
}

impl IntentStatus {
    /// Every status.
    pub const ALL: [IntentStatus; 7] = [
        IntentStatus::Signed,
        IntentStatus::Pending,
        IntentStatus::Included,
        IntentStatus::Failed,
        IntentStatus::Dropped,
        IntentStatus::Replaced,
        IntentStatus::Cancelled,
    ];

    /// The open statuses (what may still change; what counts as in flight).
    pub const OPEN: [IntentStatus; 2] = [IntentStatus::Signed, IntentStatus::Pending];

    /// The stored string.
    pub fn as_str(self) -> &'static str {
        match self {
            IntentStatus::Signed => "signed",
            IntentStatus::Pending => "pending",
            IntentStatus::Included => "included",
            IntentStatus::Failed => "failed",
            IntentStatus::Dropped => "dropped",
            IntentStatus::Replaced => "replaced",
            IntentStatus::Cancelled => "cancelled",
        }
    }

    /// The status stored as `s`.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| DbError::Invalid(format!("intent status {s:?}")))
    }

    /// Whether the status may still change (`signed`, `pending`).
    pub fn is_open(self) -> bool {
        matches!(self, IntentStatus::Signed | IntentStatus::Pending)
    }

    /// Whether the status is final.
    pub fn is_terminal(self) -> bool {
        !self.is_open()
    }

    /// The statuses an intent may move to this one from (none for `signed`, the first).
    pub fn predecessors(self) -> &'static [IntentStatus] {
        match self {
            IntentStatus::Signed => &[],
            IntentStatus::Pending => &[IntentStatus::Signed],
            _ => &Self::OPEN,
        }
    }

    /// Whether an intent may move from `from` to this status.
    pub fn can_follow(self, from: IntentStatus) -> bool {
        self.predecessors().contains(&from)
    }
}

impl std::fmt::Display for IntentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IntentStatus {
    type Err = DbError;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Why an intent has its status (stored in `status_reason` as [`IntentReason::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntentReason {
    /// `signed`: recorded, about to be submitted.
    Recorded,
    /// `signed`: the bundler could not be reached (or answered 429/5xx); the identical operation
    /// is re-submitted.
    BundlerUnreachable,
    /// Open: the bundler's answer could not be used (another userOpHash, an unreadable answer);
    /// the operation is looked up, never judged on such an answer.
    BundlerAnswerUnusable,
    /// Open: the bundler refused it for its nonce (AA25) while the chain has not passed that
    /// nonce (another operation with the nonce is ahead of it, or one before it is missing).
    NonceConflict,
    /// `pending`: accepted by the bundler.
    Accepted,
    /// `pending`: the bundler already held it ("already known").
    AlreadyKnown,
    /// `pending`: the bundler no longer held it and accepted it again.
    Resubmitted,
    /// `pending`: its agent was revoked while the bundler held it and its session is still active
    /// on chain: watched, never re-submitted.
    RevokedInMempool,
    /// `included`: the bundler's receipt (checked against the operation).
    Receipt,
    /// `included` or `failed`: the EntryPoint's `UserOperationEvent` for its hash (found through
    /// the node when the bundler had no receipt).
    EntryPointEvent,
    /// `failed`: included, but its execution reverted (receipt or event).
    ExecutionReverted,
    /// `failed`: the bundler refused the identical operation in validation.
    BundlerRejected,
    /// `replaced`: the chain's nonce passed it without it.
    NoncePassed,
    /// `dropped`: its validity (session window or budget period) ended before it was included.
    Expired,
    /// `cancelled`: its agent was revoked.
    AgentRevoked,
    /// `cancelled`: its session was revoked on chain.
    SessionRevoked,
    /// `failed`: an earlier sequence of its nonce lane will never be used by an operation of
    /// this agent (that operation was refused, dropped or cancelled), so it can never validate;
    /// the agent submits the intent again.
    PredecessorFailed,
}

impl IntentReason {
    /// Every reason.
    pub const ALL: [IntentReason; 17] = [
        IntentReason::Recorded,
        IntentReason::BundlerUnreachable,
        IntentReason::BundlerAnswerUnusable,
        IntentReason::NonceConflict,
        IntentReason::Accepted,
        IntentReason::AlreadyKnown,
        IntentReason::Resubmitted,
        IntentReason::RevokedInMempool,
        IntentReason::Receipt,
        IntentReason::EntryPointEvent,
        IntentReason::ExecutionReverted,
        IntentReason::BundlerRejected,
        IntentReason::NoncePassed,
        IntentReason::Expired,
        IntentReason::AgentRevoked,
        IntentReason::SessionRevoked,
        IntentReason::PredecessorFailed,
    ];

    /// The stored string (snake case).
    pub fn as_str(self) -> &'static str {
        match self {
            IntentReason::Recorded => "recorded",
            IntentReason::BundlerUnreachable => "bundler_unreachable",
            IntentReason::BundlerAnswerUnusable => "bundler_answer_unusable",
            IntentReason::NonceConflict => "nonce_conflict",
            IntentReason::Accepted => "accepted",
            IntentReason::AlreadyKnown => "already_known",
            IntentReason::Resubmitted => "resubmitted",
            IntentReason::RevokedInMempool => "revoked_in_mempool",
            IntentReason::Receipt => "receipt",
            IntentReason::EntryPointEvent => "entry_point_event",
            IntentReason::ExecutionReverted => "execution_reverted",
            IntentReason::BundlerRejected => "bundler_rejected",
            IntentReason::NoncePassed => "nonce_passed",
            IntentReason::Expired => "expired",
            IntentReason::AgentRevoked => "agent_revoked",
            IntentReason::SessionRevoked => "session_revoked",
            IntentReason::PredecessorFailed => "predecessor_failed",
        }
    }
}

impl IntentReason {
    /// The reason stored as `s`.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| DbError::Invalid(format!("intent status reason {s:?}")))
    }
}

impl std::fmt::Display for IntentReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `'signed', 'pending'`: the open statuses as an SQL list.
fn sql_list(statuses: &[IntentStatus]) -> String {
    statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An intent to record.
#[derive(Clone, Debug)]
pub struct NewIntent {
    /// userOpHash (`0x` hex).
    pub user_op_hash: String,
    /// Agent key id.
    pub key_id: String,
    /// Wallet.
    pub wallet_id: Option<String>,
    /// Agent index.
    pub agent_index: Option<u32>,
    /// Smart account.
    pub account: Option<Address>,
    /// Status (`signed` for a new intent; tests record others).
    pub status: IntentStatus,
    /// Chain id.
    pub chain_id: Option<i64>,
    /// EntryPoint.
    pub entry_point: Option<Address>,
    /// The calls (JSON).
    pub calls_json: Option<String>,
    /// The UserOperation (JSON).
    pub user_op_json: Option<String>,
    /// The operation's nonce.
    pub nonce: Option<U256>,
    /// Total native value of the calls (wei).
    pub value_wei: Option<U256>,
    /// The operation's maximum gas cost charged to the session's gas budget (wei).
    pub max_gas_cost_wei: Option<U256>,
    /// Token amounts counted against the session's token caps (`{"0xtoken": "amount"}`).
    pub token_amounts_json: Option<String>,
    /// The client's Idempotency-Key.
    pub idempotency_key: Option<String>,
    /// When the background task first looks at it (unix seconds).
    pub next_check_at: i64,
    /// The latest block when the operation was built (where the search for its inclusion
    /// starts).
    pub first_block: Option<i64>,
    /// Now.
    pub now: i64,
}

/// An intent as recorded, its stored values parsed: a value that does not parse is a corrupt
/// row (an error), never read as a default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    /// userOpHash (`0x` lowercase hex).
    pub user_op_hash: String,
    /// Agent key id.
    pub key_id: String,
    /// Wallet.
    pub wallet_id: Option<String>,
    /// Agent index.
    pub agent_index: Option<i64>,
    /// Smart account.
    pub account: Option<Address>,
    /// Status.
    pub status: IntentStatus,
    /// Chain id.
    pub chain_id: Option<i64>,
    /// EntryPoint.
    pub entry_point: Option<Address>,
    /// Calls JSON.
    pub calls_json: Option<String>,
    /// UserOperation JSON.
    pub user_op_json: Option<String>,
    /// Transaction hash once included.
    pub tx_hash: Option<String>,
    /// Why it did not (or will not) execute, in words.
    pub error: Option<String>,
    /// Created.
    pub created_at: i64,
    /// Last change of status, reason or evidence.
    pub updated_at: i64,
    /// The operation's nonce.
    pub nonce: Option<U256>,
    /// Total native value (wei).
    pub value_wei: Option<U256>,
    /// Idempotency-Key.
    pub idempotency_key: Option<String>,
    /// The bundler's receipt (JSON) once included.
    pub receipt_json: Option<String>,
    /// Maximum gas cost charged to the session (wei); absent on rows recorded before gas
    /// budgets.
    pub max_gas_cost_wei: Option<U256>,
    /// Token amounts counted against token caps (JSON object).
    pub token_amounts_json: Option<String>,
    /// Why it has its status.
    pub status_reason: Option<IntentReason>,
    /// What showed it (JSON).
    pub evidence_json: Option<String>,
    /// When the background task looks at it next (open intents).
    pub next_check_at: i64,
    /// Checks in a row that changed nothing (the backoff exponent).
    pub idle_checks: i64,
    /// When it reached a terminal status.
    pub settled_at: Option<i64>,
    /// The latest block when the operation was built.
    pub first_block: Option<i64>,
}

impl Intent {
    /// Whether the intent is open (`signed` or `pending`).
    pub fn is_open(&self) -> bool {
        self.status.is_open()
    }
}

/// An intents row as stored (TEXT columns), parsed into an [`Intent`].
#[derive(sqlx::FromRow)]
struct IntentRow {
    user_op_hash: String,
    key_id: String,
    wallet_id: Option<String>,
    agent_index: Option<i64>,
    account: Option<String>,
    status: String,
    chain_id: Option<i64>,
    entry_point: Option<String>,
    calls_json: Option<String>,
    user_op_json: Option<String>,
    tx_hash: Option<String>,
    error: Option<String>,
    created_at: i64,
    updated_at: i64,
    nonce: Option<String>,
    value_wei: Option<String>,
    idempotency_key: Option<String>,
    receipt_json: Option<String>,
    max_gas_cost_wei: Option<String>,
    token_amounts_json: Option<String>,
    status_reason: Option<String>,
    evidence_json: Option<String>,
    next_check_at: i64,
    idle_checks: i64,
    settled_at: Option<i64>,
    first_block: Option<i64>,
}

/// A stored address (`0x` hex, any case).
pub(crate) fn parse_address(field: &str, v: &str) -> Result<Address> {
    v.parse()
        .map_err(|_| DbError::Invalid(format!("{field} {v:?} is not an address")))
}

/// A stored amount (decimal, or `0x` hex).
pub(crate) fn parse_u256(field: &str, v: &str) -> Result<U256> {
    v.parse()
        .map_err(|_| DbError::Invalid(format!("{field} {v:?} is not a 256-bit number")))
}

/// An address as stored (`0x` lowercase hex).
pub(crate) fn stored_address(a: &Address) -> String {
    format!("{a:#x}")
}

impl TryFrom<IntentRow> for Intent {
    type Error = DbError;

    fn try_from(r: IntentRow) -> Result<Self> {
        let addr = |field, v: Option<String>| v.map(|v| parse_address(field, &v)).transpose();
        let num = |field, v: Option<String>| v.map(|v| parse_u256(field, &v)).transpose();
        Ok(Intent {
            account: addr("account", r.account)?,
            status: IntentStatus::parse(&r.status)?,
            entry_point: addr("entry_point", r.entry_point)?,
            nonce: num("nonce", r.nonce)?,
            value_wei: num("value_wei", r.value_wei)?,
            max_gas_cost_wei: num("max_gas_cost_wei", r.max_gas_cost_wei)?,
            status_reason: r
                .status_reason
                .as_deref()
                .map(IntentReason::parse)
                .transpose()?,
            user_op_hash: r.user_op_hash,
            key_id: r.key_id,
            wallet_id: r.wallet_id,
            agent_index: r.agent_index,
            chain_id: r.chain_id,
            calls_json: r.calls_json,
            user_op_json: r.user_op_json,
            tx_hash: r.tx_hash,
            error: r.error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            idempotency_key: r.idempotency_key,
            receipt_json: r.receipt_json,
            token_amounts_json: r.token_amounts_json,
            evidence_json: r.evidence_json,
            next_check_at: r.next_check_at,
            idle_checks: r.idle_checks,
            settled_at: r.settled_at,
            first_block: r.first_block,
        })
    }
}

impl<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> for Intent {
    fn from_row(row: &'r sqlx::any::AnyRow) -> sqlx::Result<Self> {
        IntentRow::from_row(row)?
            .try_into()
            .map_err(|e: DbError| sqlx::Error::Decode(Box::new(e)))
    }
}

/// A status change and its evidence (see [`Db::transition_intent`]).
#[derive(Clone, Copy, Debug)]
pub struct IntentChange<'a> {
    /// Why.
    pub reason: IntentReason,
    /// What showed it (JSON), kept in the row.
    pub evidence_json: Option<&'a str>,
    /// The bundle transaction, when on chain.
    pub tx_hash: Option<&'a str>,
    /// The receipt (JSON), when on chain.
    pub receipt_json: Option<&'a str>,
    /// Why it did not (or will not) execute, in words; `None` clears it.
    pub error: Option<&'a str>,
    /// When the background task looks at it next (ignored once terminal).
    pub next_check_at: i64,
    /// Now.
    pub now: i64,
}

const INTENT_COLUMNS: &str = "user_op_hash, key_id, wallet_id, agent_index, account, status, \
     chain_id, entry_point, calls_json, user_op_json, tx_hash, error, created_at, updated_at, \
     nonce, value_wei, idempotency_key, receipt_json, max_gas_cost_wei, token_amounts_json, \
     status_reason, evidence_json, next_check_at, idle_checks, settled_at, first_block";

impl Db {
    /// Record an intent.
    pub async fn insert_intent(&self, i: &NewIntent) -> Result<()> {
        sqlx::query(
            "INSERT INTO intents (user_op_hash, key_id, wallet_id, agent_index, account, status, \
             chain_id, entry_point, calls_json, user_op_json, nonce, value_wei, max_gas_cost_wei, \
             token_amounts_json, idempotency_key, created_at, updated_at, status_reason, \
             next_check_at, first_block) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
        )
        .bind(i.user_op_hash.to_ascii_lowercase())
        .bind(&i.key_id)
        .bind(&i.wallet_id)
        .bind(i.agent_index.map(i64::from))
        .bind(i.account.as_ref().map(stored_address))
        .bind(i.status.as_str())
        .bind(i.chain_id)
        .bind(i.entry_point.as_ref().map(stored_address))
        .bind(&i.calls_json)
        .bind(&i.user_op_json)
        .bind(i.nonce.map(|n| format!("{n:#x}")))
        .bind(i.value_wei.map(|v| v.to_string()))
        .bind(i.max_gas_cost_wei.map(|v| v.to_string()))
        .bind(&i.token_amounts_json)
        .bind(&i.idempotency_key)
        .bind(i.now)
        .bind(i.now)
        .bind(IntentReason::Recorded.as_str())
        .bind(i.next_check_at)
        .bind(i.first_block)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An intent by userOpHash.
    pub async fn get_intent(&self, user_op_hash: &str) -> Result<Option<Intent>> {
        Ok(sqlx::query_as::<_, Intent>(&format!(
            "SELECT {INTENT_COLUMNS} FROM intents WHERE user_op_hash = $1"
        ))
        .bind(user_op_hash.to_ascii_lowercase())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The intent of agent `key_id` recorded under `idempotency_key`, if any.
    pub async fn find_intent_by_idempotency_key(
        &self,
        key_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<Intent>> {
        Ok(sqlx::query_as::<_, Intent>(&format!(
            "SELECT {INTENT_COLUMNS} FROM intents WHERE key_id = $1 AND idempotency_key = $2"
        ))
        .bind(key_id)
        .bind(idempotency_key)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Intents of agent `key_id` that are open (`signed` or `pending`): what is in flight.
    pub async fn open_intents_of(&self, key_id: &str) -> Result<Vec<Intent>> {
        Ok(sqlx::query_as::<_, Intent>(&format!(
            "SELECT {INTENT_COLUMNS} FROM intents WHERE key_id = $1 \
             AND status IN ({}) ORDER BY created_at",
            sql_list(&IntentStatus::OPEN)
        ))
        .bind(key_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Agent `key_id`'s `limit` most recent intents, whatever their status, newest first
    /// (ties in `created_at` by insertion order, newest first).
    pub async fn recent_intents_of(&self, key_id: &str, limit: u32) -> Result<Vec<Intent>> {
        Ok(sqlx::query_as::<_, Intent>(&format!(
            "SELECT {INTENT_COLUMNS} FROM intents WHERE key_id = $1 \
             ORDER BY created_at DESC, rowid DESC LIMIT $2"
        ))
        .bind(key_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Up to `limit` open intents due at `now` (`next_check_at <= now`), the longest overdue
    /// first: the background task's batch. Each intent it looks at is rescheduled (see
    /// [`Db::reschedule_intent`]), so no set of intents can hold the head of the queue.
    pub async fn due_intents(&self, now: i64, limit: u32) -> Result<Vec<Intent>> {
        Ok(sqlx::query_as::<_, Intent>(&format!(
            "SELECT {INTENT_COLUMNS} FROM intents WHERE status IN ({}) AND next_check_at <= $1 \
             ORDER BY next_check_at, created_at, rowid LIMIT $2",
            sql_list(&IntentStatus::OPEN)
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many intents have each status (statuses without one are left out).
    pub async fn count_intents_by_status(&self) -> Result<Vec<(IntentStatus, i64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM intents GROUP BY status ORDER BY status")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(s, n)| Ok((IntentStatus::parse(&s)?, n)))
            .collect()
    }

    /// Moves intent `user_op_hash` to status `to` with `change` (its reason, evidence, receipt,
    /// ...), only from one of `to`'s [`IntentStatus::predecessors`]. Returns whether it applied:
    /// `false` when the intent is unknown or already has a status `to` may not follow (a
    /// terminal one, above all: whoever settled it first wins, and `included` is never
    /// overwritten). The backoff restarts (`idle_checks = 0`); a terminal status records
    /// `settled_at`.
    pub async fn transition_intent(
        &self,
        user_op_hash: &str,
        to: IntentStatus,
        change: &IntentChange<'_>,
    ) -> Result<bool> {
        let from = to.predecessors();
        if from.is_empty() {
            return Ok(false);
        }
        let r = sqlx::query(&format!(
            "UPDATE intents SET status = $1, status_reason = $2, \
             evidence_json = COALESCE($3, evidence_json), tx_hash = COALESCE($4, tx_hash), \
             receipt_json = COALESCE($5, receipt_json), error = $6, updated_at = $7, \
             next_check_at = $8, idle_checks = 0, settled_at = $9 \
             WHERE user_op_hash = $10 AND status IN ({})",
            sql_list(from)
        ))
        .bind(to.as_str())
        .bind(change.reason.as_str())
        .bind(change.evidence_json)
        .bind(change.tx_hash)
        .bind(change.receipt_json)
        .bind(change.error)
        .bind(change.now)
        .bind(change.next_check_at)
        .bind(to.is_terminal().then_some(change.now))
        .bind(user_op_hash.to_ascii_lowercase())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Records a look at open intent `user_op_hash` that left its status `status`: when it is
    /// looked at next, and either a change of reason and evidence (`note`: the backoff restarts,
    /// `updated_at` moves) or nothing new (`idle_checks` grows by one). Applies only while the
    /// intent still has `status`; returns whether it did.
    pub async fn reschedule_intent(
        &self,
        user_op_hash: &str,
        status: IntentStatus,
        next_check_at: i64,
        note: Option<(IntentReason, Option<&str>)>,
        now: i64,
    ) -> Result<bool> {
        if !status.is_open() {
            return Ok(false);
        }
        let (reason, evidence) = match note {
            Some((r, e)) => (Some(r.as_str()), e),
            None => (None, None),
        };
        let r = sqlx::query(
            "UPDATE intents SET next_check_at = $1, \
             idle_checks = CASE WHEN $2 THEN 0 ELSE idle_checks + 1 END, \
             status_reason = COALESCE($3, status_reason), \
             evidence_json = COALESCE($4, evidence_json), \
             updated_at = CASE WHEN $5 THEN $6 ELSE updated_at END \
             WHERE user_op_hash = $7 AND status = $8",
        )
        .bind(next_check_at)
        .bind(reason.is_some())
        .bind(reason)
        .bind(evidence)
        .bind(reason.is_some())
        .bind(now)
        .bind(user_op_hash.to_ascii_lowercase())
        .bind(status.as_str())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    fn change(reason: IntentReason, now: i64) -> IntentChange<'static> {
        IntentChange {
            reason,
            evidence_json: Some(r#"{"source":"test"}"#),
            tx_hash: None,
            receipt_json: None,
            error: None,
            next_check_at: now + 10,
            now,
        }
    }

    fn new_intent(hash: &str, key: &str, status: IntentStatus, idem: Option<&str>) -> NewIntent {
        NewIntent {
            user_op_hash: hash.into(),
            key_id: key.into(),
            wallet_id: Some("w".into()),
            agent_index: Some(0),
            account: Some(Address::repeat_byte(0xac)),
            status,
            chain_id: Some(31337),
            entry_point: Some(Address::repeat_byte(0xe9)),
            calls_json: Some("[]".into()),
            user_op_json: Some("{}".into()),
            nonce: Some(U256::from(1)),
            value_wei: Some(U256::from(5)),
            max_gas_cost_wei: Some(U256::from(700)),
            token_amounts_json: Some(r#"{"0xt":"9"}"#.into()),
            idempotency_key: idem.map(str::to_owned),
            next_check_at: 0,
            first_block: Some(7),
            now: 1,
        }
    }

    #[test]
    fn statuses_round_trip_and_only_open_ones_move() {
        for s in IntentStatus::ALL {
            assert_eq!(IntentStatus::parse(s.as_str()).unwrap(), s);
            assert_eq!(s.as_str().parse::<IntentStatus>().unwrap(), s);
            assert_eq!(s.is_open(), IntentStatus::OPEN.contains(&s));
            // Nothing ever follows a terminal status.
            for to in IntentStatus::ALL {
                if s.is_terminal() {
                    assert!(!to.can_follow(s), "{s} -> {to}");
                }
            }
        }
        assert!(IntentStatus::parse("submitted").is_err());
        assert!(IntentStatus::Pending.can_follow(IntentStatus::Signed));
        assert!(!IntentStatus::Signed.can_follow(IntentStatus::Pending));
        assert!(IntentStatus::Replaced.can_follow(IntentStatus::Pending));
        let reasons: std::collections::HashSet<_> =
            IntentReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(reasons.len(), IntentReason::ALL.len());
    }

    #[tokio::test]
    async fn insert_get_transition() {
        let (_d, db) = temp_db().await;
        db.insert_intent(&new_intent("0xAB", "w:0", IntentStatus::Signed, None))
            .await
            .unwrap();
        let i = db.get_intent("0xab").await.unwrap().unwrap();
        assert_eq!(i.status, IntentStatus::Signed);
        assert_eq!(i.status_reason, Some(IntentReason::Recorded));
        assert!(i.is_open());
        assert!(db
            .transition_intent(
                "0xab",
                IntentStatus::Pending,
                &change(IntentReason::Accepted, 2)
            )
            .await
            .unwrap());
        let receipt = IntentChange {
            tx_hash: Some("0xtx"),
            receipt_json: Some("{}"),
            ..change(IntentReason::Receipt, 3)
        };
        assert!(db
            .transition_intent("0xab", IntentStatus::Included, &receipt)
            .await
            .unwrap());
        let i = db.get_intent("0xAB").await.unwrap().unwrap();
        assert_eq!(
            (
                i.status,
                i.tx_hash.as_deref(),
                i.status_reason,
                i.evidence_json.as_deref(),
                i.settled_at,
                i.updated_at
            ),
            (
                IntentStatus::Included,
                Some("0xtx"),
                Some(IntentReason::Receipt),
                Some(r#"{"source":"test"}"#),
                Some(3),
                3
            )
        );
        // Signed is only ever the first status.
        assert!(!db
            .transition_intent(
                "0xab",
                IntentStatus::Signed,
                &change(IntentReason::Recorded, 4)
            )
            .await
            .unwrap());
        // Unknown statuses are refused by the database itself.
        assert!(sqlx::query(
            "INSERT INTO intents (user_op_hash, key_id, status, created_at, updated_at) \
             VALUES ('0xee', 'w:0', 'submitted', 1, 1)"
        )
        .execute(db.pool())
        .await
        .is_err());
    }

    /// Two refreshes race on one intent: one sees the receipt, the other an older, failing
    /// answer. Whatever the order, `included` stands, and a settled intent never changes.
    #[tokio::test]
    async fn a_racing_refresh_cannot_overwrite_included() {
        let (_d, db) = temp_db().await;
        db.insert_intent(&new_intent("0x01", "w:0", IntentStatus::Pending, None))
            .await
            .unwrap();
        let included = IntentChange {
            tx_hash: Some("0xtx"),
            receipt_json: Some(r#"{"success":true}"#),
            ..change(IntentReason::Receipt, 2)
        };
        let failed = IntentChange {
            error: Some("the bundler refused it"),
            evidence_json: Some(r#"{"source":"bundlerRefusal"}"#),
            ..change(IntentReason::BundlerRejected, 2)
        };
        let (a, b) = tokio::join!(
            db.transition_intent("0x01", IntentStatus::Included, &included),
            db.transition_intent("0x01", IntentStatus::Failed, &failed),
        );
        assert!(a.unwrap() ^ b.unwrap(), "exactly one applies");
        // Whichever came first, a later attempt to fail it does not apply once included.
        db.insert_intent(&new_intent("0x02", "w:0", IntentStatus::Pending, None))
            .await
            .unwrap();
        assert!(db
            .transition_intent("0x02", IntentStatus::Included, &included)
            .await
            .unwrap());
        for to in [
            IntentStatus::Failed,
            IntentStatus::Dropped,
            IntentStatus::Replaced,
            IntentStatus::Cancelled,
            IntentStatus::Pending,
        ] {
            assert!(
                !db.transition_intent("0x02", to, &failed).await.unwrap(),
                "{to}"
            );
        }
        assert!(!db
            .reschedule_intent("0x02", IntentStatus::Pending, 99, None, 5)
            .await
            .unwrap());
        let i = db.get_intent("0x02").await.unwrap().unwrap();
        assert_eq!(i.status, IntentStatus::Included);
        assert_eq!(i.error, None);
        assert_eq!(i.receipt_json.as_deref(), Some(r#"{"success":true}"#));
        // The database refuses it too, whatever the query.
        let raw = sqlx::query("UPDATE intents SET status = 'failed' WHERE user_op_hash = '0x02'")
            .execute(db.pool())
            .await;
        assert!(raw.is_err(), "{raw:?}");
        assert_eq!(
            db.get_intent("0x02").await.unwrap().unwrap().status,
            IntentStatus::Included
        );
    }

    #[tokio::test]
    async fn due_intents_come_longest_overdue_first_and_rescheduling_moves_them_back() {
        let (_d, db) = temp_db().await;
        for (hash, status, due) in [
            ("0x01", IntentStatus::Pending, 5),
            ("0x02", IntentStatus::Signed, 1),
            ("0x03", IntentStatus::Pending, 50),
            ("0x04", IntentStatus::Included, 0),
        ] {
            let mut i = new_intent(hash, "w:0", status, None);
            i.next_check_at = due;
            db.insert_intent(&i).await.unwrap();
        }
        let hashes = |v: Vec<Intent>| v.into_iter().map(|i| i.user_op_hash).collect::<Vec<_>>();
        assert_eq!(
            hashes(db.due_intents(10, 10).await.unwrap()),
            ["0x02", "0x01"]
        );
        assert_eq!(hashes(db.due_intents(10, 1).await.unwrap()), ["0x02"]);
        // A look that changed nothing: later, and one more idle check.
        assert!(db
            .reschedule_intent("0x02", IntentStatus::Signed, 20, None, 10)
            .await
            .unwrap());
        assert_eq!(hashes(db.due_intents(10, 10).await.unwrap()), ["0x01"]);
        assert_eq!(
            hashes(db.due_intents(60, 10).await.unwrap()),
            ["0x01", "0x02", "0x03"]
        );
        let i = db.get_intent("0x02").await.unwrap().unwrap();
        assert_eq!((i.idle_checks, i.updated_at), (1, 1));
        // A look that found something new: the backoff restarts, the change is dated.
        assert!(db
            .reschedule_intent(
                "0x02",
                IntentStatus::Signed,
                30,
                Some((IntentReason::BundlerUnreachable, Some("{}"))),
                12
            )
            .await
            .unwrap());
        let i = db.get_intent("0x02").await.unwrap().unwrap();
        assert_eq!(
            (i.idle_checks, i.updated_at, i.status_reason),
            (0, 12, Some(IntentReason::BundlerUnreachable))
        );
        // Only while the status is the one looked at.
        assert!(!db
            .reschedule_intent("0x02", IntentStatus::Pending, 30, None, 12)
            .await
            .unwrap());
        let counts = db.count_intents_by_status().await.unwrap();
        assert!(counts.contains(&(IntentStatus::Pending, 2)), "{counts:?}");
    }

    #[tokio::test]
    async fn idempotency_keys_and_open_intents() {
        let (_d, db) = temp_db().await;
        db.insert_intent(&new_intent(
            "0x01",
            "w:0",
            IntentStatus::Pending,
            Some("k1"),
        ))
        .await
        .unwrap();
        db.insert_intent(&new_intent("0x02", "w:0", IntentStatus::Signed, None))
            .await
            .unwrap();
        db.insert_intent(&new_intent(
            "0x03",
            "w:1",
            IntentStatus::Pending,
            Some("k1"),
        ))
        .await
        .unwrap();
        // One Idempotency-Key per agent key.
        assert!(db
            .insert_intent(&new_intent(
                "0x04",
                "w:0",
                IntentStatus::Pending,
                Some("k1")
            ))
            .await
            .is_err());
        let found = db
            .find_intent_by_idempotency_key("w:0", "k1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.user_op_hash, "0x01");
        assert_eq!(found.value_wei, Some(U256::from(5)));
        assert_eq!(found.max_gas_cost_wei, Some(U256::from(700)));
        assert_eq!(found.token_amounts_json.as_deref(), Some(r#"{"0xt":"9"}"#));
        assert!(db
            .find_intent_by_idempotency_key("w:0", "k2")
            .await
            .unwrap()
            .is_none());
        assert_eq!(db.open_intents_of("w:0").await.unwrap().len(), 2);
        assert_eq!(db.due_intents(10, 10).await.unwrap().len(), 3);
        // Every terminal status stops counting as in flight.
        for (hash, to, reason) in [
            ("0x01", IntentStatus::Replaced, IntentReason::NoncePassed),
            ("0x02", IntentStatus::Cancelled, IntentReason::AgentRevoked),
        ] {
            assert!(db
                .transition_intent(hash, to, &change(reason, 2))
                .await
                .unwrap());
        }
        assert!(db.open_intents_of("w:0").await.unwrap().is_empty());
        assert_eq!(db.due_intents(10, 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn recent_intents_are_the_agents_own_newest_first_and_limited() {
        let (_d, db) = temp_db().await;
        for (hash, key, now) in [
            ("0x01", "w:0", 10),
            ("0x02", "w:1", 20),
            ("0x03", "w:0", 30),
            ("0x04", "w:0", 30),
            ("0x05", "w:0", 5),
        ] {
            let mut i = new_intent(hash, key, IntentStatus::Included, None);
            i.now = now;
            db.insert_intent(&i).await.unwrap();
        }
        let hashes = |v: Vec<Intent>| v.into_iter().map(|i| i.user_op_hash).collect::<Vec<_>>();
        // Newest first; equal times by insertion order, newest first; never another agent's.
        assert_eq!(
            hashes(db.recent_intents_of("w:0", 10).await.unwrap()),
            ["0x04", "0x03", "0x01", "0x05"]
        );
        assert_eq!(
            hashes(db.recent_intents_of("w:0", 2).await.unwrap()),
            ["0x04", "0x03"]
        );
        assert!(db.recent_intents_of("w:9", 10).await.unwrap().is_empty());
    }
}
