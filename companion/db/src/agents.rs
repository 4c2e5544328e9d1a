//! Agent keys. The index is chosen and reserved in the insert's own write transaction
//! ([`Db::begin_write`]: SQLite's `BEGIN IMMEDIATE`, PostgreSQL's advisory write lock;
//! `MAX(agent_index)+1`), so concurrent creates
//! never collide; indices are never reused (failed and revoked rows stay).

use alloy::primitives::Address;

use crate::intents::{parse_address, stored_address};
use crate::{Db, DbError, Result};

/// Lifecycle of an agent key row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentStatus {
    /// Index reserved, TA call in flight.
    Pending,
    /// Credential issued.
    Active,
    /// Revoked.
    Revoked,
    /// The TA refused the creation; the index stays burnt.
    Failed,
}

impl AgentStatus {
    /// The stored string.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Pending => "pending",
            AgentStatus::Active => "active",
            AgentStatus::Revoked => "revoked",
            AgentStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => AgentStatus::Pending,
            "active" => AgentStatus::Active,
            "revoked" => AgentStatus::Revoked,
            "failed" => AgentStatus::Failed,
            other => return Err(DbError::Invalid(format!("agent status {other:?}"))),
        })
    }
}

/// An agent key row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentKey {
    /// Wallet UUID.
    pub wallet_id: String,
    /// Index.
    pub agent_index: u32,
    /// Label.
    pub label: String,
    /// Status.
    pub status: AgentStatus,
    /// Agent address (`0x` lowercase).
    pub agent_address: Option<Address>,
    /// SEC1 compressed public key hex.
    pub public_key: Option<String>,
    /// Hex SHA-256 of the current JWT.
    pub credential_hash: Option<String>,
    /// Kid of the current JWT.
    pub kid: Option<String>,
    /// Credential generation.
    pub generation: Option<u32>,
    /// Issued at.
    pub issued_at: Option<i64>,
    /// Expires at.
    pub expires_at: Option<i64>,
    /// Why creation failed.
    pub failure: Option<String>,
    /// Created.
    pub created_at: i64,
    /// Updated.
    pub updated_at: i64,
    /// Revoked.
    pub revoked_at: Option<i64>,
}

impl AgentKey {
    /// `"{wallet_uuid}:{agent_index}"`.
    pub fn key_id(&self) -> String {
        format!("{}:{}", self.wallet_id, self.agent_index)
    }
}

#[derive(sqlx::FromRow)]
struct AgentRow {
    wallet_id: String,
    agent_index: i64,
    label: String,
    status: String,
    agent_address: Option<String>,
    public_key: Option<String>,
    credential_hash: Option<String>,
    kid: Option<String>,
    generation: Option<i64>,
    issued_at: Option<i64>,
    expires_at: Option<i64>,
    failure: Option<String>,
    created_at: i64,
    updated_at: i64,
    revoked_at: Option<i64>,
}

impl TryFrom<AgentRow> for AgentKey {
    type Error = DbError;
    fn try_from(r: AgentRow) -> Result<Self> {
        let idx = |v: i64| u32::try_from(v).map_err(|_| DbError::Invalid(format!("index {v}")));
        Ok(AgentKey {
            wallet_id: r.wallet_id,
            agent_index: idx(r.agent_index)?,
            label: r.label,
            status: AgentStatus::parse(&r.status)?,
            agent_address: r
                .agent_address
                .map(|a| parse_address("agent_address", &a))
                .transpose()?,
            public_key: r.public_key,
            credential_hash: r.credential_hash,
            kid: r.kid,
            generation: r.generation.map(idx).transpose()?,
            issued_at: r.issued_at,
            expires_at: r.expires_at,
            failure: r.failure,
            created_at: r.created_at,
            updated_at: r.updated_at,
            revoked_at: r.revoked_at,
        })
    }
}

const AGENT_COLS: &str = "wallet_id, agent_index, label, status, agent_address, public_key, \
    credential_hash, kid, generation, issued_at, expires_at, failure, created_at, updated_at, \
    revoked_at";

/// What the TA returned for a newly issued credential.
#[derive(Clone, Debug)]
pub struct AgentActivation<'a> {
    /// Agent address (`0x` lowercase).
    pub agent_address: Address,
    /// SEC1 compressed public key hex.
    pub public_key: &'a str,
    /// Hex SHA-256 of the JWT.
    pub credential_hash: &'a str,
    /// Kid.
    pub kid: &'a str,
    /// Generation.
    pub generation: u32,
    /// Issued at.
    pub issued_at: i64,
    /// Expires at.
    pub expires_at: i64,
    /// Now.
    pub now: i64,
}

