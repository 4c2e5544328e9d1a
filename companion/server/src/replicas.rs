//! Several companions on one database (docs/DEPLOY.md): what must be done by one of them at a
//! time, through leases in the database ([`kms_db::Db::try_lease`]).
//!
//! - **JWT secret rotation** ([`rotation_lease_name`], one lease per TA): each replica's rotation
//!   task ticks, but only the one holding the lease rotates, purges and rewrites
//!   `jwt_secret_meta`; it renews the lease at each tick ([`rotation_lease_secs`]) and gives it up
//!   at shutdown, so another replica takes over at its next tick (or once the lease expires, when
//!   the holder died).
//! - **An agent's nonce lane** ([`LaneLease`]): each companion serialises the builds of one agent's
//!   intents in its own memory (`kms_chain::nonce::NonceTracker`); on PostgreSQL (the backend
//!   several companions share) the pipeline also holds the lane's lease from its idempotency check
//!   to the submission, so two replicas never take the same nonce nor both record one
//!   `Idempotency-Key`. On SQLite (one companion) it is not taken.
//!
//! Everything else the replicas share needs no lease: agent indexes and the audit chain's head are
//! read and written under the database's write lock (`Db::begin_write`), ceremonies are consumed by
//! one guarded `UPDATE`, and the TA serialises its own state.
//!
//! Several TAs over one database: each wallet records the TA holding it ([`this_ta`]: the TA's
//! operator address), and a companion refuses a wallet of another TA with 421
//! `wallet_on_other_ta` naming it ([`WrongTa`]) before anything reaches its own TA; its
//! reconciliation leaves other TAs' wallets alone.

use std::time::Duration;

use alloy::primitives::Address;
use kms_chain::nonce::NonceKey;
use kms_db::{Backend, Db};

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// The lease of the JWT secret rotation task (one per TA: [`rotation_lease_name`]).
pub const JWT_ROTATION_LEASE: &str = "jwt-rotation";

/// The rotation lease of the companions of TA `ta` (its operator address, lowercase): each TA's
/// secrets are rotated by one of its companions. [`JWT_ROTATION_LEASE`] alone while this
/// companion's TA was not reached yet.
pub fn rotation_lease_name(ta: Option<&str>) -> String {
    match ta {
        Some(ta) => format!("{JWT_ROTATION_LEASE}:{ta}"),
        None => JWT_ROTATION_LEASE.to_owned(),
    }
}

/// How long an agent's intent waits for its lane held by another replica before 409
/// `lane_busy`.
pub const LANE_WAIT: Duration = Duration::from_secs(15);

/// How often a busy lane is tried again.
const LANE_POLL: Duration = Duration::from_millis(20);

/// A random id for this companion process, the holder of its leases.
pub fn new_replica_id() -> String {
    webauthn_rs::prelude::Uuid::new_v4().simple().to_string()
}

/// How long the rotation lease lasts from each tick: two tick periods and 10 s, so that the
/// holder's next tick renews it before it expires.
pub fn rotation_lease_secs(tick_secs: u64) -> i64 {
    i64::try_from(tick_secs.saturating_mul(2).saturating_add(10)).unwrap_or(i64::MAX)
}

/// Whether this replica runs the rotation tick now: takes or renews its TA's rotation lease
/// ([`rotation_lease_name`]).
pub async fn leads_rotation(s: &AppState) -> Result<bool, ApiError> {
    Ok(s.db
        .try_lease(
            &rotation_lease_name(this_ta(s).as_deref()),
            &s.replica_id,
            rotation_lease_secs(s.config.jwt_rotation_tick_secs),
            kms_db::now_secs(),
        )
        .await?)
}

/// Gives the rotation lease up (at shutdown), if this replica holds it.
pub async fn release_rotation(s: &AppState) {
    let name = rotation_lease_name(this_ta(s).as_deref());
    if let Err(e) = s.db.release_lease(&name, &s.replica_id).await {
        tracing::warn!(error = %e, "could not give up the JWT rotation lease; another replica takes it over once it expires");
    }
}

