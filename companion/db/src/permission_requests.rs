//! ERC-7715 permission requests (`permission_requests`, migration 0008): a dapp's
//! `wallet_grantPermissions` waiting for the owner's decision on `/ui`.
//!
//! A request is `pending` until the owner approves it ([`Db::approve_permission_request`], once
//! the agent's session is granted), cancels it ([`Db::reject_permission_request`]) or it expires
//! ([`Db::expire_permission_request`]); each change is guarded by `status = 'pending'`, so one
//! decision wins and a decided request never changes again. No credential is ever stored.

use alloy::primitives::Address;

use crate::intents::{parse_address, stored_address};
use crate::{random_bytes, Db, DbError, Result};

/// The state of a permission request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PermissionRequestStatus {
    /// Waiting for the owner.
    Pending,
    /// Granted by the owner.
    Approved,
    /// Cancelled by the owner.
    Rejected,
    /// Not decided in time.
    Expired,
}

impl PermissionRequestStatus {
    /// The stored string.
    pub fn as_str(self) -> &'static str {
        match self {
            PermissionRequestStatus::Pending => "pending",
            PermissionRequestStatus::Approved => "approved",
            PermissionRequestStatus::Rejected => "rejected",
            PermissionRequestStatus::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => PermissionRequestStatus::Pending,
            "approved" => PermissionRequestStatus::Approved,
            "rejected" => PermissionRequestStatus::Rejected,
            "expired" => PermissionRequestStatus::Expired,
            other => {
                return Err(DbError::Invalid(format!(
                    "permission request status {other:?}"
                )))
            }
        })
    }
}

impl std::fmt::Display for PermissionRequestStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request to record ([`Db::insert_permission_request`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewPermissionRequest<'a> {
    /// The wallet asked.
    pub wallet_id: &'a str,
    /// Who asked (the API key's actor).
    pub requester: &'a str,
    /// The request's params as received (JSON).
    pub request_json: &'a str,
    /// The session it maps onto (JSON).
    pub session_json: &'a str,
    /// The permissions that will be granted (JSON).
    pub granted_json: &'a str,
    /// The optional permissions dropped (JSON).
    pub dropped_json: &'a str,
    /// Now.
    pub now: i64,
    /// When it stops being answerable.
    pub expires_at: i64,
}

/// One permission request row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermissionRequest {
    /// Its id (32 hex characters).
    pub id: String,
    /// The wallet asked.
    pub wallet_id: String,
    /// Who asked.
    pub requester: String,
    /// The request's params as received (JSON).
    pub request_json: String,
    /// The session it maps onto (JSON).
    pub session_json: String,
    /// The permissions that will be granted (JSON).
    pub granted_json: String,
    /// The optional permissions dropped (JSON).
    pub dropped_json: String,
    /// Its state.
    pub status: PermissionRequestStatus,
    /// The agent granted (once approved).
    pub key_id: Option<String>,
    /// The account the session is on (once approved).
    pub account: Option<Address>,
    /// Who got the credential: `requester` or `owner` (once approved).
    pub credential_to: Option<String>,
    /// The answer, without the credential (once approved).
    pub result_json: Option<String>,
    /// Recorded (unix seconds).
    pub created_at: i64,
    /// When a pending request expires.
    pub expires_at: i64,
    /// When it was decided.
    pub decided_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    wallet_id: String,
    requester: String,
    request_json: String,
    session_json: String,
    granted_json: String,
    dropped_json: String,
    status: String,
    key_id: Option<String>,
    account: Option<String>,
    credential_to: Option<String>,
    result_json: Option<String>,
    created_at: i64,
    expires_at: i64,
    decided_at: Option<i64>,
}

impl TryFrom<Row> for PermissionRequest {
    type Error = DbError;

    fn try_from(r: Row) -> Result<Self> {
        Ok(PermissionRequest {
            id: r.id,
            wallet_id: r.wallet_id,
            requester: r.requester,
            request_json: r.request_json,
            session_json: r.session_json,
            granted_json: r.granted_json,
            dropped_json: r.dropped_json,
            status: PermissionRequestStatus::parse(&r.status)?,
            key_id: r.key_id,
            account: r
                .account
                .map(|a| parse_address("account", &a))
                .transpose()?,
            credential_to: r.credential_to,
            result_json: r.result_json,
            created_at: r.created_at,
            expires_at: r.expires_at,
            decided_at: r.decided_at,
        })
    }
}

const COLS: &str = "id, wallet_id, requester, request_json, session_json, granted_json, \
    dropped_json, status, key_id, account, credential_to, result_json, created_at, expires_at, \
    decided_at";