impl Db {
    /// Reserve the next agent index of `wallet_id` by inserting a `pending`
    /// row, in one write transaction ([`Db::begin_write`]). Returns the index.
    pub async fn reserve_agent_index(&self, wallet_id: &str, label: &str, now: i64) -> Result<u32> {
        let mut tx = self.begin_write().await?;
        let (index,): (i64,) = sqlx::query_as(
            "INSERT INTO agent_keys (wallet_id, agent_index, label, status, created_at, updated_at) \
             SELECT $1, COALESCE(MAX(agent_index) + 1, 0), $2, 'pending', $3, $4 \
             FROM agent_keys WHERE wallet_id = $5 RETURNING agent_index",
        )
        .bind(wallet_id)
        .bind(label)
        .bind(now)
        .bind(now)
        .bind(wallet_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        u32::try_from(index).map_err(|_| DbError::Invalid(format!("index {index}")))
    }

    /// Mark a pending agent `active` with its first credential.
    pub async fn activate_agent(
        &self,
        wallet_id: &str,
        index: u32,
        a: &AgentActivation<'_>,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE agent_keys SET status = 'active', agent_address = $1, public_key = $2, \
             credential_hash = $3, credential_jwt = NULL, kid = $4, generation = $5, issued_at = $6, \
             expires_at = $7, updated_at = $8 \
             WHERE wallet_id = $9 AND agent_index = $10 AND status = 'pending'",
        )
        .bind(stored_address(&a.agent_address))
        .bind(a.public_key)
        .bind(a.credential_hash)
        .bind(a.kid)
        .bind(i64::from(a.generation))
        .bind(a.issued_at)
        .bind(a.expires_at)
        .bind(a.now)
        .bind(wallet_id)
        .bind(i64::from(index))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Mark a pending agent `failed` (the index is never reused).
    pub async fn fail_agent(
        &self,
        wallet_id: &str,
        index: u32,
        reason: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE agent_keys SET status = 'failed', failure = $1, updated_at = $2 \
             WHERE wallet_id = $3 AND agent_index = $4 AND status = 'pending'",
        )
        .bind(reason)
        .bind(now)
        .bind(wallet_id)
        .bind(i64::from(index))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replace an active agent's credential (refresh): the previous JWT's
    /// hash is overwritten, so it is superseded.
    pub async fn refresh_agent(
        &self,
        wallet_id: &str,
        index: u32,
        a: &AgentActivation<'_>,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE agent_keys SET credential_hash = $1, kid = $2, generation = $3, issued_at = $4, \
             expires_at = $5, updated_at = $6 \
             WHERE wallet_id = $7 AND agent_index = $8 AND status = 'active'",
        )
        .bind(a.credential_hash)
        .bind(a.kid)
        .bind(i64::from(a.generation))
        .bind(a.issued_at)
        .bind(a.expires_at)
        .bind(a.now)
        .bind(wallet_id)
        .bind(i64::from(index))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Revoke an agent (idempotent). `generation` is the TA's generation
    /// after the revoke, when known. Returns whether the row changed.
    pub async fn revoke_agent(
        &self,
        wallet_id: &str,
        index: u32,
        generation: Option<u32>,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE agent_keys SET status = 'revoked', revoked_at = $1, updated_at = $2 \
             WHERE wallet_id = $3 AND agent_index = $4 AND status IN ('active', 'pending')",
        )
        .bind(now)
        .bind(now)
        .bind(wallet_id)
        .bind(i64::from(index))
        .execute(&self.pool)
        .await?;
        if let Some(g) = generation {
            sqlx::query(
                "UPDATE agent_keys SET generation = $1, updated_at = $2 \
                 WHERE wallet_id = $3 AND agent_index = $4 AND status = 'revoked'",
            )
            .bind(i64::from(g))
            .bind(now)
            .bind(wallet_id)
            .bind(i64::from(index))
            .execute(&self.pool)
            .await?;
        }
        Ok(r.rows_affected() > 0)
    }

