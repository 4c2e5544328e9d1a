//! Wallets, their passkey credential and derived addresses.

use alloy::primitives::Address;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::intents::{parse_address, stored_address};
use crate::{Db, Result};

/// A wallet to insert (with its passkey credential and owner address).
#[derive(Clone, Debug)]
pub struct NewWallet {
    /// Wallet UUID (the TA wallet id).
    pub key_id: String,
    /// Free-form description.
    pub description: String,
    /// AWS-style key usage.
    pub key_usage: String,
    /// AWS-style key spec.
    pub key_spec: String,
    /// AWS-style key origin.
    pub origin: String,
    /// Owner address (`0x` lowercase hex).
    pub address: Address,
    /// Owner public key (SEC1 compressed hex).
    pub public_key: String,
    /// Owner derivation path.
    pub derivation_path: String,
    /// Relying party id the passkey is bound to.
    pub rp_id: String,
    /// Passkey credential id (base64url).
    pub credential_id: String,
    /// Passkey public key (SEC1 uncompressed hex).
    pub passkey_public_key: String,
    /// Serialised webauthn-rs `Passkey`.
    pub passkey_json: String,
    /// The authenticator's signature counter at registration.
    pub sign_count: i64,
    /// The TA holding the wallet's seed (its operator address, `0x` lowercase hex), when known.
    pub ta_id: Option<String>,
    /// Now (unix seconds).
    pub now: i64,
}

/// A wallet row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wallet {
    /// Wallet UUID.
    pub key_id: String,
    /// Description.
    pub description: String,
    /// Key usage.
    pub key_usage: String,
    /// Key spec.
    pub key_spec: String,
    /// Key origin.
    pub origin: String,
    /// Owner address.
    pub address: Address,
    /// Owner public key.
    pub public_key: String,
    /// Owner path.
    pub derivation_path: String,
    /// Relying party id.
    pub rp_id: String,
    /// Status (`ready`).
    pub status: String,
    /// Created (unix seconds).
    pub created_at: i64,
    /// Updated (unix seconds).
    pub updated_at: i64,
}

/// The passkey bound to a wallet.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct PasskeyCredential {
    /// Wallet UUID.
    pub wallet_id: String,
    /// Credential id (base64url).
    pub credential_id: String,
    /// P-256 public key (SEC1 uncompressed hex).
    pub public_key: String,
    /// Serialised webauthn-rs `Passkey`.
    pub passkey_json: String,
    /// Last accepted signature counter.
    pub sign_count: i64,
    /// Created.
    pub created_at: i64,
    /// Updated.
    pub updated_at: i64,
}

/// An address derived for a wallet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletAddress {
    /// Address (`0x` lowercase).
    pub address: Address,
    /// Wallet UUID.
    pub wallet_id: String,
    /// Its path.
    pub derivation_path: String,
    /// Its public key (SEC1 compressed hex).
    pub public_key: String,
    /// Recorded.
    pub created_at: i64,
}

/// Column `col` of `row` as an address: one that does not parse is a decode error (a corrupt
/// row), never a default.
fn address_column(row: &AnyRow, col: &str) -> sqlx::Result<Address> {
    let v: String = row.try_get(col)?;
    parse_address(col, &v).map_err(|e| sqlx::Error::ColumnDecode {
        index: col.to_owned(),
        source: Box::new(e),
    })
}

