//! Shared application state.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use kms_db::Db;
use webauthn_rs::Webauthn;

use crate::audit::Audit;
use crate::config::{ApiKeyMode, Config};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::ratelimit::Limits;
use crate::reconcile::Reconcile;

/// A cache of active agent credentials: keyId → hex SHA-256 of the current
/// JWT and its expiry. Filled on a DB read, invalidated by refresh and
/// revoke (which also update the DB first), so a hit never accepts a
/// superseded or revoked credential that this process has seen change.
#[derive(Default)]
pub struct CredentialCache {
    map: RwLock<HashMap<String, CachedCredential>>,
}

/// One cached credential.
#[derive(Clone)]
pub struct CachedCredential {
    /// Hex SHA-256 of the JWT.
    pub hash: String,
    /// Expiry (unix seconds).
    pub expires_at: i64,
    /// Agent address.
    pub agent_address: alloy::primitives::Address,
    /// The current credential's generation.
    pub generation: u32,
    /// When it was read from the database.
    pub cached_at: Instant,
}

/// How long a cached credential is trusted before the database is read
/// again (bounds staleness against another process, e.g. `kms-admin`,
/// revoking in the database; the TA's generation check holds regardless).
pub const CREDENTIAL_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

impl CredentialCache {
    /// The cached entry for `key_id`.
    pub fn get(&self, key_id: &str) -> Option<CachedCredential> {
        let m = self.map.read().ok()?;
        let c = m.get(key_id)?;
        (c.cached_at.elapsed() < CREDENTIAL_CACHE_TTL).then(|| c.clone())
    }
    /// Cache an active credential.
    pub fn put(&self, key_id: &str, c: CachedCredential) {
        if let Ok(mut m) = self.map.write() {
            if m.len() >= 100_000 {
                m.clear();
            }
            m.insert(key_id.to_owned(), c);
        }
    }
    /// Forget `key_id` (refresh, revoke).
    pub fn invalidate(&self, key_id: &str) {
        if let Ok(mut m) = self.map.write() {
            m.remove(key_id);
        }
    }
    /// Forget every agent of a wallet (wallet deleted).
    pub fn invalidate_wallet(&self, wallet_id: &str) {
        if let Ok(mut m) = self.map.write() {
            let prefix = format!("{wallet_id}:");
            m.retain(|k, _| !k.starts_with(&prefix));
        }
    }
}

/// Everything a handler needs.
pub struct AppState {
    /// Configuration in force.
    pub config: Config,
    /// Database.
    pub db: Db,
    /// The one way to the TA.
    pub tee: crate::tee::Tee,
    /// WebAuthn relying party.
    pub webauthn: Webauthn,
    /// Allowed origins (for logs and docs).
    pub origins: Vec<String>,
    /// API-key mode.
    pub api_key_mode: ApiKeyMode,
    /// Rate limits.
    pub limits: Limits,
    /// Audit writer.
    pub audit: Audit,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Active-credential cache.
    pub credentials: CredentialCache,
    /// The chain routes' state, when the chain settings are given.
    pub chain: Option<crate::chain::ChainState>,
    /// The TA's operator key (created at start-up, or on first use if the TEE was not reachable
    /// then).
    pub operator: tokio::sync::OnceCell<crate::tee::TaOperator>,
    /// Database/TA reconciliation state (see [`crate::reconcile`]).
    pub reconcile: Arc<Reconcile>,
    /// `/health`'s cached probe of the database and the TA.
    pub health: crate::routes::health::HealthCache,
    /// This process's random id among the companions sharing the database: the holder of its
    /// leases ([`crate::replicas`]).
    pub replica_id: String,
}

impl AppState {
    /// The chain state, or 503 `chain_not_configured`.
    pub fn chain(&self) -> Result<&crate::chain::ChainState, ApiError> {
        self.chain.as_ref().ok_or_else(crate::chain::not_configured)
    }

    /// The TA's operator key, created in the TA if it does not exist yet.
    pub async fn operator(&self) -> Result<&crate::tee::TaOperator, ApiError> {
        self.operator
            .get_or_try_init(|| async {
                crate::tee::TaOperator::open(self.tee.clone(), true)
                    .await
                    .map_err(ApiError::from)
            })
            .await
    }
}

/// The shared state handle.
pub type SharedState = Arc<AppState>;
