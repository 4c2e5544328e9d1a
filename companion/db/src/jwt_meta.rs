//! Metadata of the TAs' JWT HMAC secrets, rewritten from each TA's own
//! `JwtSecretStatus` so the table always agrees with it.
//!
//! Each TA's kids are kept under its name (`ta_id`: its operator address, as
//! `wallets.ta_id`; migration 0011): with several TAs over one database each
//! companion (and `kms-admin`) rewrites and shows its own TA's rows only. Rows
//! without a TA (`ta_id` [`UNNAMED_TA`]: recorded before the column existed,
//! or by a TA without an operator key) are recorded under the name of the next
//! TA to sync, the one TA a database had until then, so their history is kept.

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

/// The `ta_id` of rows recorded without a TA's name (see the module docs).
pub const UNNAMED_TA: &str = "";

/// kid, status, created_at, retire_at, retired_at.
type MetaRow = (String, String, i64, Option<i64>, Option<i64>);

impl Db {
    /// Make TA `ta`'s rows agree with it (`ta`: its operator address, `0x` lowercase hex, or
    /// [`UNNAMED_TA`] for a TA without an operator key): `live` is the TA's store (current and
    /// verify-only kids); every other kid recorded for it becomes `retired`. Rows without a TA
    /// are recorded under `ta` first (see the module docs). Other TAs' rows are left alone.
    pub async fn sync_jwt_secret_meta(
        &self,
        ta: &str,
        live: &[JwtSecretMeta],
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if ta != UNNAMED_TA {
            // A kid both unnamed and already under `ta` keeps the named row.
            sqlx::query(
                "DELETE FROM jwt_secret_meta WHERE ta_id = $1 AND kid IN \
                 (SELECT kid FROM jwt_secret_meta WHERE ta_id = $2)",
            )
            .bind(UNNAMED_TA)
            .bind(ta)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE jwt_secret_meta SET ta_id = $1 WHERE ta_id = $2")
                .bind(ta)
                .bind(UNNAMED_TA)
                .execute(&mut *tx)
                .await?;
        }
        for k in live {
            sqlx::query(
                "INSERT INTO jwt_secret_meta (ta_id, kid, status, created_at, retire_at, retired_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, NULL, $6) ON CONFLICT(ta_id, kid) DO UPDATE SET status = excluded.status, \
                 created_at = excluded.created_at, retire_at = excluded.retire_at, retired_at = NULL, \
                 updated_at = excluded.updated_at",
            )
            .bind(ta)
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
        let recorded: Vec<(String,)> = sqlx::query_as(
            "SELECT kid FROM jwt_secret_meta WHERE ta_id = $1 AND status != 'retired'",
        )
        .bind(ta)
        .fetch_all(&mut *tx)
        .await?;
        for (kid,) in recorded {
            if live.iter().any(|k| k.kid == kid) {
                continue;
            }
            sqlx::query(
                "UPDATE jwt_secret_meta SET status = 'retired', retired_at = $1, updated_at = $2 \
                 WHERE ta_id = $3 AND kid = $4",
            )
            .bind(now)
            .bind(now)
            .bind(ta)
            .bind(&kid)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// [`Db::sync_jwt_secret_meta`] from TA `ta`'s own list (`JwtSecretStatus`, or the
    /// `secrets` of a `JwtRotateSecret` answer): what the companion's rotation task and
    /// `kms-admin` both record after talking to the TA.
    pub async fn sync_jwt_secret_meta_from_ta(
        &self,
        ta: &str,
        list: &[kms_proto::JwtSecretInfo],
        now: i64,
    ) -> Result<()> {
        self.sync_jwt_secret_meta(ta, &jwt_secret_meta_from_ta(list), now)
            .await
    }

    /// Every recorded kid of every TA, newest first (with one TA: that TA's).
    pub async fn list_jwt_secret_meta(&self) -> Result<Vec<JwtSecretMeta>> {
        let rows: Vec<MetaRow> = sqlx::query_as(
            "SELECT kid, status, created_at, retire_at, retired_at FROM jwt_secret_meta \
             ORDER BY created_at DESC, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        Self::meta_rows(rows)
    }

    /// The kids recorded for TA `ta` (see [`Db::sync_jwt_secret_meta`]), newest first.
    pub async fn list_jwt_secret_meta_of(&self, ta: &str) -> Result<Vec<JwtSecretMeta>> {
        let rows: Vec<MetaRow> = sqlx::query_as(
            "SELECT kid, status, created_at, retire_at, retired_at FROM jwt_secret_meta \
             WHERE ta_id = $1 ORDER BY created_at DESC, kid",
        )
        .bind(ta)
        .fetch_all(&self.pool)
        .await?;
        Self::meta_rows(rows)
    }

    fn meta_rows(rows: Vec<MetaRow>) -> Result<Vec<JwtSecretMeta>> {
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

    const TA_A: &str = "0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const TA_B: &str = "0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn kids(m: &[JwtSecretMeta]) -> Vec<(String, JwtSecretState)> {
        let mut v: Vec<_> = m.iter().map(|x| (x.kid.clone(), x.status)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Two TAs over one database: each sync rewrites only its own TA's rows, and each TA's list
    /// shows only its own kids (the same kid under two TAs stays two rows).
    #[tokio::test]
    async fn each_ta_keeps_its_own_kids() {
        use JwtSecretState::*;
        let (_d, db) = temp_db().await;
        db.sync_jwt_secret_meta(
            TA_A,
            &[k("a1", Current, None), k("same", VerifyOnly, Some(9))],
            10,
        )
        .await
        .unwrap();
        db.sync_jwt_secret_meta(
            TA_B,
            &[k("b1", Current, None), k("same", Current, None)],
            20,
        )
        .await
        .unwrap();
        // B's sync retired none of A's kids (before, the table mirrored the last TA to sync).
        assert_eq!(
            kids(&db.list_jwt_secret_meta_of(TA_A).await.unwrap()),
            [("a1".into(), Current), ("same".into(), VerifyOnly)]
        );
        assert_eq!(
            kids(&db.list_jwt_secret_meta_of(TA_B).await.unwrap()),
            [("b1".into(), Current), ("same".into(), Current)]
        );
        // A forced rotation in A: A's old kids retire, B's stay.
        db.sync_jwt_secret_meta(TA_A, &[k("a2", Current, None)], 30)
            .await
            .unwrap();
        assert_eq!(
            kids(&db.list_jwt_secret_meta_of(TA_A).await.unwrap()),
            [
                ("a1".into(), Retired),
                ("a2".into(), Current),
                ("same".into(), Retired)
            ]
        );
        assert_eq!(
            kids(&db.list_jwt_secret_meta_of(TA_B).await.unwrap()),
            [("b1".into(), Current), ("same".into(), Current)]
        );
        assert_eq!(db.list_jwt_secret_meta().await.unwrap().len(), 5);
        // A TA without an operator key records its kids unnamed; they are nobody's listed kids
        // until a named TA syncs.
        db.sync_jwt_secret_meta(UNNAMED_TA, &[k("u1", Current, None)], 40)
            .await
            .unwrap();
        assert_eq!(db.list_jwt_secret_meta_of(TA_A).await.unwrap().len(), 3);
        assert_eq!(
            kids(&db.list_jwt_secret_meta_of(UNNAMED_TA).await.unwrap()),
            [("u1".into(), Current)]
        );
    }

    /// The rows recorded before migration 0011 (one TA per database) survive it without a TA,
    /// and the first TA to sync records them under its name: their history (retired kids) is
    /// kept, a kid it also has is one row, and another TA's later sync leaves them alone.
    #[tokio::test]
    async fn rows_from_before_the_migration_are_taken_by_the_first_ta_to_sync() {
        use JwtSecretState::*;
        let dir = tempfile::tempdir().unwrap();
        let url = crate::testing::test_database_url(dir.path()).await;
        let backend = crate::Backend::of_url(&url).unwrap();
        // The schema as migration 0010 left it (the migrator's fields are sqlx's, for tests).
        let before = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(
                backend
                    .migrator()
                    .iter()
                    .filter(|m| m.version < 11)
                    .cloned()
                    .collect(),
            ),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        let raw_url = match backend {
            crate::Backend::Sqlite => format!("{url}?mode=rwc"),
            crate::Backend::Postgres => url.clone(),
        };
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&raw_url).await.unwrap();
        before.run(&pool).await.unwrap();
        for (kid, status, retired_at) in [("old", "retired", Some(5_i64)), ("cur", "current", None)]
        {
            sqlx::query(
                "INSERT INTO jwt_secret_meta (kid, status, created_at, retire_at, retired_at, \
                 updated_at) VALUES ($1, $2, 1, NULL, $3, 5)",
            )
            .bind(kid)
            .bind(status)
            .bind(retired_at)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;

        let db = Db::open(&url).await.unwrap();
        assert_eq!(
            kids(&db.list_jwt_secret_meta_of(UNNAMED_TA).await.unwrap()),
            [("cur".into(), Current), ("old".into(), Retired)]
        );
        db.sync_jwt_secret_meta(
            TA_A,
            &[k("cur", VerifyOnly, Some(99)), k("new", Current, None)],
            10,
        )
        .await
        .unwrap();
        let a = db.list_jwt_secret_meta_of(TA_A).await.unwrap();
        assert_eq!(
            kids(&a),
            [
                ("cur".into(), VerifyOnly),
                ("new".into(), Current),
                ("old".into(), Retired)
            ]
        );
        assert_eq!(
            a.iter().find(|x| x.kid == "old").unwrap().retired_at,
            Some(5)
        );
        assert!(db
            .list_jwt_secret_meta_of(UNNAMED_TA)
            .await
            .unwrap()
            .is_empty());
        db.sync_jwt_secret_meta(TA_B, &[k("b1", Current, None)], 20)
            .await
            .unwrap();
        assert_eq!(db.list_jwt_secret_meta_of(TA_A).await.unwrap(), a);
    }

    #[tokio::test]
    async fn sync_follows_the_ta() {
        let (_d, db) = temp_db().await;
        db.sync_jwt_secret_meta(TA_A, &[k("a", JwtSecretState::Current, None)], 10)
            .await
            .unwrap();
        db.sync_jwt_secret_meta(
            TA_A,
            &[
                k("a", JwtSecretState::VerifyOnly, Some(99)),
                k("b", JwtSecretState::Current, None),
            ],
            20,
        )
        .await
        .unwrap();
        let m = db.list_jwt_secret_meta_of(TA_A).await.unwrap();
        let a = m.iter().find(|x| x.kid == "a").unwrap();
        assert_eq!(
            (a.status, a.retire_at),
            (JwtSecretState::VerifyOnly, Some(99))
        );
        // Forced rotation: only c remains in the TA.
        db.sync_jwt_secret_meta(TA_A, &[k("c", JwtSecretState::Current, None)], 30)
            .await
            .unwrap();
        let m = db.list_jwt_secret_meta_of(TA_A).await.unwrap();
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
