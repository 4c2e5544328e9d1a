//! Agent intents (ERC-4337 UserOperations) submitted through `/agent/intents`.
//!
//! Status: `signed` (recorded, about to be submitted, or to be re-submitted as is), `pending`
//! (accepted by the bundler), `included` (receipt, execution succeeded), `failed` (refused by the
//! bundler, or included with a failed execution).

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
    /// The operation's nonce (`0x` hex).
    pub nonce: Option<String>,
    /// Total native value of the calls (decimal wei).
    pub value_wei: Option<String>,
    /// The operation's maximum gas cost charged to the session's gas budget (decimal wei).
    pub max_gas_cost_wei: Option<String>,
    /// Token amounts counted against the session's token caps (`{"0xtoken": "amount"}`).
    pub token_amounts_json: Option<String>,
    /// The client's Idempotency-Key.
    pub idempotency_key: Option<String>,
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
    /// Nonce (`0x` hex).
    pub nonce: Option<String>,
    /// Total native value (decimal wei).
    pub value_wei: Option<String>,
    /// Idempotency-Key.
    pub idempotency_key: Option<String>,
    /// The bundler's receipt (JSON) once included.
    pub receipt_json: Option<String>,
    /// Maximum gas cost charged to the session (decimal wei).
    pub max_gas_cost_wei: Option<String>,
    /// Token amounts counted against token caps (JSON object).
    pub token_amounts_json: Option<String>,
}

const INTENT_COLUMNS: &str = "user_op_hash, key_id, wallet_id, agent_index, account, status, \
     chain_id, entry_point, calls_json, user_op_json, tx_hash, error, created_at, updated_at, \
     nonce, value_wei, idempotency_key, receipt_json, max_gas_cost_wei, token_amounts_json";

