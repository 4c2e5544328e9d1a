//! WebAuthn ceremonies in progress: single use, bound to a wallet, a purpose
//! and (for authentications) the digest of the payload they authorise.

use crate::{Db, Result};

/// Registration or authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeKind {
    /// A registration ceremony (new wallet, or a new passkey for a wallet).
    Registration,
    /// An authentication ceremony.
    Authentication,
}

impl ChallengeKind {
    /// The stored string.
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Registration => "registration",
            ChallengeKind::Authentication => "authentication",
        }
    }
}

/// A ceremony to store.
#[derive(Clone, Debug)]
pub struct NewChallenge {
    /// Its id (random, handed to the client).
    pub id: String,
    /// Kind.
    pub kind: ChallengeKind,
    /// The wallet it is bound to, if any.
    pub wallet_id: Option<String>,
    /// The operation it authorises.
    pub purpose: String,
    /// Hex payload digest the WebAuthn challenge commits to.
    pub payload_digest: Option<String>,
    /// Serialised webauthn-rs state.
    pub state_json: String,
    /// Extra data (registration metadata).
    pub metadata_json: Option<String>,
    /// Now.
    pub now: i64,
    /// Expiry.
    pub expires_at: i64,
}

/// A consumed ceremony.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Challenge {
    /// Id.
    pub id: String,
    /// Kind string.
    pub kind: String,
    /// Bound wallet.
    pub wallet_id: Option<String>,
    /// Purpose.
    pub purpose: String,
    /// Payload digest.
    pub payload_digest: Option<String>,
    /// State.
    pub state_json: String,
    /// Metadata.
    pub metadata_json: Option<String>,
    /// Created.
    pub created_at: i64,
    /// Expiry.
    pub expires_at: i64,
}

/// Why a ceremony could not be consumed. Nothing is consumed in these cases
/// except [`ChallengeRefusal::AlreadyUsed`] (it already was).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeRefusal {
    /// No ceremony with that id.
    #[error("unknown challenge id")]
    Unknown,
    /// Already used once.
    #[error("challenge already used")]
    AlreadyUsed,
    /// Past its expiry.
    #[error("challenge expired")]
    Expired,
    /// A registration id given where an authentication is needed, or the
    /// reverse.
    #[error("challenge is for a {0} ceremony")]
    WrongKind(String),
    /// Bound to another wallet.
    #[error("challenge was issued for another key")]
    WrongWallet,
    /// Issued for another operation.
    #[error("challenge was issued for purpose {0}")]
    WrongPurpose(String),
    /// The payload rebuilt from this request differs from the one the
    /// challenge commits to.
    #[error("the assertion was made for a different payload")]
    WrongPayload,
}

/// kind, wallet, purpose, digest, expiry, used.
type ChallengeStatusRow = (
    String,
    Option<String>,
    String,
    Option<String>,
    i64,
    Option<i64>,
);