/// Exclusive use of an agent's nonce lane (one account, one nonce key, one chain) across the
/// companions sharing a PostgreSQL database, until dropped (the row is deleted then, in the
/// background). If this process dies holding it, it expires after `--request-timeout-secs`
/// (the longest an intent's build and submission runs).
pub struct LaneLease {
    db: Db,
    name: String,
    holder: String,
}

impl LaneLease {
    /// The lease's name for a lane.
    pub fn name(chain_id: u64, account: Address, key: NonceKey) -> String {
        format!("lane:{chain_id}:{account:#x}:{:#x}", key.0)
    }

    /// Takes the lane's lease, waiting up to [`LANE_WAIT`] while another replica holds it
    /// (then 409 `lane_busy`). `None` on SQLite, where one companion serialises its lanes in
    /// memory.
    pub async fn take(
        s: &AppState,
        chain_id: u64,
        account: Address,
        key: NonceKey,
    ) -> Result<Option<LaneLease>, ApiError> {
        if s.db.backend() != Backend::Postgres {
            return Ok(None);
        }
        let name = Self::name(chain_id, account, key);
        // One holder per request: a release of this one running late never removes the next.
        let holder = format!("{}/{}", s.replica_id, new_replica_id());
        let ttl = i64::try_from(s.config.request_timeout_secs).unwrap_or(i64::MAX);
        let deadline = tokio::time::Instant::now() + LANE_WAIT;
        loop {
            if s.db
                .try_lease(&name, &holder, ttl, kms_db::now_secs())
                .await?
            {
                return Ok(Some(LaneLease {
                    db: s.db.clone(),
                    name,
                    holder,
                }));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::Conflict {
                    code: ErrorCode::LaneBusy,
                    message: format!(
                        "another companion sharing this database is building an intent of this \
                         agent on account {account:#x} (its nonce lane stayed taken for {} s); \
                         retry",
                        LANE_WAIT.as_secs()
                    ),
                });
            }
            tokio::time::sleep(LANE_POLL).await;
        }
    }
}

impl Drop for LaneLease {
    fn drop(&mut self) {
        let (db, name, holder) = (
            self.db.clone(),
            std::mem::take(&mut self.name),
            std::mem::take(&mut self.holder),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = db.release_lease(&name, &holder).await {
                    tracing::warn!(lease = %name, error = %e, "could not release an intent lane's lease; it expires by itself");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_names_tell_lanes_apart() {
        let a = Address::repeat_byte(0xaa);
        let k = NonceKey::for_agent(Address::repeat_byte(0x11));
        let n = LaneLease::name(1, a, k);
        assert_eq!(
            n,
            format!("lane:1:{a:#x}:0x{}", "11".repeat(20)),
            "chain, account and key in the name"
        );
        assert_ne!(n, LaneLease::name(2, a, k));
        assert_ne!(n, LaneLease::name(1, Address::repeat_byte(0xab), k));
        assert_ne!(
            n,
            LaneLease::name(
                1,
                a,
                NonceKey::for_agent_period(Address::repeat_byte(0x11), 1)
            )
        );
    }

    #[test]
    fn the_rotation_lease_outlasts_a_tick() {
        assert_eq!(rotation_lease_secs(1), 12);
        assert!(rotation_lease_secs(86_400) > 86_400);
        assert_eq!(rotation_lease_secs(u64::MAX), i64::MAX);
    }
}

/// The identity of this companion's TA: its operator key's address (`0x` lowercase hex), known
/// once the TA has answered since the start (`None` before).
pub fn this_ta(s: &AppState) -> Option<String> {
    use kms_chain::operator::OperatorSigner;
    s.operator.get().map(|op| format!("{:#x}", op.address()))
}

/// [`this_ta`], asking the TA for its operator key if it was not reached yet (`None` if it
/// does not answer).
pub async fn this_ta_now(s: &AppState) -> Option<String> {
    let _ = s.operator().await;
    this_ta(s)
}

/// At start-up, once the TA answered: the wallets registered before wallets named their TA are
/// recorded on this companion's TA (a database had one TA until then).
pub async fn adopt_wallets(s: &AppState) {
    let Some(ta) = this_ta(s) else { return };
    match s.db.adopt_wallets_without_ta(&ta).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(wallets = n, ta = %ta, "wallets without a recorded TA recorded on this companion's TA")
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not record this companion's TA on older wallets")
        }
    }
}

/// A request for a wallet that another TA holds (several TEE devices over one database,
/// docs/DEPLOY.md): answered 421 `wallet_on_other_ta` naming that TA, before anything reaches
/// this companion's TA. The client (or the load balancer) sends it to a companion attached to
/// that TA; nothing is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongTa {
    /// The wallet.
    pub wallet: String,
    /// The TA holding it (its operator address).
    pub wallet_ta: String,
    /// This companion's TA.
    pub this_ta: String,
    /// What named the wallet's TA.
    pub named_by: NamedBy,
}