impl Db {
    /// Record an intent.
    pub async fn insert_intent(&self, i: &NewIntent) -> Result<()> {
        sqlx::query(
            "INSERT INTO intents (user_op_hash, key_id, wallet_id, agent_index, account, status, \
             chain_id, entry_point, calls_json, user_op_json, nonce, value_wei, max_gas_cost_wei, \
             token_amounts_json, idempotency_key, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .bind(&i.nonce)
        .bind(&i.value_wei)
        .bind(&i.max_gas_cost_wei)
        .bind(&i.token_amounts_json)
        .bind(&i.idempotency_key)
        .bind(i.now)
        .bind(i.now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An intent by userOpHash.
    pub async fn get_intent(&self, user_op_hash: &str) -> Result<Option<Intent>> {
        Ok(sqlx::query_as::<_, Intent>(&format!(
            "SELECT {INTENT_COLUMNS} FROM intents WHERE user_op_hash = ?"
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
            "SELECT {INTENT_COLUMNS} FROM intents WHERE key_id = ? AND idempotency_key = ?"
        ))
        .bind(key_id)
        .bind(idempotency_key)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Intents of agent `key_id` that are `signed` or `pending` (not known to be included or
    /// failed).
    pub async fn open_intents_of(&self, key_id: &str) -> Result<Vec<Intent>> {
        Ok(sqlx::query_as::<_, Intent>(&format!(
            "SELECT {INTENT_COLUMNS} FROM intents WHERE key_id = ? \
             AND status IN ('signed', 'pending') ORDER BY created_at"
        ))
        .bind(key_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Agent `key_id`'s `limit` most recent intents, whatever their status, newest first
    /// (ties in `created_at` by insertion order, newest first).
    pub async fn recent_intents_of(&self, key_id: &str, limit: u32) -> Result<Vec<Intent>> {
        Ok(sqlx::query_as::<_, Intent>(&format!(
            "SELECT {INTENT_COLUMNS} FROM intents WHERE key_id = ? \
             ORDER BY created_at DESC, rowid DESC LIMIT ?"
        ))
        .bind(key_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Up to `limit` intents, oldest first, that are `signed` or `pending`.
    pub async fn open_intents(&self, limit: u32) -> Result<Vec<Intent>> {
        Ok(sqlx::query_as::<_, Intent>(&format!(
            "SELECT {INTENT_COLUMNS} FROM intents WHERE status IN ('signed', 'pending') \
             ORDER BY updated_at LIMIT ?"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Record the outcome of an intent from its receipt: `included` or `failed`, the
    /// transaction hash and the receipt. Only an open (`signed`/`pending`) intent changes.
    pub async fn settle_intent(
        &self,
        user_op_hash: &str,
        status: &str,
        tx_hash: &str,
        receipt_json: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE intents SET status = ?, tx_hash = ?, receipt_json = ?, \
             error = COALESCE(?, error), updated_at = ? \
             WHERE user_op_hash = ? AND status IN ('signed', 'pending')",
        )
        .bind(status)
        .bind(tx_hash)
        .bind(receipt_json)
        .bind(error)
        .bind(now)
        .bind(user_op_hash.to_ascii_lowercase())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
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
            nonce: None,
            value_wei: None,
            max_gas_cost_wei: None,
            token_amounts_json: None,
            idempotency_key: None,
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

    fn new_intent(hash: &str, key: &str, status: &str, idem: Option<&str>) -> NewIntent {
        NewIntent {
            user_op_hash: hash.into(),
            key_id: key.into(),
            wallet_id: Some("w".into()),
            agent_index: Some(0),
            account: Some("0xacc".into()),
            status: status.into(),
            chain_id: Some(31337),
            entry_point: Some("0xep".into()),
            calls_json: Some("[]".into()),
            user_op_json: Some("{}".into()),
            nonce: Some("0x1".into()),
            value_wei: Some("5".into()),
            max_gas_cost_wei: Some("700".into()),
            token_amounts_json: Some(r#"{"0xt":"9"}"#.into()),
            idempotency_key: idem.map(str::to_owned),
            now: 1,
        }
    }

    #[tokio::test]
    async fn idempotency_keys_open_intents_and_settling() {
        let (_d, db) = temp_db().await;
        db.insert_intent(&new_intent("0x01", "w:0", "pending", Some("k1")))
            .await
            .unwrap();
        db.insert_intent(&new_intent("0x02", "w:0", "signed", None))
            .await
            .unwrap();
        db.insert_intent(&new_intent("0x03", "w:1", "pending", Some("k1")))
            .await
            .unwrap();
        // One Idempotency-Key per agent key.
        assert!(db
            .insert_intent(&new_intent("0x04", "w:0", "pending", Some("k1")))
            .await
            .is_err());
        let found = db
            .find_intent_by_idempotency_key("w:0", "k1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.user_op_hash, "0x01");
        assert_eq!(found.value_wei.as_deref(), Some("5"));
        assert_eq!(found.max_gas_cost_wei.as_deref(), Some("700"));
        assert_eq!(found.token_amounts_json.as_deref(), Some(r#"{"0xt":"9"}"#));
        assert!(db
            .find_intent_by_idempotency_key("w:0", "k2")
            .await
            .unwrap()
            .is_none());
        assert_eq!(db.open_intents_of("w:0").await.unwrap().len(), 2);
        assert_eq!(db.open_intents(10).await.unwrap().len(), 3);
        assert!(db
            .settle_intent("0x01", "included", "0xtx", "{}", None, 2)
            .await
            .unwrap());
        // Settled once.
        assert!(!db
            .settle_intent("0x01", "failed", "0xtx", "{}", Some("x"), 3)
            .await
            .unwrap());
        let i = db.get_intent("0x01").await.unwrap().unwrap();
        assert_eq!(
            (
                i.status.as_str(),
                i.tx_hash.as_deref(),
                i.receipt_json.as_deref()
            ),
            ("included", Some("0xtx"), Some("{}"))
        );
        assert_eq!(db.open_intents_of("w:0").await.unwrap().len(), 1);
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
            let mut i = new_intent(hash, key, "included", None);
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
