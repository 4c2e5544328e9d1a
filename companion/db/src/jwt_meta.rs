//! Metadata of the TA's JWT HMAC secrets, rewritten from the TA's own
//! `JwtSecretStatus` so the table always agrees with it.

use crate::{Db, DbError, Result};

/// Status of a kid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtSecretState {
    /// Issues and verifies.
    Current,
    /// Verifies only until `retire_at`.
    VerifyOnly,
    /// Gone from the TA.
    Retired,
}

impl JwtSecretState {
    /// The stored string.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtSecretState::Current => "current",
            JwtSecretState::VerifyOnly => "verify-only",
            JwtSecretState::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "current" => JwtSecretState::Current,
            "verify-only" => JwtSecretState::VerifyOnly,
            "retired" => JwtSecretState::Retired,
            other => return Err(DbError::Invalid(format!("kid status {other:?}"))),
        })
    }
}

/// One kid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtSecretMeta {
    /// Key id.
    pub kid: String,
    /// Status.
    pub status: JwtSecretState,
    /// Created (TA clock).
    pub created_at: i64,
    /// When a verify-only kid stops verifying.
    pub retire_at: Option<i64>,
    /// When the kid was seen gone from the TA.
    pub retired_at: Option<i64>,
}

/// The TA's `JwtSecretStatus` (or a rotation's `secrets`) as rows of this table.
pub fn jwt_secret_meta_from_ta(list: &[kms_proto::JwtSecretInfo]) -> Vec<JwtSecretMeta> {
    list.iter()
        .map(|k| JwtSecretMeta {
            kid: k.kid.clone(),
            status: match k.status {
                kms_proto::KidStatus::Current => JwtSecretState::Current,
                kms_proto::KidStatus::VerifyOnly => JwtSecretState::VerifyOnly,
            },
            created_at: i64::try_from(k.created_at).unwrap_or(i64::MAX),
            retire_at: k.retire_at.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
            retired_at: None,
        })
        .collect()
}

/// kid, status, created_at, retire_at, retired_at.
type MetaRow = (String, String, i64, Option<i64>, Option<i64>);

impl Db {
    /// Make the table agree with the TA: `live` is the TA's store (current
    /// and verify-only kids); every other recorded kid becomes `retired`.
    pub async fn sync_jwt_secret_meta(&self, live: &[JwtSecretMeta], now: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for k in live {
            sqlx::query(
                "INSERT INTO jwt_secret_meta (kid, status, created_at, retire_at, retired_at, updated_at) \
                 VALUES ($1, $2, $3, $4, NULL, $5) ON CONFLICT(kid) DO UPDATE SET status = excluded.status, \
                 created_at = excluded.created_at, retire_at = excluded.retire_at, retired_at = NULL, \
                 updated_at = excluded.updated_at",
            )
            .bind(&k.kid)
            .bind(k.status.as_str())
            .bind(k.created_at)
            .bind(k.retire_at)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        // Every recorded kid the TA no longer has is retired (decided here rather than with a
        // JSON function, whose name differs between SQLite and PostgreSQL).
        let recorded: Vec<(String,)> =
            sqlx::query_as("SELECT kid FROM jwt_secret_meta WHERE status != 'retired'")
                .fetch_all(&mut *tx)
                .await?;
        for (kid,) in recorded {
            if live.iter().any(|k| k.kid == kid) {
                continue;
            }
            sqlx::query(
                "UPDATE jwt_secret_meta SET status = 'retired', retired_at = $1, updated_at = $2 \
                 WHERE kid = $3",
            )
            .bind(now)
            .bind(now)
            .bind(&kid)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// [`Db::sync_jwt_secret_meta`] from the TA's own list (`JwtSecretStatus`, or the
    /// `secrets` of a `JwtRotateSecret` answer): what the companion's rotation task and
    /// `kms-admin` both record after talking to the TA.
    pub async fn sync_jwt_secret_meta_from_ta(
        &self,
        ta: &[kms_proto::JwtSecretInfo],
        now: i64,
    ) -> Result<()> {
        self.sync_jwt_secret_meta(&jwt_secret_meta_from_ta(ta), now)
            .await
    }

    /// Every recorded kid, newest first.
    pub async fn list_jwt_secret_meta(&self) -> Result<Vec<JwtSecretMeta>> {
        let rows: Vec<MetaRow> = sqlx::query_as(
            "SELECT kid, status, created_at, retire_at, retired_at FROM jwt_secret_meta \
             ORDER BY created_at DESC, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(kid, status, created_at, retire_at, retired_at)| {
                Ok(JwtSecretMeta {
                    kid,
                    status: JwtSecretState::parse(&status)?,
                    created_at,
                    retire_at,
                    retired_at,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    fn k(kid: &str, status: JwtSecretState, retire_at: Option<i64>) -> JwtSecretMeta {
        JwtSecretMeta {
            kid: kid.into(),
            status,
            created_at: 1,
            retire_at,
            retired_at: None,
        }
    }

    #[tokio::test]
    async fn sync_follows_the_ta() {
        let (_d, db) = temp_db().await;
        db.sync_jwt_secret_meta(&[k("a", JwtSecretState::Current, None)], 10)
            .await
            .unwrap();
        db.sync_jwt_secret_meta(
            &[
                k("a", JwtSecretState::VerifyOnly, Some(99)),
                k("b", JwtSecretState::Current, None),
            ],
            20,
        )
        .await
        .unwrap();
        let m = db.list_jwt_secret_meta().await.unwrap();
        let a = m.iter().find(|x| x.kid == "a").unwrap();
        assert_eq!(
            (a.status, a.retire_at),
            (JwtSecretState::VerifyOnly, Some(99))
        );
        // Forced rotation: only c remains in the TA.
        db.sync_jwt_secret_meta(&[k("c", JwtSecretState::Current, None)], 30)
            .await
            .unwrap();
        let m = db.list_jwt_secret_meta().await.unwrap();
        assert_eq!(m.len(), 3);
        for x in &m {
            let want = if x.kid == "c" {
                JwtSecretState::Current
            } else {
                JwtSecretState::Retired
            };
            assert_eq!(x.status, want, "{}", x.kid);
        }
        assert_eq!(
            m.iter().find(|x| x.kid == "a").unwrap().retired_at,
            Some(30)
        );
    }
}