impl<'r> sqlx::FromRow<'r, AnyRow> for Wallet {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(Wallet {
            key_id: row.try_get("key_id")?,
            description: row.try_get("description")?,
            key_usage: row.try_get("key_usage")?,
            key_spec: row.try_get("key_spec")?,
            origin: row.try_get("origin")?,
            address: address_column(row, "address")?,
            public_key: row.try_get("public_key")?,
            derivation_path: row.try_get("derivation_path")?,
            rp_id: row.try_get("rp_id")?,
            status: row.try_get("status")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

impl<'r> sqlx::FromRow<'r, AnyRow> for WalletAddress {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(WalletAddress {
            address: address_column(row, "address")?,
            wallet_id: row.try_get("wallet_id")?,
            derivation_path: row.try_get("derivation_path")?,
            public_key: row.try_get("public_key")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

const WALLET_COLS: &str = "key_id, description, key_usage, key_spec, origin, address, public_key, \
     derivation_path, rp_id, status, created_at, updated_at";

impl Db {
    /// The TA recorded for wallet `wallet_id`: `None` when there is no such wallet,
    /// `Some(None)` when it has no TA recorded (registered before the column existed).
    pub async fn wallet_ta(&self, wallet_id: &str) -> Result<Option<Option<String>>> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT ta_id FROM wallets WHERE key_id = $1")
                .bind(wallet_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(t,)| t))
    }

    /// Records `ta_id` on every wallet that has no TA recorded (those registered before the
    /// column existed, when a database had one TA); returns how many.
    pub async fn adopt_wallets_without_ta(&self, ta_id: &str) -> Result<u64> {
        let done = sqlx::query("UPDATE wallets SET ta_id = $1 WHERE ta_id IS NULL")
            .bind(ta_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The wallets recorded on another TA than `ta_id`, by id.
    pub async fn wallets_of_other_tas(&self, ta_id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT key_id FROM wallets WHERE ta_id IS NOT NULL AND ta_id <> $1 ORDER BY key_id",
        )
        .bind(ta_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(k,)| k).collect())
    }

    /// Insert a wallet, its passkey credential and its owner address in one
    /// transaction.
    pub async fn insert_wallet(&self, w: &NewWallet) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO wallets (key_id, description, key_usage, key_spec, origin, address, \
             public_key, derivation_path, rp_id, status, created_at, updated_at, ta_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'ready', $10, $11, $12)",
        )
        .bind(&w.key_id)
        .bind(&w.description)
        .bind(&w.key_usage)
        .bind(&w.key_spec)
        .bind(&w.origin)
        .bind(stored_address(&w.address))
        .bind(&w.public_key)
        .bind(&w.derivation_path)
        .bind(&w.rp_id)
        .bind(w.now)
        .bind(w.now)
        .bind(&w.ta_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO passkey_credentials (wallet_id, credential_id, public_key, passkey_json, \
             sign_count, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&w.key_id)
        .bind(&w.credential_id)
        .bind(&w.passkey_public_key)
        .bind(&w.passkey_json)
        .bind(w.sign_count)
        .bind(w.now)
        .bind(w.now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO wallet_addresses (address, wallet_id, derivation_path, \
             public_key, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (address) DO UPDATE \
             SET wallet_id = excluded.wallet_id, derivation_path = excluded.derivation_path, \
             public_key = excluded.public_key, created_at = excluded.created_at",
        )
        .bind(stored_address(&w.address))
        .bind(&w.key_id)
        .bind(&w.derivation_path)
        .bind(&w.public_key)
        .bind(w.now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A wallet by id.
    pub async fn get_wallet(&self, key_id: &str) -> Result<Option<Wallet>> {
        let sql = format!("SELECT {WALLET_COLS} FROM wallets WHERE key_id = $1");
        Ok(sqlx::query_as::<_, Wallet>(&sql)
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Wallets ordered by id, at most `limit`, starting after `after`.
    pub async fn list_wallets(&self, limit: u32, after: Option<&str>) -> Result<Vec<Wallet>> {
        let sql =
            format!("SELECT {WALLET_COLS} FROM wallets WHERE key_id > $1 ORDER BY key_id LIMIT $2");
        Ok(sqlx::query_as::<_, Wallet>(&sql)
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    /// Delete a wallet (cascades to its passkey, addresses and agent keys).
    /// Returns whether a row was deleted.
    pub async fn delete_wallet(&self, key_id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM wallets WHERE key_id = $1")
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// The passkey credential of a wallet.
    pub async fn get_passkey(&self, wallet_id: &str) -> Result<Option<PasskeyCredential>> {
        Ok(sqlx::query_as::<_, PasskeyCredential>(
            "SELECT wallet_id, credential_id, public_key, passkey_json, sign_count, created_at, \
             updated_at FROM passkey_credentials WHERE wallet_id = $1",
        )
        .bind(wallet_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Record an authentication's new counter and credential state, only if
    /// the stored counter is still `expected_count` (compare-and-swap, so two
    /// concurrent ceremonies cannot both pass with one counter value).
    /// Returns whether the row was updated.
    pub async fn update_passkey_counter(
        &self,
        wallet_id: &str,
        credential_id: &str,
        expected_count: i64,
        new_count: i64,
        passkey_json: &str,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE passkey_credentials SET sign_count = $1, passkey_json = $2, updated_at = $3 \
             WHERE wallet_id = $4 AND credential_id = $5 AND sign_count = $6",
        )
        .bind(new_count)
        .bind(passkey_json)
        .bind(now)
        .bind(wallet_id)
        .bind(credential_id)
        .bind(expected_count)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Replace a wallet's passkey (after ChangePasskey succeeded in the TA).
    #[allow(clippy::too_many_arguments)]
    pub async fn replace_passkey(
        &self,
        wallet_id: &str,
        credential_id: &str,
        public_key: &str,
        passkey_json: &str,
        sign_count: i64,
        rp_id: &str,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE passkey_credentials SET credential_id = $1, public_key = $2, passkey_json = $3, \
             sign_count = $4, updated_at = $5 WHERE wallet_id = $6",
        )
        .bind(credential_id)
        .bind(public_key)
        .bind(passkey_json)
        .bind(sign_count)
        .bind(now)
        .bind(wallet_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE wallets SET rp_id = $1, updated_at = $2 WHERE key_id = $3")
            .bind(rp_id)
            .bind(now)
            .bind(wallet_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// Record a derived address (idempotent).
    pub async fn upsert_address(&self, a: &WalletAddress) -> Result<()> {
        sqlx::query(
            "INSERT INTO wallet_addresses (address, wallet_id, derivation_path, \
             public_key, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (address) DO UPDATE \
             SET wallet_id = excluded.wallet_id, derivation_path = excluded.derivation_path, \
             public_key = excluded.public_key, created_at = excluded.created_at",
        )
        .bind(stored_address(&a.address))
        .bind(&a.wallet_id)
        .bind(&a.derivation_path)
        .bind(&a.public_key)
        .bind(a.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Look up an address.
    pub async fn find_address(&self, address: Address) -> Result<Option<WalletAddress>> {
        Ok(sqlx::query_as::<_, WalletAddress>(
            "SELECT address, wallet_id, derivation_path, public_key, created_at \
             FROM wallet_addresses WHERE address = $1",
        )
        .bind(stored_address(&address))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Addresses recorded for a wallet.
    pub async fn wallet_addresses(&self, wallet_id: &str) -> Result<Vec<WalletAddress>> {
        Ok(sqlx::query_as::<_, WalletAddress>(
            "SELECT address, wallet_id, derivation_path, public_key, created_at \
             FROM wallet_addresses WHERE wallet_id = $1 ORDER BY derivation_path",
        )
        .bind(wallet_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Number of wallets.
    pub async fn count_wallets(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM wallets")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    #[tokio::test]
    async fn each_wallet_names_its_ta() {
        let (_d, db) = temp_db().await;
        wallet(&db, "old").await; // registered before the column: no TA
        assert_eq!(db.wallet_ta("old").await.unwrap(), Some(None));
        assert_eq!(db.wallet_ta("none").await.unwrap(), None);
        // The first companion after the upgrade adopts them; never again.
        assert_eq!(db.adopt_wallets_without_ta("0xaa").await.unwrap(), 1);
        assert_eq!(db.adopt_wallets_without_ta("0xbb").await.unwrap(), 0);
        assert_eq!(
            db.wallet_ta("old").await.unwrap(),
            Some(Some("0xaa".to_owned()))
        );
        db.delete_wallet("old").await.unwrap();
        for (id, ta) in [("a1", "0xaa"), ("b1", "0xbb"), ("b2", "0xbb")] {
            wallet(&db, id).await;
            sqlx::query("UPDATE wallets SET ta_id = $1 WHERE key_id = $2")
                .bind(ta)
                .bind(id)
                .execute(db.pool())
                .await
                .unwrap();
        }
        assert_eq!(db.wallets_of_other_tas("0xaa").await.unwrap(), ["b1", "b2"]);
        assert_eq!(db.wallets_of_other_tas("0xbb").await.unwrap(), ["a1"]);
    }

    #[tokio::test]
    async fn insert_get_list_delete() {
        let (_d, db) = temp_db().await;
        wallet(&db, "a").await;
        wallet(&db, "b").await;
        wallet(&db, "c").await;
        let w = db.get_wallet("b").await.unwrap().unwrap();
        assert_eq!(w.rp_id, "localhost");
        assert_eq!(w.status, "ready");
        let page = db.list_wallets(2, None).await.unwrap();
        assert_eq!(page.len(), 2);
        let next = db.list_wallets(2, Some(&page[1].key_id)).await.unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].key_id, "c");
        assert!(db.get_passkey("a").await.unwrap().is_some());
        assert!(db.find_address(w.address).await.unwrap().is_some());
        assert!(db
            .find_address(alloy::primitives::Address::repeat_byte(0xee))
            .await
            .unwrap()
            .is_none());
        assert!(db.delete_wallet("a").await.unwrap());
        assert!(!db.delete_wallet("a").await.unwrap());
        assert!(db.get_passkey("a").await.unwrap().is_none(), "cascade");
        assert_eq!(db.count_wallets().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_corrupt_address_is_an_error_not_a_default() {
        let (_d, db) = temp_db().await;
        wallet(&db, "a").await;
        sqlx::query("UPDATE wallets SET address = 'not an address' WHERE key_id = 'a'")
            .execute(&db.pool)
            .await
            .unwrap();
        assert!(db.get_wallet("a").await.is_err());
    }

    #[tokio::test]
    async fn counter_update_is_compare_and_swap() {
        let (_d, db) = temp_db().await;
        wallet(&db, "a").await;
        assert!(db
            .update_passkey_counter("a", "cred-a", 0, 1, "{}", 1)
            .await
            .unwrap());
        // A second update that read the old counter loses.
        assert!(!db
            .update_passkey_counter("a", "cred-a", 0, 1, "{}", 1)
            .await
            .unwrap());
        assert!(!db
            .update_passkey_counter("a", "other", 1, 2, "{}", 1)
            .await
            .unwrap());
        assert_eq!(db.get_passkey("a").await.unwrap().unwrap().sign_count, 1);
        assert!(db
            .replace_passkey("a", "new", "04cc", "{}", 0, "example.com", 2)
            .await
            .unwrap());
        let p = db.get_passkey("a").await.unwrap().unwrap();
        assert_eq!((p.credential_id.as_str(), p.sign_count), ("new", 0));
        assert_eq!(
            db.get_wallet("a").await.unwrap().unwrap().rp_id,
            "example.com"
        );
    }
}