/// Where a companion learnt that a request is for another TA ([`WrongTa`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedBy {
    /// The wallet's row in the database (`wallets.ta_id`).
    Wallet,
    /// The presented agent credential's `iss` claim (the TA that minted it, which holds its
    /// wallet).
    Credential,
}

impl NamedBy {
    /// The spelling in an answer's `details.namedBy`.
    pub fn as_str(self) -> &'static str {
        match self {
            NamedBy::Wallet => "wallet",
            NamedBy::Credential => "credential",
        }
    }
}

impl std::fmt::Display for WrongTa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let WrongTa {
            wallet,
            wallet_ta,
            this_ta,
            named_by,
        } = self;
        match named_by {
            NamedBy::Wallet => write!(
                f,
                "wallet {wallet} is held by TA {wallet_ta}, not by this companion's TA {this_ta}"
            )?,
            NamedBy::Credential => write!(
                f,
                "this agent credential (wallet {wallet}) was minted by TA {wallet_ta}, not by \
                 this companion's TA {this_ta}"
            )?,
        }
        write!(
            f,
            ": send its requests to a companion attached to TA {wallet_ta}"
        )
    }
}

impl std::error::Error for WrongTa {}

impl From<WrongTa> for ApiError {
    fn from(mut w: WrongTa) -> Self {
        // Addresses are answered EIP-55 checksummed (the database keeps them lowercase).
        w.wallet_ta = crate::extract::checksum_str(&w.wallet_ta);
        w.this_ta = crate::extract::checksum_str(&w.this_ta);
        ApiError::detailed(
            axum::http::StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::WalletOnOtherTa,
            w.to_string(),
            serde_json::json!({
                "walletTa": w.wallet_ta,
                "thisTa": w.this_ta,
                "namedBy": w.named_by.as_str(),
            }),
        )
    }
}

/// Whether an agent credential for wallet `wallet_id` names another TA than this companion's in
/// its `iss` claim (`iss`: a well-formed claim, `0x` + 40 lowercase hex; the caller checks the
/// form). Reads no database and sends nothing of the credential to the TA (a TA not reached
/// since the start is asked for its identity only); `None` when this companion's TA does not
/// answer (then the request needs it and fails on it).
pub async fn credential_elsewhere(s: &AppState, wallet_id: &str, iss: &str) -> Option<WrongTa> {
    let this_ta = this_ta_now(s).await?;
    (iss != this_ta).then(|| WrongTa {
        wallet: wallet_id.to_owned(),
        wallet_ta: iss.to_owned(),
        this_ta,
        named_by: NamedBy::Credential,
    })
}

/// Whether wallet `wallet_id` is held by another TA than this companion's ([`WrongTa`]). No when
/// the wallet is unknown (the caller says so), has no TA recorded (older than the record: this
/// companion's own since start-up, [`adopt_wallets`]), or this companion's TA does not answer
/// (then the request needs it and fails on it). A TA not reached since the start is asked for
/// its identity first, so another TA's credential never reaches it.
pub async fn wallet_elsewhere(
    s: &AppState,
    wallet_id: &str,
) -> Result<Option<WrongTa>, kms_db::DbError> {
    let Some(this_ta) = this_ta_now(s).await else {
        return Ok(None);
    };
    Ok(match s.db.wallet_ta(wallet_id).await? {
        Some(Some(wallet_ta)) if wallet_ta != this_ta => Some(WrongTa {
            wallet: wallet_id.to_owned(),
            wallet_ta,
            this_ta,
            named_by: NamedBy::Wallet,
        }),
        _ => None,
    })
}