impl Db {
    /// The wallet whose owner address is `address`, if any.
    pub async fn wallet_by_owner_address(&self, address: Address) -> Result<Option<String>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT key_id FROM wallets WHERE lower(address) = $1")
                .bind(stored_address(&address))
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(k,)| k))
    }

    /// Records a `pending` request; returns its id.
    pub async fn insert_permission_request(&self, r: &NewPermissionRequest<'_>) -> Result<String> {
        let id = hex::encode(random_bytes::<16>()?);
        sqlx::query(
            "INSERT INTO permission_requests (id, wallet_id, requester, request_json, \
             session_json, granted_json, dropped_json, status, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9)",
        )
        .bind(&id)
        .bind(r.wallet_id)
        .bind(r.requester)
        .bind(r.request_json)
        .bind(r.session_json)
        .bind(r.granted_json)
        .bind(r.dropped_json)
        .bind(r.now)
        .bind(r.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// One request.
    pub async fn get_permission_request(&self, id: &str) -> Result<Option<PermissionRequest>> {
        let sql = format!("SELECT {COLS} FROM permission_requests WHERE id = $1");
        sqlx::query_as::<_, Row>(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(PermissionRequest::try_from)
            .transpose()
    }

    /// The requests of a wallet (of every wallet with `None`), newest first: the pending ones
    /// not yet expired at `now`, and with `decided` also the last decided ones (at most 50).
    pub async fn permission_requests(
        &self,
        wallet_id: Option<&str>,
        now: i64,
        decided: bool,
    ) -> Result<Vec<PermissionRequest>> {
        let sql = format!(
            "SELECT {COLS} FROM permission_requests WHERE ($1 IS NULL OR wallet_id = $2) AND \
             ((status = 'pending' AND expires_at > $3) OR ($4 AND status != 'pending')) \
             ORDER BY created_at DESC, rowid DESC LIMIT 100"
        );
        sqlx::query_as::<_, Row>(&sql)
            .bind(wallet_id)
            .bind(wallet_id)
            .bind(now)
            .bind(decided)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(PermissionRequest::try_from)
            .collect()
    }

    /// The owner granted request `id`: `approved`, with the agent, the account, who got the
    /// credential and the answer. Returns whether it was pending and unexpired at `now`.
    pub async fn approve_permission_request(
        &self,
        id: &str,
        key_id: &str,
        account: Address,
        credential_to: &str,
        result_json: &str,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE permission_requests SET status = 'approved', key_id = $1, account = $2, \
             credential_to = $3, result_json = $4, decided_at = $5 \
             WHERE id = $6 AND status = 'pending' AND expires_at > $7",
        )
        .bind(key_id)
        .bind(stored_address(&account))
        .bind(credential_to)
        .bind(result_json)
        .bind(now)
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The owner cancelled request `id`. Returns whether it was pending.
    pub async fn reject_permission_request(&self, id: &str, now: i64) -> Result<bool> {
        self.close_permission_request(id, PermissionRequestStatus::Rejected, now)
            .await
    }

    /// Nobody decided request `id` in time. Returns whether it was pending.
    pub async fn expire_permission_request(&self, id: &str, now: i64) -> Result<bool> {
        self.close_permission_request(id, PermissionRequestStatus::Expired, now)
            .await
    }

    async fn close_permission_request(
        &self,
        id: &str,
        status: PermissionRequestStatus,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE permission_requests SET status = $1, decided_at = $2 \
             WHERE id = $3 AND status = 'pending'",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{temp_db, wallet};

    fn new<'a>(wallet_id: &'a str, now: i64) -> NewPermissionRequest<'a> {
        NewPermissionRequest {
            wallet_id,
            requester: "api-key:k1",
            request_json: "{}",
            session_json: "{}",
            granted_json: "[]",
            dropped_json: "[]",
            now,
            expires_at: now + 300,
        }
    }

    #[tokio::test]
    async fn one_decision_wins_and_expired_requests_are_not_listed_or_approved() {
        let (_dir, db) = temp_db().await;
        wallet(&db, "w1").await;
        let owner = db.get_wallet("w1").await.unwrap().unwrap().address;
        assert_eq!(
            db.wallet_by_owner_address(owner).await.unwrap().as_deref(),
            Some("w1")
        );
        assert_eq!(
            db.wallet_by_owner_address(Address::repeat_byte(9))
                .await
                .unwrap(),
            None
        );

        let a = db
            .insert_permission_request(&new("w1", 1000))
            .await
            .unwrap();
        let b = db
            .insert_permission_request(&new("w1", 1000))
            .await
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let listed = db
            .permission_requests(Some("w1"), 1100, false)
            .await
            .unwrap();
        assert_eq!(listed.len(), 2);
        assert!(db
            .permission_requests(Some("w2"), 1100, false)
            .await
            .unwrap()
            .is_empty());
        // Past its expiry a pending request is no longer listed, nor approvable.
        assert!(db
            .permission_requests(None, 1300, false)
            .await
            .unwrap()
            .is_empty());
        let account = Address::repeat_byte(7);
        assert!(!db
            .approve_permission_request(&a, "w1:0", account, "owner", "{}", 1300)
            .await
            .unwrap());

        assert!(db
            .approve_permission_request(&a, "w1:0", account, "requester", "{\"x\":1}", 1100)
            .await
            .unwrap());
        // Decided: neither a second approval nor a rejection changes it.
        assert!(!db.reject_permission_request(&a, 1101).await.unwrap());
        assert!(!db
            .approve_permission_request(&a, "w1:1", account, "owner", "{}", 1101)
            .await
            .unwrap());
        let got = db.get_permission_request(&a).await.unwrap().unwrap();
        assert_eq!(got.status, PermissionRequestStatus::Approved);
        assert_eq!(got.key_id.as_deref(), Some("w1:0"));
        assert_eq!(got.account, Some(account));
        assert_eq!(got.credential_to.as_deref(), Some("requester"));
        assert_eq!(got.decided_at, Some(1100));

        assert!(db.reject_permission_request(&b, 1102).await.unwrap());
        assert!(!db.expire_permission_request(&b, 1103).await.unwrap());
        assert_eq!(
            db.get_permission_request(&b).await.unwrap().unwrap().status,
            PermissionRequestStatus::Rejected
        );
        let all = db.permission_requests(None, 1100, true).await.unwrap();
        assert_eq!(all.len(), 2);
        assert!(db.get_permission_request("nope").await.unwrap().is_none());
    }
}
