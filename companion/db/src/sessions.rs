//! Agent sessions: one row per grant of a session to an agent key on one of its owner's accounts
//! (`agent_sessions`, migration 0005).
//!
//! A grant is recorded `pending` when the owner's operation is submitted, and becomes `active`
//! only once it is included with a successful execution ([`Db::activate_session`]); a reverted,
//! refused or dropped grant becomes `failed` ([`Db::fail_session`]) and never counts. Only
//! `active` rows are the agent's sessions: what intents run on and what revocation revokes (with
//! `revoke_failed` ones, still live on chain). A grant activated on an account where the agent
//! already had an active session supersedes it (`superseded`): the validator keeps one session
//! per agent and account. Revocation closes a session as `revoked` (with the operator's
//! transaction) or `revoke_failed` (with the error).
//!
//! Each row records the kind of account the session is on ([`AccountKind`], migration 0007) and,
//! on an ERC-7579 account, the agent's lane there ([`Db::set_session_lane`], once included).

use alloy::primitives::{Address, U256};

use crate::intents::{parse_address, parse_u256, stored_address};
use crate::{Db, DbError, Result};

/// The state of one session row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionStatus {
    /// Submitted; not known to be included.
    Pending,
    /// Included, executed successfully: live on chain.
    Active,
    /// Never became a session (refused, reverted, dropped).
    Failed,
    /// Replaced on chain by a later grant on the same account.
    Superseded,
    /// Revoked on chain (or found revoked, or not on chain).
    Revoked,
    /// The operator's revocation failed: still live on chain.
    RevokeFailed,
}

impl SessionStatus {
    /// The stored string.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Pending => "pending",
            SessionStatus::Active => "active",
            SessionStatus::Failed => "failed",
            SessionStatus::Superseded => "superseded",
            SessionStatus::Revoked => "revoked",
            SessionStatus::RevokeFailed => "revoke_failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => SessionStatus::Pending,
            "active" => SessionStatus::Active,
            "failed" => SessionStatus::Failed,
            "superseded" => SessionStatus::Superseded,
            "revoked" => SessionStatus::Revoked,
            "revoke_failed" => SessionStatus::RevokeFailed,
            other => return Err(DbError::Invalid(format!("session status {other:?}"))),
        })
    }

    /// Whether the session may be live on chain and so must be revoked with its agent: `active`
    /// and `revoke_failed`.
    pub fn is_live(self) -> bool {
        matches!(self, SessionStatus::Active | SessionStatus::RevokeFailed)
    }
}

impl std::fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of account a session is on (`agent_sessions.account_kind`); the same names as
/// `kms_chain::account::AccountKind`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AccountKind {
    /// The project's `AgentAccount` (every session recorded before migration 0007).
    #[default]
    AgentAccount,
    /// A third-party ERC-7579 account with `SessionKeyValidator` as its validator module.
    Erc7579,
}

impl AccountKind {
    /// The stored string: `agent-account` or `erc7579`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::AgentAccount => "agent-account",
            AccountKind::Erc7579 => "erc7579",
        }
    }

    /// The kind stored as `s`; anything else is a corrupt row.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "agent-account" => Ok(AccountKind::AgentAccount),
            "erc7579" => Ok(AccountKind::Erc7579),
            other => Err(DbError::Invalid(format!("session account kind {other:?}"))),
        }
    }
}