    /// Set an active agent's generation to the TA's (reconciliation after
    /// a crash between the TA's generation bump and the database update).
    pub async fn set_agent_generation(
        &self,
        wallet_id: &str,
        index: u32,
        generation: u32,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE agent_keys SET generation = $1, updated_at = $2 \
             WHERE wallet_id = $3 AND agent_index = $4 AND status = 'active'",
        )
        .bind(i64::from(generation))
        .bind(now)
        .bind(wallet_id)
        .bind(i64::from(index))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// One agent row.
    pub async fn get_agent(&self, wallet_id: &str, index: u32) -> Result<Option<AgentKey>> {
        let sql = format!(
            "SELECT {AGENT_COLS} FROM agent_keys WHERE wallet_id = $1 AND agent_index = $2"
        );
        sqlx::query_as::<_, AgentRow>(&sql)
            .bind(wallet_id)
            .bind(i64::from(index))
            .fetch_optional(&self.pool)
            .await?
            .map(AgentKey::try_from)
            .transpose()
    }

    /// Agent rows, of one wallet or all, ordered by wallet and index.
    pub async fn list_agents(&self, wallet_id: Option<&str>) -> Result<Vec<AgentKey>> {
        let sql = format!(
            "SELECT {AGENT_COLS} FROM agent_keys WHERE ($1 IS NULL OR wallet_id = $2) \
             ORDER BY wallet_id, agent_index"
        );
        sqlx::query_as::<_, AgentRow>(&sql)
            .bind(wallet_id)
            .bind(wallet_id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(AgentKey::try_from)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    fn act<'a>(hash: &'a str, generation: u32) -> AgentActivation<'a> {
        AgentActivation {
            agent_address: Address::repeat_byte(0xab),
            public_key: "02ff",
            credential_hash: hash,
            kid: "k1",
            generation,
            issued_at: 10,
            expires_at: 20,
            now: 10,
        }
    }

    #[tokio::test]
    async fn lifecycle_and_no_index_reuse() {
        let (_d, db) = temp_db().await;
        wallet(&db, "w").await;
        assert_eq!(db.reserve_agent_index("w", "a", 1).await.unwrap(), 0);
        assert_eq!(db.reserve_agent_index("w", "b", 1).await.unwrap(), 1);
        db.fail_agent("w", 1, "refused", 2).await.unwrap();
        assert_eq!(
            db.reserve_agent_index("w", "c", 1).await.unwrap(),
            2,
            "failed index not reused"
        );
        assert!(db.activate_agent("w", 0, &act("h0", 1)).await.unwrap());
        assert!(
            !db.activate_agent("w", 0, &act("h0", 1)).await.unwrap(),
            "only pending rows activate"
        );
        let a = db.get_agent("w", 0).await.unwrap().unwrap();
        assert_eq!(a.status, AgentStatus::Active);
        assert_eq!(a.agent_address, Some(Address::repeat_byte(0xab)));
        assert_eq!(a.key_id(), "w:0");
        assert!(db.refresh_agent("w", 0, &act("h1", 2)).await.unwrap());
        let a = db.get_agent("w", 0).await.unwrap().unwrap();
        assert_eq!(
            (a.credential_hash.as_deref(), a.generation),
            (Some("h1"), Some(2))
        );
        assert!(db.revoke_agent("w", 0, Some(3), 5).await.unwrap());
        assert!(
            !db.revoke_agent("w", 0, Some(3), 6).await.unwrap(),
            "idempotent"
        );
        assert!(
            !db.refresh_agent("w", 0, &act("h2", 4)).await.unwrap(),
            "revoked stays revoked"
        );
        let a = db.get_agent("w", 0).await.unwrap().unwrap();
        assert_eq!(
            (a.status, a.revoked_at, a.generation),
            (AgentStatus::Revoked, Some(5), Some(3))
        );
        assert_eq!(
            db.get_agent("w", 1).await.unwrap().unwrap().status,
            AgentStatus::Failed
        );
        assert_eq!(db.list_agents(Some("w")).await.unwrap().len(), 3);
        assert_eq!(db.list_agents(None).await.unwrap().len(), 3);
        assert!(db.get_agent("w", 9).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn concurrent_reservations_get_distinct_indices() {
        let (_d, db) = temp_db().await;
        wallet(&db, "w").await;
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.reserve_agent_index("w", "", 1).await
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap().unwrap());
        }
        got.sort_unstable();
        assert_eq!(got, (0..50).collect::<Vec<u32>>());
    }
}
