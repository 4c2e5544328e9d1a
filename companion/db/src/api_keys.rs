//! API keys. A key is `kms_<id>_<secret>` (both lowercase hex); only
//! SHA-256(secret) is stored, looked up by id and compared in constant time.

use crate::{random_bytes, Db, Result};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of every API key.
pub const API_KEY_PREFIX: &str = "kms_";

/// A freshly created key: the only time its secret is visible.
#[derive(Clone)]
pub struct NewApiKey {
    /// Its public id.
    pub id: String,
    /// The full key to hand to the client (`kms_<id>_<secret>`).
    pub key: String,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Public facts about a key.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyInfo {
    /// Id.
    pub id: String,
    /// Label.
    pub label: String,
    /// Created.
    pub created_at: i64,
    /// Last used, if recorded.
    pub last_used_at: Option<i64>,
    /// Revoked, if revoked.
    pub revoked_at: Option<i64>,
}

/// Split `kms_<id>_<secret>`.
fn split_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex_ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|c| c.is_ascii_hexdigit());
    (hex_ok(id, 16) && hex_ok(secret, 64)).then_some((id, secret))
}

impl Db {
    /// Create a key with `label`. The returned secret is not stored.
    pub async fn create_api_key(&self, label: &str, now: i64) -> Result<NewApiKey> {
        let id = hex::encode(random_bytes::<8>()?);
        let secret = hex::encode(random_bytes::<32>()?);
        let hash = hex::encode(Sha256::digest(secret.as_bytes()));
        sqlx::query(
            "INSERT INTO api_keys (id, secret_hash, label, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(&hash)
        .bind(label)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let key = format!("{API_KEY_PREFIX}{id}_{secret}");
        Ok(NewApiKey { id, key })
    }

    /// Every key (active and revoked), oldest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>> {
        Ok(sqlx::query_as::<_, ApiKeyInfo>(
            "SELECT id, label, created_at, last_used_at, revoked_at FROM api_keys \
             ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revoke a key by id. Returns whether an active key was revoked.
    pub async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool> {
        let r =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Number of active (unrevoked) keys.
    pub async fn count_active_api_keys(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// Check a presented key. Returns its id when it is a known, active key.
    pub async fn verify_api_key(&self, presented: &str) -> Result<Option<String>> {
        let Some((id, secret)) = split_key(presented) else {
            return Ok(None);
        };
        let row: Option<(String,)> =
            sqlx::query_as("SELECT secret_hash FROM api_keys WHERE id = $1 AND revoked_at IS NULL")
                .bind(id.to_ascii_lowercase())
                .fetch_optional(&self.pool)
                .await?;
        let Some((stored,)) = row else {
            return Ok(None);
        };
        let got = hex::encode(Sha256::digest(secret.to_ascii_lowercase().as_bytes()));
        Ok(bool::from(got.as_bytes().ct_eq(stored.as_bytes())).then(|| id.to_ascii_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    #[tokio::test]
    async fn create_verify_revoke() {
        let (_d, db) = temp_db().await;
        assert_eq!(db.count_active_api_keys().await.unwrap(), 0);
        let k = db.create_api_key("ci", 10).await.unwrap();
        assert!(k.key.starts_with("kms_"));
        assert!(!format!("{k:?}").contains(&k.key));
        assert_eq!(db.verify_api_key(&k.key).await.unwrap(), Some(k.id.clone()));
        // Wrong secret, wrong id, garbage.
        let mut wrong = k.key.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert_eq!(db.verify_api_key(&wrong).await.unwrap(), None);
        assert_eq!(db.verify_api_key("kms_x_y").await.unwrap(), None);
        assert_eq!(db.verify_api_key("").await.unwrap(), None);
        // The secret is not stored anywhere.
        let (stored,): (String,) = sqlx::query_as("SELECT secret_hash FROM api_keys")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert!(!k.key.contains(&stored));
        let list = db.list_api_keys().await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].label, "ci");
        assert!(db.revoke_api_key(&k.id, 11).await.unwrap());
        assert!(!db.revoke_api_key(&k.id, 12).await.unwrap());
        assert_eq!(db.verify_api_key(&k.key).await.unwrap(), None);
        assert_eq!(db.count_active_api_keys().await.unwrap(), 0);
    }
}