impl std::fmt::Display for AccountKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One session row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSession {
    /// Row id.
    pub id: i64,
    /// Wallet UUID.
    pub wallet_id: String,
    /// Agent index.
    pub agent_index: u32,
    /// The owner's smart account.
    pub account: Address,
    /// The account's kind, as detected at grant.
    pub account_kind: AccountKind,
    /// On an ERC-7579 account, the agent key's lane there (once the grant is included).
    pub lane: Option<u16>,
    /// Status.
    pub status: SessionStatus,
    /// The whole grant (JSON of `kms_chain::session::SessionGrant`); `None` for sessions recorded
    /// before grants carried functions, tokens and a gas cap.
    pub grant_json: Option<String>,
    /// Every address it may call (targets then tokens), JSON array.
    pub targets: Option<String>,
    /// Native-value cap (wei).
    pub spend_cap: Option<U256>,
    /// Window start (unix seconds).
    pub valid_after: Option<i64>,
    /// Window end (unix seconds; 0 = no end).
    pub valid_until: Option<i64>,
    /// The revoker.
    pub revoker: Option<Address>,
    /// The owner's UserOperation granting it.
    pub user_op_hash: Option<String>,
    /// That operation (ERC-4337 JSON-RPC form).
    pub user_op_json: Option<String>,
    /// The bundle transaction that included the grant.
    pub tx_hash: Option<String>,
    /// Why it failed, or why its revocation failed.
    pub error: Option<String>,
    /// The operator's `revokeSession` transaction.
    pub revoke_tx_hash: Option<String>,
    /// Recorded (unix seconds).
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// When it became active.
    pub activated_at: Option<i64>,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

impl AgentSession {
    /// `"{wallet_uuid}:{agent_index}"` of its agent.
    pub fn key_id(&self) -> String {
        format!("{}:{}", self.wallet_id, self.agent_index)
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: i64,
    wallet_id: String,
    agent_index: i64,
    account: String,
    account_kind: String,
    lane: Option<i64>,
    status: String,
    grant_json: Option<String>,
    targets: Option<String>,
    spend_cap: Option<String>,
    valid_after: Option<i64>,
    valid_until: Option<i64>,
    revoker: Option<String>,
    user_op_hash: Option<String>,
    user_op_json: Option<String>,
    tx_hash: Option<String>,
    error: Option<String>,
    revoke_tx_hash: Option<String>,
    created_at: i64,
    updated_at: i64,
    activated_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl TryFrom<SessionRow> for AgentSession {
    type Error = DbError;
    fn try_from(r: SessionRow) -> Result<Self> {
        Ok(AgentSession {
            id: r.id,
            wallet_id: r.wallet_id,
            agent_index: u32::try_from(r.agent_index)
                .map_err(|_| DbError::Invalid(format!("index {}", r.agent_index)))?,
            account: parse_address("account", &r.account)?,
            account_kind: AccountKind::parse(&r.account_kind)?,
            lane: r
                .lane
                .map(|l| {
                    u16::try_from(l)
                        .ok()
                        .filter(|l| *l != 0)
                        .ok_or_else(|| DbError::Invalid(format!("session lane {l}")))
                })
                .transpose()?,
            status: SessionStatus::parse(&r.status)?,
            grant_json: r.grant_json,
            targets: r.targets,
            spend_cap: r
                .spend_cap
                .map(|v| parse_u256("spend_cap", &v))
                .transpose()?,
            valid_after: r.valid_after,
            valid_until: r.valid_until,
            revoker: r
                .revoker
                .map(|v| parse_address("revoker", &v))
                .transpose()?,
            user_op_hash: r.user_op_hash,
            user_op_json: r.user_op_json,
            tx_hash: r.tx_hash,
            error: r.error,
            revoke_tx_hash: r.revoke_tx_hash,
            created_at: r.created_at,
            updated_at: r.updated_at,
            activated_at: r.activated_at,
            revoked_at: r.revoked_at,
        })
    }
}

const SESSION_COLS: &str = "id, wallet_id, agent_index, account, account_kind, lane, status, \
    grant_json, targets, \
    spend_cap, valid_after, valid_until, revoker, user_op_hash, user_op_json, tx_hash, error, \
    revoke_tx_hash, created_at, updated_at, activated_at, revoked_at";

/// A grant to record ([`Db::insert_session`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewSession<'a> {
    /// Wallet UUID.
    pub wallet_id: &'a str,
    /// Agent index.
    pub agent_index: u32,
    /// The smart account.
    pub account: Address,
    /// The account's kind.
    pub account_kind: AccountKind,
    /// The addresses the session may call (targets and tokens), JSON array.
    pub targets_json: &'a str,
    /// Native-value cap (wei).
    pub spend_cap: U256,
    /// Window start (unix seconds).
    pub valid_after: i64,
    /// Window end (unix seconds; 0 = no end).
    pub valid_until: i64,
    /// The revoker.
    pub revoker: Option<Address>,
    /// The whole grant (JSON).
    pub grant_json: Option<&'a str>,
    /// The owner's UserOperation granting it.
    pub user_op_hash: Option<&'a str>,
    /// That operation (JSON).
    pub user_op_json: Option<&'a str>,
    /// Now.
    pub now: i64,
}

impl Db {
    /// Records a grant as `pending` (the owner's operation is about to be, or was, submitted).
    /// Returns its id.
    pub async fn insert_session(&self, s: &NewSession<'_>) -> Result<i64> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO agent_sessions (wallet_id, agent_index, account, account_kind, status, \
             grant_json, targets, spend_cap, valid_after, valid_until, revoker, user_op_hash, \
             user_op_json, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        )
        .bind(s.wallet_id)
        .bind(i64::from(s.agent_index))
        .bind(stored_address(&s.account))
        .bind(s.account_kind.as_str())
        .bind(s.grant_json)
        .bind(s.targets_json)
        .bind(s.spend_cap.to_string())
        .bind(s.valid_after)
        .bind(s.valid_until)
        .bind(s.revoker.as_ref().map(stored_address))
        .bind(s.user_op_hash)
        .bind(s.user_op_json)
        .bind(s.now)
        .bind(s.now)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// A `pending` grant was included and executed successfully: it becomes `active` (with the
    /// bundle transaction, when known), and any other live session of the agent on the same
    /// account becomes `superseded` (the validator replaced it). One transaction. Returns whether
    /// the row was pending (false: already settled, nothing changed).
    pub async fn activate_session(&self, id: i64, tx_hash: Option<&str>, now: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE agent_sessions SET status = 'active', tx_hash = COALESCE($1, tx_hash), \
             error = NULL, activated_at = $2, updated_at = $3 WHERE id = $4 AND status = 'pending'",
        )
        .bind(tx_hash)
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE agent_sessions SET status = 'superseded', updated_at = $1 \
             WHERE id != $2 AND status IN ('active', 'revoke_failed') \
             AND (wallet_id, agent_index, account) = \
                 (SELECT wallet_id, agent_index, account FROM agent_sessions WHERE id = $3)",
        )
        .bind(now)
        .bind(id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A `pending` grant never became a session (refused, reverted, dropped): `failed`, with why
    /// (and the bundle transaction of a reverted one). Returns whether the row was pending.
    pub async fn fail_session(
        &self,
        id: i64,
        error: &str,
        tx_hash: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE agent_sessions SET status = 'failed', error = $1, \
             tx_hash = COALESCE($2, tx_hash), updated_at = $3 WHERE id = $4 AND status = 'pending'",
        )
        .bind(error)
        .bind(tx_hash)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// A session revoked on chain (or found revoked, or absent there): `revoked`, with the
    /// operator's transaction when one was sent and a note (e.g. "not on chain"). Applies to
    /// `active`, `revoke_failed` and `pending` rows (a pending grant found on chain). Returns
    /// whether the row changed.
    pub async fn revoke_session(
        &self,
        id: i64,
        revoke_tx_hash: Option<&str>,
        note: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE agent_sessions SET status = 'revoked', revoke_tx_hash = $1, error = $2, \
             revoked_at = $3, updated_at = $4 \
             WHERE id = $5 AND status IN ('active', 'revoke_failed', 'pending')",
        )
        .bind(revoke_tx_hash)
        .bind(note)
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// The operator's revocation of a live session failed: `revoke_failed`, with the error (the
    /// next revocation tries again). Returns whether the row changed.
    pub async fn session_revoke_failed(&self, id: i64, error: &str, now: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE agent_sessions SET status = 'revoke_failed', error = $1, updated_at = $2 \
             WHERE id = $3 AND status IN ('active', 'revoke_failed')",
        )
        .bind(error)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Records the lane the validator gave the agent key on the session's ERC-7579 account
    /// (read once the grant is included). Lane 0 is never given: refused. Returns whether the row
    /// exists.
    pub async fn set_session_lane(&self, id: i64, lane: u16, now: i64) -> Result<bool> {
        if lane == 0 {
            return Err(DbError::Invalid("session lane 0".into()));
        }
        let r = sqlx::query(
            "UPDATE agent_sessions SET lane = $1, updated_at = $2 WHERE id = $3 \
             AND account_kind = 'erc7579'",
        )
        .bind(i64::from(lane))
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// One session row.
    pub async fn get_session(&self, id: i64) -> Result<Option<AgentSession>> {
        let sql = format!("SELECT {SESSION_COLS} FROM agent_sessions WHERE id = $1");
        sqlx::query_as::<_, SessionRow>(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(AgentSession::try_from)
            .transpose()
    }

    /// Every session row of one agent, newest first.
    pub async fn sessions_of_agent(
        &self,
        wallet_id: &str,
        index: u32,
    ) -> Result<Vec<AgentSession>> {
        let sql = format!(
            "SELECT {SESSION_COLS} FROM agent_sessions WHERE wallet_id = $1 AND agent_index = $2 \
             ORDER BY id DESC"
        );
        sqlx::query_as::<_, SessionRow>(&sql)
            .bind(wallet_id)
            .bind(i64::from(index))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(AgentSession::try_from)
            .collect()
    }

    /// Every session row of one wallet's agents (or of all wallets), by wallet and agent index,
    /// each agent's newest first.
    pub async fn sessions_of_wallet(&self, wallet_id: Option<&str>) -> Result<Vec<AgentSession>> {
        let sql = format!(
            "SELECT {SESSION_COLS} FROM agent_sessions WHERE ($1 IS NULL OR wallet_id = $2) \
             ORDER BY wallet_id, agent_index, id DESC"
        );
        sqlx::query_as::<_, SessionRow>(&sql)
            .bind(wallet_id)
            .bind(wallet_id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(AgentSession::try_from)
            .collect()
    }

    /// The agent's sessions: its `active` rows, the most recently activated first.
    pub async fn active_sessions_of_agent(
        &self,
        wallet_id: &str,
        index: u32,
    ) -> Result<Vec<AgentSession>> {
        let sql = format!(
            "SELECT {SESSION_COLS} FROM agent_sessions WHERE wallet_id = $1 AND agent_index = $2 \
             AND status = 'active' ORDER BY activated_at DESC, id DESC"
        );
        sqlx::query_as::<_, SessionRow>(&sql)
            .bind(wallet_id)
            .bind(i64::from(index))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(AgentSession::try_from)
            .collect()
    }

    /// Up to `limit` `pending` grants, oldest first (for the background task).
    pub async fn pending_sessions(&self, limit: u32) -> Result<Vec<AgentSession>> {
        let sql = format!(
            "SELECT {SESSION_COLS} FROM agent_sessions WHERE status = 'pending' \
             ORDER BY id LIMIT $1"
        );
        sqlx::query_as::<_, SessionRow>(&sql)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(AgentSession::try_from)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    /// Two accounts (one also spelt in upper case) and the revoker.
    const A: &str = "0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const A_UPPER: &str = "0xAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const B: &str = "0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const REVOKER: &str = "0x4444444444444444444444444444444444444444";

    fn addr(a: &str) -> Address {
        a.parse().unwrap()
    }

    fn grant<'a>(account: &'a str, op: &'a str, now: i64) -> NewSession<'a> {
        NewSession {
            wallet_id: "w",
            agent_index: 0,
            account: addr(account),
            account_kind: AccountKind::AgentAccount,
            targets_json: r#"["0x11"]"#,
            spend_cap: U256::from(10),
            valid_after: 1,
            valid_until: 0,
            revoker: Some(addr(REVOKER)),
            grant_json: Some(r#"{"gasCap":"5"}"#),
            user_op_hash: Some(op),
            user_op_json: Some("{}"),
            now,
        }
    }

    async fn status(db: &Db, id: i64) -> SessionStatus {
        db.get_session(id).await.unwrap().unwrap().status
    }

    #[tokio::test]
    async fn a_grant_is_active_only_once_included() {
        let (_d, db) = temp_db().await;
        wallet(&db, "w").await;
        db.reserve_agent_index("w", "a", 1).await.unwrap();
        let a = db.insert_session(&grant(A_UPPER, "0x01", 2)).await.unwrap();
        let s = db.get_session(a).await.unwrap().unwrap();
        assert_eq!(
            (s.status, s.account, s.key_id().as_str()),
            (SessionStatus::Pending, addr(A), "w:0")
        );
        assert_eq!(s.grant_json.as_deref(), Some(r#"{"gasCap":"5"}"#));
        assert!(
            db.active_sessions_of_agent("w", 0)
                .await
                .unwrap()
                .is_empty(),
            "a pending grant is not a session of the agent"
        );
        assert_eq!(db.pending_sessions(10).await.unwrap().len(), 1);
        assert!(db.activate_session(a, Some("0xtx"), 3).await.unwrap());
        assert!(
            !db.activate_session(a, None, 4).await.unwrap(),
            "only a pending grant activates"
        );
        let s = db.get_session(a).await.unwrap().unwrap();
        assert_eq!(
            (s.status, s.tx_hash.as_deref(), s.activated_at),
            (SessionStatus::Active, Some("0xtx"), Some(3))
        );
        assert!(db.pending_sessions(10).await.unwrap().is_empty());
        assert!(
            !db.fail_session(a, "late", None, 5).await.unwrap(),
            "an active session never fails"
        );
        assert_eq!(status(&db, a).await, SessionStatus::Active);
    }

    #[tokio::test]
    async fn a_reverted_or_dropped_grant_replaces_nothing() {
        let (_d, db) = temp_db().await;
        wallet(&db, "w").await;
        db.reserve_agent_index("w", "a", 1).await.unwrap();
        let first = db.insert_session(&grant(A, "0x01", 2)).await.unwrap();
        db.activate_session(first, Some("0xt1"), 3).await.unwrap();
        // A second grant on the same account that reverts, and one on another account that is
        // dropped: neither touches the first, nor becomes a session.
        let reverted = db.insert_session(&grant(A, "0x02", 4)).await.unwrap();
        assert!(db
            .fail_session(reverted, "execution reverted", Some("0xt2"), 5)
            .await
            .unwrap());
        let dropped = db.insert_session(&grant(B, "0x03", 6)).await.unwrap();
        assert!(db.fail_session(dropped, "dropped", None, 7).await.unwrap());
        assert!(
            !db.activate_session(dropped, None, 8).await.unwrap(),
            "a failed grant never activates"
        );
        let active = db.active_sessions_of_agent("w", 0).await.unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!((active[0].id, active[0].account), (first, addr(A)));
        let failed = db.get_session(reverted).await.unwrap().unwrap();
        assert_eq!(
            (
                failed.status,
                failed.error.as_deref(),
                failed.tx_hash.as_deref()
            ),
            (
                SessionStatus::Failed,
                Some("execution reverted"),
                Some("0xt2")
            )
        );
        assert_eq!(db.sessions_of_agent("w", 0).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn sessions_on_two_accounts_and_a_regrant() {
        let (_d, db) = temp_db().await;
        wallet(&db, "w").await;
        db.reserve_agent_index("w", "a", 1).await.unwrap();
        db.reserve_agent_index("w", "b", 1).await.unwrap();
        let a = db.insert_session(&grant(A, "0x01", 2)).await.unwrap();
        let b = db.insert_session(&grant(B, "0x02", 3)).await.unwrap();
        db.activate_session(a, None, 4).await.unwrap();
        db.activate_session(b, None, 5).await.unwrap();
        let other_agent = db
            .insert_session(&NewSession {
                agent_index: 1,
                ..grant(A, "0x03", 5)
            })
            .await
            .unwrap();
        db.activate_session(other_agent, None, 5).await.unwrap();
        // Both accounts are the agent's sessions, the most recently activated first.
        let active = db.active_sessions_of_agent("w", 0).await.unwrap();
        assert_eq!(
            active.iter().map(|s| s.id).collect::<Vec<_>>(),
            [b, a],
            "{active:?}"
        );
        // A new grant on the first account supersedes the session there, and only there.
        let again = db.insert_session(&grant(A_UPPER, "0x04", 6)).await.unwrap();
        assert_eq!(
            status(&db, a).await,
            SessionStatus::Active,
            "still active while the new grant is pending"
        );
        db.activate_session(again, None, 7).await.unwrap();
        assert_eq!(status(&db, a).await, SessionStatus::Superseded);
        assert_eq!(status(&db, b).await, SessionStatus::Active);
        assert_eq!(status(&db, other_agent).await, SessionStatus::Active);
        let active = db.active_sessions_of_agent("w", 0).await.unwrap();
        assert_eq!(active.iter().map(|s| s.id).collect::<Vec<_>>(), [again, b]);
        assert_eq!(db.sessions_of_wallet(Some("w")).await.unwrap().len(), 4);
        assert_eq!(db.sessions_of_wallet(None).await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn revocation_closes_sessions_and_a_failure_stays_live() {
        let (_d, db) = temp_db().await;
        wallet(&db, "w").await;
        db.reserve_agent_index("w", "a", 1).await.unwrap();
        let a = db.insert_session(&grant(A, "0x01", 2)).await.unwrap();
        let b = db.insert_session(&grant(B, "0x02", 2)).await.unwrap();
        db.activate_session(a, None, 3).await.unwrap();
        db.activate_session(b, None, 3).await.unwrap();
        assert!(db.revoke_session(a, Some("0xr1"), None, 4).await.unwrap());
        assert!(db
            .session_revoke_failed(b, "not the revoker", 4)
            .await
            .unwrap());
        let failed = db.get_session(b).await.unwrap().unwrap();
        assert_eq!(failed.status, SessionStatus::RevokeFailed);
        assert!(failed.status.is_live());
        assert_eq!(
            db.active_sessions_of_agent("w", 0).await.unwrap().len(),
            0,
            "neither is an active session any more"
        );
        // A retry that succeeds closes it; a closed session stays closed.
        assert!(db
            .revoke_session(b, None, Some("already revoked on chain"), 5)
            .await
            .unwrap());
        assert!(!db.revoke_session(b, Some("0xr2"), None, 6).await.unwrap());
        assert!(!db.session_revoke_failed(a, "late", 6).await.unwrap());
        let a = db.get_session(a).await.unwrap().unwrap();
        assert_eq!(
            (a.status, a.revoke_tx_hash.as_deref(), a.revoked_at),
            (SessionStatus::Revoked, Some("0xr1"), Some(4))
        );
        let b = db.get_session(b).await.unwrap().unwrap();
        assert_eq!(
            (b.status, b.error.as_deref(), b.revoke_tx_hash),
            (
                SessionStatus::Revoked,
                Some("already revoked on chain"),
                None
            )
        );
    }

    #[tokio::test]
    async fn sessions_go_with_their_wallet() {
        let (_d, db) = temp_db().await;
        wallet(&db, "w").await;
        db.reserve_agent_index("w", "a", 1).await.unwrap();
        db.insert_session(&grant(A, "0x01", 2)).await.unwrap();
        sqlx::query("DELETE FROM wallets WHERE key_id = 'w'")
            .execute(db.pool())
            .await
            .unwrap();
        assert!(db.sessions_of_wallet(None).await.unwrap().is_empty());
    }

    /// Migration 0005: the one session each agent row held becomes an `active` row of its own
    /// (with its grant and transaction), and agent rows without one get none.
    #[tokio::test]
    async fn migration_keeps_each_recorded_session_as_an_active_row() {
        use std::str::FromStr;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("kms.db").display());
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let before = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(
                crate::MIGRATOR
                    .migrations
                    .iter()
                    .filter(|m| m.version < 5)
                    .cloned()
                    .collect(),
            ),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        before.run(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO wallets (key_id, address, public_key, derivation_path, rp_id, \
             created_at, updated_at) VALUES ('w', '0x01', '02aa', 'm', 'localhost', 1, 1)",
        )
        .execute(&pool)
        .await
        .unwrap();
        for (index, status, account, tx, grant) in [
            (
                0,
                "active",
                Some(A_UPPER),
                Some("0xt0"),
                Some(r#"{"gasCap":"5"}"#),
            ),
            (1, "revoked", Some(B), None, None),
            (2, "active", None, None, None),
        ] {
            sqlx::query(
                "INSERT INTO agent_keys (wallet_id, agent_index, status, created_at, updated_at, \
                 account, targets, spend_cap, valid_after, valid_until, revoker, \
                 session_tx_hash, session_json) \
                 VALUES ('w', $1, $2, 1, 7, $3, '[\"0x11\"]', '10', 2, 0, $4, $5, $6)",
            )
            .bind(index)
            .bind(status)
            .bind(account)
            .bind(REVOKER)
            .bind(tx)
            .bind(grant)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;

        let db = Db::open(&url).await.unwrap();
        let rows = db.sessions_of_wallet(Some("w")).await.unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        let first = &rows[0];
        assert_eq!(
            (
                first.agent_index,
                first.account,
                first.status,
                first.tx_hash.as_deref(),
                first.grant_json.as_deref(),
                first.activated_at,
            ),
            (
                0,
                addr(A),
                SessionStatus::Active,
                Some("0xt0"),
                Some(r#"{"gasCap":"5"}"#),
                Some(7)
            )
        );
        assert_eq!(first.targets.as_deref(), Some(r#"["0x11"]"#));
        assert_eq!(
            (first.spend_cap, first.valid_after, first.valid_until),
            (Some(U256::from(10)), Some(2), Some(0))
        );
        assert_eq!(first.revoker, Some(addr(REVOKER)));
        // A revoked agent's session too: the next revocation settles it on chain.
        assert_eq!(
            (rows[1].agent_index, rows[1].status),
            (1, SessionStatus::Active)
        );
        // The agent rows are intact without their session columns.
        assert_eq!(db.list_agents(Some("w")).await.unwrap().len(), 3);
        let columns: Vec<(String,)> =
            sqlx::query_as("SELECT name FROM pragma_table_info('agent_keys')")
                .fetch_all(db.pool())
                .await
                .unwrap();
        assert!(
            !columns
                .iter()
                .any(|(c,)| c == "account" || c == "session_json"),
            "{columns:?}"
        );
    }

    #[tokio::test]
    async fn the_account_kind_and_lane_are_recorded_typed() {
        let (_d, db) = temp_db().await;
        wallet(&db, "w").await;
        db.reserve_agent_index("w", "a", 1).await.unwrap();
        let old = db.insert_session(&grant(A, "0x01", 2)).await.unwrap();
        let s = db.get_session(old).await.unwrap().unwrap();
        assert_eq!((s.account_kind, s.lane), (AccountKind::AgentAccount, None));
        assert!(
            !db.set_session_lane(old, 3, 3).await.unwrap(),
            "an AgentAccount session has no lane"
        );
        let g = NewSession {
            account_kind: AccountKind::Erc7579,
            ..grant(B, "0x02", 4)
        };
        let id = db.insert_session(&g).await.unwrap();
        assert_eq!(
            db.get_session(id).await.unwrap().unwrap().account_kind,
            AccountKind::Erc7579
        );
        assert!(
            db.set_session_lane(id, 0, 5).await.is_err(),
            "lane 0 is never given"
        );
        assert!(db.set_session_lane(id, 7, 5).await.unwrap());
        let s = db.get_session(id).await.unwrap().unwrap();
        assert_eq!((s.account_kind, s.lane), (AccountKind::Erc7579, Some(7)));
        for k in [AccountKind::AgentAccount, AccountKind::Erc7579] {
            assert_eq!(AccountKind::parse(k.as_str()).unwrap(), k);
        }
        // The column refuses other values; one written past the CHECK is a corrupt row.
        assert!(
            sqlx::query("UPDATE agent_sessions SET account_kind = 'safe' WHERE id = $1")
                .bind(id)
                .execute(&db.pool)
                .await
                .is_err()
        );
        let mut conn = db.pool.acquire().await.unwrap();
        let bypass = match db.backend() {
            crate::Backend::Sqlite => vec!["PRAGMA ignore_check_constraints = ON"],
            crate::Backend::Postgres => vec![
                "ALTER TABLE agent_sessions DROP CONSTRAINT agent_sessions_account_kind_check",
                "ALTER TABLE agent_sessions DROP CONSTRAINT agent_sessions_lane_check",
            ],
        };
        for q in bypass {
            sqlx::query(q).execute(&mut *conn).await.unwrap();
        }
        sqlx::query("UPDATE agent_sessions SET account_kind = 'safe' WHERE id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE agent_sessions SET account_kind = 'erc7579', lane = 70000 WHERE id = $1",
        )
        .bind(old)
        .execute(&mut *conn)
        .await
        .unwrap();
        if db.backend() == crate::Backend::Sqlite {
            sqlx::query("PRAGMA ignore_check_constraints = OFF")
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        drop(conn);
        assert!(matches!(
            db.get_session(id).await,
            Err(DbError::Invalid(m)) if m.contains("account kind")
        ));
        assert!(matches!(
            db.get_session(old).await,
            Err(DbError::Invalid(m)) if m.contains("lane")
        ));
    }
}
