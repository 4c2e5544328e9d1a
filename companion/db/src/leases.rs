//! Leases: a task that must run on one companion at a time when several share the database
//! (JWT secret rotation, docs/DEPLOY.md) takes a named row for a while and renews it at each of
//! its runs; another replica takes it over only once it has expired (its holder stopped or lost
//! the database).
//!
//! One statement takes or renews a lease (an upsert whose update applies only to the holder or to
//! an expired row), so two replicas racing for it can never both get it: on PostgreSQL the second
//! waits for the first's row lock and then sees its row; on SQLite writers are serialised.

use crate::{Db, Result};

/// Who holds a lease, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The task's name.
    pub name: String,
    /// The replica holding it.
    pub holder: String,
    /// Unix seconds; past it any replica may take it.
    pub expires_at: i64,
}

impl Db {
    /// Takes lease `name` for `holder` until `now + ttl_secs`, or renews it if `holder` already
    /// holds it. Returns whether `holder` holds it now: false while another replica's lease has
    /// not expired (`expires_at > now`).
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_secs: i64,
        now: i64,
    ) -> Result<bool> {
        let row: Option<(String,)> = sqlx::query_as(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= $4 \
             RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(now.saturating_add(ttl_secs))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some_and(|(h,)| h == holder))
    }

    /// Gives lease `name` up if `holder` holds it (at shutdown, so that another replica takes
    /// it over at once instead of after its expiry). Returns whether it was held.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The lease `name` as stored (expired or not), if any replica ever took it.
    pub async fn lease(&self, name: &str) -> Result<Option<Lease>> {
        let row: Option<(String, String, i64)> =
            sqlx::query_as("SELECT name, holder, expires_at FROM leases WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(name, holder, expires_at)| Lease {
            name,
            holder,
            expires_at,
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::temp_db;
    use crate::Db;

    #[tokio::test]
    async fn one_holder_at_a_time_until_expiry() {
        let (_d, db) = temp_db().await;
        assert!(db.lease("rotation").await.unwrap().is_none());
        assert!(db.try_lease("rotation", "a", 30, 100).await.unwrap());
        // Another replica is refused while it is live, the holder renews it.
        assert!(!db.try_lease("rotation", "b", 30, 129).await.unwrap());
        assert!(db.try_lease("rotation", "a", 30, 129).await.unwrap());
        assert!(!db.try_lease("rotation", "b", 30, 158).await.unwrap());
        let l = db.lease("rotation").await.unwrap().unwrap();
        assert_eq!((l.holder.as_str(), l.expires_at), ("a", 159));
        // Expired: the other replica takes it, and the former holder is refused.
        assert!(db.try_lease("rotation", "b", 30, 159).await.unwrap());
        assert!(!db.try_lease("rotation", "a", 30, 160).await.unwrap());
        // Other names are other leases.
        assert!(db.try_lease("other", "a", 30, 160).await.unwrap());
        // Released by its holder only; then anyone takes it at once.
        assert!(!db.release_lease("rotation", "a").await.unwrap());
        assert!(db.release_lease("rotation", "b").await.unwrap());
        assert!(db.try_lease("rotation", "a", 30, 161).await.unwrap());
    }

    /// Two handles on one database (two replicas), racing for the same lease many times: exactly
    /// one gets it each round.
    #[tokio::test]
    async fn racing_replicas_never_both_hold_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::testing::test_database_url(dir.path()).await;
        let db = Db::open(&url).await.unwrap();
        let other = Db::open(&url).await.unwrap();
        for round in 0..20i64 {
            let now = 1_000 + round * 100; // every earlier lease has expired
            let (a, b) = tokio::join!(
                db.try_lease("race", "a", 10, now),
                other.try_lease("race", "b", 10, now)
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            assert!(a ^ b, "round {round}: a={a} b={b}");
        }
    }
}