impl Db {
    /// Store a ceremony.
    pub async fn insert_challenge(&self, c: &NewChallenge) -> Result<()> {
        sqlx::query(
            "INSERT INTO challenges (id, kind, wallet_id, purpose, payload_digest, state_json, \
             metadata_json, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&c.id)
        .bind(c.kind.as_str())
        .bind(&c.wallet_id)
        .bind(&c.purpose)
        .bind(&c.payload_digest)
        .bind(&c.state_json)
        .bind(&c.metadata_json)
        .bind(c.now)
        .bind(c.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Consume a ceremony: atomically mark it used if it exists, is unused,
    /// unexpired, of `kind`, bound to `wallet_id`, for `purpose` and (when
    /// `payload_digest` is `Some`) for that digest. A ceremony that does not
    /// match is left untouched and the refusal says why.
    pub async fn consume_challenge(
        &self,
        id: &str,
        kind: ChallengeKind,
        wallet_id: Option<&str>,
        purpose: &str,
        payload_digest: Option<&str>,
        now: i64,
    ) -> Result<std::result::Result<Challenge, ChallengeRefusal>> {
        let taken = sqlx::query_as::<_, Challenge>(
            "UPDATE challenges SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND expires_at > $3 \
             AND kind = $4 AND wallet_id IS NOT DISTINCT FROM $5 AND purpose = $6 AND ($7 IS NULL OR payload_digest = $8) \
             RETURNING id, kind, wallet_id, purpose, payload_digest, state_json, metadata_json, \
             created_at, expires_at",
        )
        .bind(now)
        .bind(id)
        .bind(now)
        .bind(kind.as_str())
        .bind(wallet_id)
        .bind(purpose)
        .bind(payload_digest)
        .bind(payload_digest)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(c) = taken {
            return Ok(Ok(c));
        }
        // Diagnose without consuming.
        let row: Option<ChallengeStatusRow> = sqlx::query_as(
            "SELECT kind, wallet_id, purpose, payload_digest, expires_at, used_at \
                 FROM challenges WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((k, w, p, d, exp, used)) = row else {
            return Ok(Err(ChallengeRefusal::Unknown));
        };
        Ok(Err(if used.is_some() {
            ChallengeRefusal::AlreadyUsed
        } else if exp <= now {
            ChallengeRefusal::Expired
        } else if k != kind.as_str() {
            ChallengeRefusal::WrongKind(k)
        } else if w.as_deref() != wallet_id {
            ChallengeRefusal::WrongWallet
        } else if p != purpose {
            ChallengeRefusal::WrongPurpose(p)
        } else if payload_digest.is_some() && d.as_deref() != payload_digest {
            ChallengeRefusal::WrongPayload
        } else {
            // Raced with another consumer between the two statements.
            ChallengeRefusal::AlreadyUsed
        }))
    }

    /// Check a ceremony like [`Db::consume_challenge`] without consuming it
    /// (to rebuild a payload that depends on it, e.g. the new passkey of a
    /// ChangePasskey).
    pub async fn peek_challenge(
        &self,
        id: &str,
        kind: ChallengeKind,
        wallet_id: Option<&str>,
        purpose: &str,
        now: i64,
    ) -> Result<std::result::Result<Challenge, ChallengeRefusal>> {
        let c = sqlx::query_as::<_, Challenge>(
            "SELECT id, kind, wallet_id, purpose, payload_digest, state_json, metadata_json, \
             created_at, expires_at FROM challenges WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(c) = c else {
            return Ok(Err(ChallengeRefusal::Unknown));
        };
        let (used,): (Option<i64>,) =
            sqlx::query_as("SELECT used_at FROM challenges WHERE id = $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
        Ok(if used.is_some() {
            Err(ChallengeRefusal::AlreadyUsed)
        } else if c.expires_at <= now {
            Err(ChallengeRefusal::Expired)
        } else if c.kind != kind.as_str() {
            Err(ChallengeRefusal::WrongKind(c.kind))
        } else if c.wallet_id.as_deref() != wallet_id {
            Err(ChallengeRefusal::WrongWallet)
        } else if c.purpose != purpose {
            Err(ChallengeRefusal::WrongPurpose(c.purpose))
        } else {
            Ok(c)
        })
    }

    /// Delete ceremonies that expired (or were used) before `before`.
    /// Returns how many were deleted.
    pub async fn purge_challenges(&self, before: i64) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM challenges WHERE expires_at <= $1 OR (used_at IS NOT NULL AND used_at <= $2)",
        )
        .bind(before)
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Number of stored ceremonies.
    pub async fn count_challenges(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM challenges")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    fn auth(id: &str, wallet: &str, purpose: &str, digest: &str) -> NewChallenge {
        NewChallenge {
            id: id.into(),
            kind: ChallengeKind::Authentication,
            wallet_id: Some(wallet.into()),
            purpose: purpose.into(),
            payload_digest: Some(digest.into()),
            state_json: "{}".into(),
            metadata_json: None,
            now: 100,
            expires_at: 400,
        }
    }

    #[tokio::test]
    async fn single_use_and_bound() {
        let (_d, db) = temp_db().await;
        db.insert_challenge(&auth("c1", "w", "SignHash", "aa"))
            .await
            .unwrap();
        let kind = ChallengeKind::Authentication;
        let r = |w, p, d, now| db.consume_challenge("c1", kind, Some(w), p, Some(d), now);
        assert_eq!(
            r("x", "SignHash", "aa", 200).await.unwrap(),
            Err(ChallengeRefusal::WrongWallet)
        );
        assert_eq!(
            r("w", "Sign", "aa", 200).await.unwrap(),
            Err(ChallengeRefusal::WrongPurpose("SignHash".into()))
        );
        assert_eq!(
            r("w", "SignHash", "bb", 200).await.unwrap(),
            Err(ChallengeRefusal::WrongPayload)
        );
        assert_eq!(
            r("w", "SignHash", "aa", 400).await.unwrap(),
            Err(ChallengeRefusal::Expired)
        );
        // The refusals above consumed nothing.
        assert!(r("w", "SignHash", "aa", 200).await.unwrap().is_ok());
        assert_eq!(
            r("w", "SignHash", "aa", 200).await.unwrap(),
            Err(ChallengeRefusal::AlreadyUsed)
        );
        assert_eq!(
            db.consume_challenge("nope", kind, None, "x", None, 1)
                .await
                .unwrap(),
            Err(ChallengeRefusal::Unknown)
        );
        assert_eq!(
            db.consume_challenge("c1", ChallengeKind::Registration, None, "x", None, 1)
                .await
                .unwrap(),
            Err(ChallengeRefusal::AlreadyUsed)
        );
    }

    /// Consumers racing for one ceremony, each on a connection of its own: exactly one gets it
    /// (the guarded `UPDATE … RETURNING`, on either backend).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_consumers_take_a_ceremony_once() {
        let (_d, db) = temp_db().await;
        for round in 0..5 {
            let id = format!("c{round}");
            db.insert_challenge(&auth(&id, "w", "SignHash", "aa"))
                .await
                .unwrap();
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let (db, id) = (db.clone(), id.clone());
                tasks.push(tokio::spawn(async move {
                    db.consume_challenge(
                        &id,
                        ChallengeKind::Authentication,
                        Some("w"),
                        "SignHash",
                        Some("aa"),
                        200,
                    )
                    .await
                    .unwrap()
                }));
            }
            let mut won = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Ok(c) => {
                        assert_eq!(c.id, id);
                        won += 1;
                    }
                    Err(r) => assert_eq!(r, ChallengeRefusal::AlreadyUsed),
                }
            }
            assert_eq!(won, 1, "round {round}");
        }
    }

    #[tokio::test]
    async fn purge_removes_expired_and_used() {
        let (_d, db) = temp_db().await;
        db.insert_challenge(&auth("c1", "w", "p", "d"))
            .await
            .unwrap();
        db.insert_challenge(&auth("c2", "w", "p", "d"))
            .await
            .unwrap();
        assert_eq!(db.purge_challenges(399).await.unwrap(), 0);
        let kind = ChallengeKind::Authentication;
        db.consume_challenge("c1", kind, Some("w"), "p", Some("d"), 150)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(db.purge_challenges(200).await.unwrap(), 1);
        assert_eq!(db.purge_challenges(400).await.unwrap(), 1);
        assert_eq!(db.count_challenges().await.unwrap(), 0);
    }
}
