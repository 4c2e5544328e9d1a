//! `/health`: the database and the TA probed (cached), the chain settings, the API-key mode.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::ApiKeyMode;
use crate::state::AppState;

/// `/health` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    /// `ok` when the database and the TEE answer, else `degraded`.
    pub status: String,
    /// The database answers.
    pub database: bool,
    /// The TEE answers.
    pub tee: bool,
    /// Companion version.
    pub version: String,
    /// TA version, when reachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ta_version: Option<String>,
    /// `required` or `open`.
    pub api_key_mode: String,
    /// The TA's operator key (fund it; it is the revoker of the sessions the companion
    /// registers), when the TEE answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_address: Option<String>,
    /// The chain the intent API uses, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainInfo>,
    /// Present while the TA's state is found rolled back (older than the database, or refused
    /// by the TA itself): why the routes that reach the TA answer 503 `ta_rolled_back` until an
    /// operator runs `kms-admin accept-restore --yes`. The status is then `degraded` (503).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ta_rolled_back: Option<String>,
}

/// The chain settings in force.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainInfo {
    /// Chain id.
    pub chain_id: u64,
    /// EntryPoint address.
    pub entry_point: String,
    /// EntryPoint version (`v0.7`, `v0.8`).
    pub entry_point_version: String,
    /// AgentAccountFactory.
    pub account_factory: String,
    /// SessionKeyValidator.
    pub session_key_validator: String,
}

fn chain_info(s: &AppState) -> Option<ChainInfo> {
    let c = &s.chain.as_ref()?.client;
    Some(ChainInfo {
        chain_id: c.chain_id(),
        entry_point: c.entry_point().address.to_string(),
        entry_point_version: c.entry_point().version.to_string(),
        account_factory: c.factory().to_string(),
        session_key_validator: c.validator().to_string(),
    })
}

/// How long a probe of the database and the TA answers `/health` (the probe's start counts):
/// a flood of `/health` requests makes at most one TEE call (and one database ping) per
/// interval, and the answer is at most this old.
pub const HEALTH_CACHE_TTL: Duration = Duration::from_secs(2);

/// How long a `/health` request waits for the probe (the TA answering, or the probe before it);
/// past it the answer is 503 with `tee: false`. The probe itself goes on (the TEE client has its
/// own timeout), and no other starts meanwhile.
pub const HEALTH_PROBE_WAIT: Duration = Duration::from_secs(5);

/// What one probe found.
#[derive(Clone, Debug, Default)]
struct Probe {
    database: bool,
    /// The TA's version, when it answered.
    ta_version: Option<String>,
    operator_address: Option<String>,
}

/// The last probe and when it started. Single flight: the probe runs with the lock held (in its
/// own task, so a request that goes away does not cancel it); requests that arrive meanwhile
/// wait for it and use its result.
pub struct HealthCache {
    ttl: Duration,
    last: Arc<tokio::sync::Mutex<Option<(Instant, Probe)>>>,
    /// The last probe's database answer (readable while a probe holds the lock).
    database: AtomicBool,
}

impl Default for HealthCache {
    fn default() -> Self {
        Self::with_ttl(HEALTH_CACHE_TTL)
    }
}

impl HealthCache {
    /// A cache whose probes answer for `ttl`.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            last: Arc::default(),
            database: AtomicBool::new(false),
        }
    }

    /// The current probe: the cached one while fresh, else a new one.
    async fn current(s: &Arc<AppState>) -> Probe {
        let last = s.health.last.clone();
        let ttl = s.health.ttl;
        let state = s.clone();
        let get = async move {
            let mut guard = last.lock_owned().await;
            if let Some((at, p)) = guard.as_ref() {
                if at.elapsed() < ttl {
                    return p.clone();
                }
            }
            tokio::spawn(async move {
                let started = Instant::now();
                let p = probe(&state).await;
                state.health.database.store(p.database, Ordering::Relaxed);
                *guard = Some((started, p.clone()));
                p
            })
            .await
            .unwrap_or_default()
        };
        match tokio::time::timeout(HEALTH_PROBE_WAIT, get).await {
            Ok(p) => p,
            // The probe is stuck (on the TA, most likely): the database's last known state,
            // the TA as not answering.
            Err(_) => Probe {
                database: s.health.database.load(Ordering::Relaxed),
                ..Probe::default()
            },
        }
    }
}

async fn probe(s: &AppState) -> Probe {
    let database = s.db.ping().await.is_ok();
    let ta = s.tee.call(&kms_proto::TaInfo {}).await.ok();
    let operator_address = match ta.is_some() {
        true => s
            .operator()
            .await
            .ok()
            .map(|o| kms_chain::operator::OperatorSigner::address(o).to_string()),
        false => None,
    };
    Probe {
        database,
        ta_version: ta.map(|t| t.version),
        operator_address,
    }
}

/// Liveness: database and TEE reachable (200), else 503. Answered from a probe at most
/// [`HEALTH_CACHE_TTL`] old (one TEE call per interval however many requests come).
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = HealthResponse), (status = 503, body = HealthResponse)))]
pub async fn health(State(s): State<Arc<AppState>>) -> Response {
    let Probe {
        database,
        ta_version,
        operator_address,
    } = HealthCache::current(&s).await;
    let tee = ta_version.is_some();
    let ta_rolled_back = s.reconcile.rolled_back();
    let ok = database && tee && ta_rolled_back.is_none();
    let body = HealthResponse {
        status: if ok { "ok" } else { "degraded" }.into(),
        database,
        tee,
        version: env!("CARGO_PKG_VERSION").into(),
        ta_version,
        api_key_mode: match s.api_key_mode {
            ApiKeyMode::Required => "required",
            ApiKeyMode::Open => "open",
        }
        .into(),
        operator_address,
        chain: chain_info(&s),
        ta_rolled_back,
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
