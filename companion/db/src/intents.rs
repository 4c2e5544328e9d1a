//! Agent intents (ERC-4337 UserOperations). The columns exist now; the
//! intent endpoints of a later issue fill them.

use crate::{Db, Result};

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
    pub account: Option<String>,
    /// Status.
    pub status: String,
    /// Chain id.
    pub chain_id: Option<i64>,
    /// EntryPoint.
    pub entry_point: Option<String>,
    /// The calls (JSON).
    pub calls_json: Option<String>,
    /// The UserOperation (JSON).
    pub user_op_json: Option<String>,
    /// Now.
    pub now: i64,
}

/// An intent row.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Intent {
    /// userOpHash.
    pub user_op_hash: String,
    /// Agent key id.
    pub key_id: String,
    /// Wallet.
    pub wallet_id: Option<String>,
    /// Agent index.
    pub agent_index: Option<i64>,
    /// Smart account.
    pub account: Option<String>,
    /// Status.
    pub status: String,
    /// Chain id.
    pub chain_id: Option<i64>,
    /// EntryPoint.
    pub entry_point: Option<String>,
    /// Calls JSON.
    pub calls_json: Option<String>,
    /// UserOperation JSON.
    pub user_op_json: Option<String>,
    /// Transaction hash once included.
    pub tx_hash: Option<String>,
    /// Failure reason.
    pub error: Option<String>,
    /// Created.
    pub created_at: i64,
    /// Updated.
    pub updated_at: i64,
}

impl Db {
    /// Record an intent.
    pub async fn insert_intent(&self, i: &NewIntent) -> Result<()> {
        sqlx::query(
            "INSERT INTO intents (user_op_hash, key_id, wallet_id, agent_index, account, status, \
             chain_id, entry_point, calls_json, user_op_json, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(i.user_op_hash.to_ascii_lowercase())
        .bind(&i.key_id)
        .bind(&i.wallet_id)
        .bind(i.agent_index.map(i64::from))
        .bind(&i.account)
        .bind(&i.status)
        .bind(i.chain_id)
        .bind(&i.entry_point)
        .bind(&i.calls_json)
        .bind(&i.user_op_json)
        .bind(i.now)
        .bind(i.now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An intent by userOpHash.
    pub async fn get_intent(&self, user_op_hash: &str) -> Result<Option<Intent>> {
        Ok(sqlx::query_as::<_, Intent>(
            "SELECT user_op_hash, key_id, wallet_id, agent_index, account, status, chain_id, \
             entry_point, calls_json, user_op_json, tx_hash, error, created_at, updated_at \
             FROM intents WHERE user_op_hash = ?",
        )
        .bind(user_op_hash.to_ascii_lowercase())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Update an intent's status (and tx hash / error when given).
    pub async fn update_intent_status(
        &self,
        user_op_hash: &str,
        status: &str,
        tx_hash: Option<&str>,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE intents SET status = ?, tx_hash = COALESCE(?, tx_hash), \
             error = COALESCE(?, error), updated_at = ? WHERE user_op_hash = ?",
        )
        .bind(status)
        .bind(tx_hash)
        .bind(error)
        .bind(now)
        .bind(user_op_hash.to_ascii_lowercase())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[tokio::test]
    async fn insert_get_update() {
        let (_d, db) = temp_db().await;
        db.insert_intent(&NewIntent {
            user_op_hash: "0xAB".into(),
            key_id: "w:0".into(),
            wallet_id: None,
            agent_index: Some(0),
            account: None,
            status: "submitted".into(),
            chain_id: Some(31337),
            entry_point: None,
            calls_json: None,
            user_op_json: None,
            now: 1,
        })
        .await
        .unwrap();
        assert!(db
            .update_intent_status("0xab", "included", Some("0xtx"), None, 2)
            .await
            .unwrap());
        let i = db.get_intent("0xAB").await.unwrap().unwrap();
        assert_eq!(
            (i.status.as_str(), i.tx_hash.as_deref()),
            ("included", Some("0xtx"))
        );
    }
}
