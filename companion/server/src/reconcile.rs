//! Reconciling the database with the TA after a crash.
//!
//! Agent operations touch two stores that cannot commit together: the
//! database and the TA's sealed storage. A crash (of the companion or of the
//! TA) between the two writes leaves them apart:
//!
//! | crash between | database | TA | reconciled to |
//! |---|---|---|---|
//! | refresh: TA `JwtSignPayload` and the DB update | old generation | new generation | DB takes the TA's generation (the old JWT is already dead in the TA; the owner refreshes again) |
//! | revoke: DB revoke and TA `RevokeAgentKey` | revoked | live | revoked in the TA too |
//! | create: TA `CreateAgentKey` and the DB activation | pending / failed | live, credential never delivered | revoked in the TA, row failed |
//! | an agent revoked in the TA only (operator tool crash) | active | revoked | revoked in the DB too |
//!
//! [`reconcile_agents`] runs at start-up (before serving), and again in the
//! background after a TEE call failed as unavailable (the TA may have
//! executed it), once the TA answers again. A live run leaves young
//! `pending` rows alone (a create may be in flight), and so does the start-up
//! run on PostgreSQL, where another companion sharing the database may be
//! creating them; a run after the grace looks at them again.
//!
//! # A rolled-back TA
//!
//! No crash leaves the TA *behind* the database: the TA is written first
//! when power is added (create, refresh), the database first when it is
//! removed (revoke). So when the TA
//!
//! * refuses its sealed state as rolled back (`StateRolledBack`: an older
//!   copy of the sealed storage was put back, caught by its monotonic
//!   counter), or
//! * knows an agent the database holds active at an older generation, or not
//!   at all (both the sealed state and the TA's counter were put back),
//!
//! the companion does **not** adopt the older state (that would bring back
//! superseded credentials). It logs an error and stops serving every route
//! that reaches the TA: they answer 503 `ta_rolled_back` (see
//! [`refuse_when_rolled_back`]; `/health` says why), while the
//! database-only routes (`/health`, `/metrics`, listings, the page) keep
//! answering. The background task re-checks every [`ROLLBACK_RECHECK`]; the
//! way out is the operator's `kms-admin accept-restore --yes`, which makes
//! the TA accept its state and brings the database in line with it, after
//! which the next check finds them in agreement and the routes are served
//! again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use kms_db::AgentStatus;
use kms_proto::{GetAgentState, JwtSecretStatus, RevokeAgentKey, TaError, WalletId};
use kms_tee_client::TeeError;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// A pending row younger than this is left alone by a live run (a create
/// may be in flight: ceremony, TA call and activation).
pub const PENDING_GRACE_SECS: i64 = 600;

/// How often a reconciliation runs again while the TA is found rolled back
/// (so the routes are served again soon after `kms-admin accept-restore`).
pub const ROLLBACK_RECHECK: Duration = Duration::from_secs(2);

/// Routes served while the TA is rolled back: they read only the database
/// (or nothing). Every other route, including any added later, answers 503
/// `ta_rolled_back` ([`ErrorCode::TaRolledBack`]).
pub const SERVED_WHILE_ROLLED_BACK: &[&str] = &[
    "/health",
    "/metrics",
    "/openapi.json",
    "/ui",
    "/ui/",
    "/ui/{file}",
    "/ListKeys",
    "/DescribeKey",
    "/kms/list-agent-keys",
    "/kms/list-agent-intents",
    "/kms/operator",
    "/agent/intents/{userOpHash}",
];

/// Shared flags: a TEE call failed as unavailable, so the two stores may
/// disagree until the next reconciliation; the TA was found rolled back.
#[derive(Default)]
pub struct Reconcile {
    dirty: AtomicBool,
    notify: Notify,
    runs: AtomicU64,
    rolled_back: Mutex<Option<String>>,
}

impl Reconcile {
    /// Note that a TEE call may have been executed without its answer
    /// reaching us.
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Whether a reconciliation is due.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::SeqCst)
    }

    /// Completed reconciliations since start.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }

    /// Why the TA-dependent routes are refused, while the TA is found rolled
    /// back (see the module docs).
    pub fn rolled_back(&self) -> Option<String> {
        self.rolled_back.lock().ok().and_then(|g| g.clone())
    }

    /// The TA was found rolled back: refuse the TA-dependent routes until a
    /// reconciliation finds the TA and the database in agreement.
    pub fn set_rolled_back(&self, reason: String) {
        let first = match self.rolled_back.lock() {
            Ok(mut g) => g.replace(reason.clone()).is_none(),
            Err(_) => false,
        };
        if first {
            tracing::error!(
                %reason,
                "TA STATE ROLLED BACK: refusing every route that reaches the TA (503 \
                 ta_rolled_back) instead of adopting the older state; an operator must accept \
                 the restore with `kms-admin accept-restore --yes`"
            );
        }
        // Make the background task re-check.
        self.notify.notify_one();
    }

    fn clear_rolled_back(&self) {
        let was = self.rolled_back.lock().ok().and_then(|mut g| g.take());
        if let Some(reason) = was {
            tracing::warn!(%reason, "the TA and the database agree again: serving the TA routes again");
        }
    }
}

/// The 503 answer of a TA-dependent request while the TA is rolled back.
pub fn rolled_back_error(reason: &str) -> ApiError {
    ApiError::detailed(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::TaRolledBack,
        "the TA's state is older than the companion's database (rolled back); the companion \
         refuses to use it until an operator accepts the restore (kms-admin accept-restore)",
        serde_json::json!({ "reason": reason }),
    )
}

/// Middleware: while the TA is rolled back, every route not in
/// [`SERVED_WHILE_ROLLED_BACK`] answers 503 `ta_rolled_back` ([`ErrorCode::TaRolledBack`]) before doing
/// anything.
pub async fn refuse_when_rolled_back(
    State(s): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(reason) = s.reconcile.rolled_back() {
        // Unmatched paths fall through to their 404.
        let served = req
            .extensions()
            .get::<MatchedPath>()
            .is_none_or(|m| SERVED_WHILE_ROLLED_BACK.contains(&m.as_str()));
        if !served {
            return rolled_back_error(&reason).into_response();
        }
    }
    next.run(req).await
}

/// What one reconciliation changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Rows examined.
    pub examined: usize,
    /// Active rows whose generation was taken from the TA.
    pub generation_synced: Vec<String>,
    /// DB-revoked agents revoked in the TA.
    pub revoked_in_ta: Vec<String>,
    /// TA-revoked agents revoked in the DB.
    pub revoked_in_db: Vec<String>,
    /// Pending/failed rows whose TA agent (never delivered) was revoked, or
    /// pending rows marked failed.
    pub abandoned: Vec<String>,
    /// Active rows the TA is behind on (an older generation, or no such
    /// agent): left as they are, and the TA routes refused (module docs).
    pub ta_behind: Vec<String>,
    /// Pending rows left alone because they are young (a create may be in flight, on this
    /// companion or, on a shared PostgreSQL database, another one): a run after
    /// [`PENDING_GRACE_SECS`] looks at them again.
    pub deferred: Vec<String>,
}

impl Report {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        !(self.generation_synced.is_empty()
            && self.revoked_in_ta.is_empty()
            && self.revoked_in_db.is_empty()
            && self.abandoned.is_empty())
    }
}

async fn ta_state(
    s: &AppState,
    wallet: WalletId,
    index: u32,
) -> Result<Option<kms_proto::AgentState>, ApiError> {
    match s
        .tee
        .reconcile_call(&GetAgentState {
            wallet_id: wallet,
            agent_index: index,
        })
        .await
    {
        Ok(st) => Ok(Some(st)),
        Err(TeeError::Ta(TaError::AgentNotFound)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Bring the database and the TA into agreement (see the module docs).
/// `startup`: no request of this companion is in flight, so every pending row is stale, unless
/// the database is PostgreSQL, which other companions may share (then young pending rows are
/// deferred as in a live run).
pub async fn reconcile_agents(s: &AppState, startup: bool) -> Result<Report, ApiError> {
    let mut report = Report::default();
    let now = kms_db::now_secs();
    // Whether the TA accepts its own state, whatever rows the database holds (a read that
    // touches state: the TA answers `StateRolledBack` if it refuses its state).
    s.tee
        .reconcile_call(&JwtSecretStatus {})
        .await
        .map_err(ApiError::from)?;
    // Wallets another TA holds (several TEE devices over one database) are that TA's companions'
    // to reconcile: this TA does not know them.
    let elsewhere: std::collections::HashSet<String> = match crate::replicas::this_ta(s) {
        Some(ta) => s.db.wallets_of_other_tas(&ta).await?.into_iter().collect(),
        None => Default::default(),
    };
    for row in s.db.list_agents(None).await? {
        if elsewhere.contains(&row.wallet_id) {
            continue;
        }
        report.examined += 1;
        let Ok(wallet) = row.wallet_id.parse::<WalletId>() else {
            continue;
        };
        let index = row.agent_index;
        let key_id = kms_proto::jwt::key_id(&wallet, index);
        match row.status {
            AgentStatus::Active => {
                let Some(st) = ta_state(s, wallet, index).await? else {
                    tracing::error!(%key_id, "active in the database but unknown to the TA: TA state rolled back");
                    report.ta_behind.push(key_id);
                    continue;
                };
                if st.revoked {
                    s.db.revoke_agent(&row.wallet_id, index, Some(st.generation), now)
                        .await?;
                    s.credentials.invalidate(&key_id);
                    report.revoked_in_db.push(key_id);
                } else if row.generation != Some(st.generation) {
                    if row.generation.is_some_and(|g| g > st.generation) {
                        // Adopting it would make a superseded credential current again.
                        tracing::error!(%key_id, db = ?row.generation, ta = st.generation,
                            "the TA's generation is behind the database: TA state rolled back");
                        report.ta_behind.push(key_id);
                        continue;
                    }
                    s.db.set_agent_generation(&row.wallet_id, index, st.generation, now)
                        .await?;
                    s.credentials.invalidate(&key_id);
                    report.generation_synced.push(key_id);
                }
            }
            AgentStatus::Revoked => {
                if let Some(st) = ta_state(s, wallet, index).await? {
                    if !st.revoked {
                        let st = s
                            .tee
                            .reconcile_call(&RevokeAgentKey {
                                wallet_id: wallet,
                                agent_index: index,
                            })
                            .await
                            .map_err(ApiError::from)?;
                        s.db.revoke_agent(&row.wallet_id, index, Some(st.generation), now)
                            .await?;
                        report.revoked_in_ta.push(key_id);
                    } else if row.generation != Some(st.generation) {
                        s.db.revoke_agent(&row.wallet_id, index, Some(st.generation), now)
                            .await?;
                    }
                }
            }
            AgentStatus::Pending | AgentStatus::Failed => {
                // On PostgreSQL another companion sharing the database may be creating it right
                // now, also while this one starts: a young row waits for a later run.
                let shared = s.db.backend() == kms_db::Backend::Postgres;
                if row.status == AgentStatus::Pending
                    && (!startup || shared)
                    && now - row.created_at < PENDING_GRACE_SECS
                {
                    report.deferred.push(key_id);
                    continue;
                }
                let mut touched = false;
                if let Some(st) = ta_state(s, wallet, index).await? {
                    if !st.revoked {
                        s.tee
                            .reconcile_call(&RevokeAgentKey {
                                wallet_id: wallet,
                                agent_index: index,
                            })
                            .await
                            .map_err(ApiError::from)?;
                        touched = true;
                    }
                }
                if row.status == AgentStatus::Pending {
                    s.db.fail_agent(&row.wallet_id, index, "interrupted (reconciled)", now)
                        .await?;
                    touched = true;
                }
                if touched {
                    report.abandoned.push(key_id);
                }
            }
        }
    }
    if report.changed() {
        tracing::warn!(?report, "database and TA reconciled after an interruption");
    }
    if report.ta_behind.is_empty() {
        s.reconcile.clear_rolled_back();
    } else {
        s.reconcile.set_rolled_back(format!(
            "the TA is behind the database for agent key(s) {}",
            report.ta_behind.join(", ")
        ));
    }
    Ok(report)
}

/// Reconcile now; on failure (TA unreachable) leave the flag set so the
/// background task tries again.
pub async fn run_once(s: &AppState, startup: bool) -> Result<Report, ApiError> {
    // Clear first: a failure seen during the run sets it again.
    s.reconcile.dirty.store(false, Ordering::SeqCst);
    match reconcile_agents(s, startup).await {
        Ok(r) => {
            s.reconcile.runs.fetch_add(1, Ordering::SeqCst);
            if !r.deferred.is_empty() {
                // Look at them again once they are past the grace.
                let flags = s.reconcile.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(PENDING_GRACE_SECS as u64 + 1)).await;
                    flags.mark_dirty();
                });
            }
            Ok(r)
        }
        Err(e) => {
            if e.error_code() == ErrorCode::TaRolledBack {
                // The TA refused its own state (`StateRolledBack`).
                s.reconcile.set_rolled_back(e.to_string());
            } else {
                s.reconcile.dirty.store(true, Ordering::SeqCst);
            }
            Err(e)
        }
    }
}

/// The background task: after an unavailable TEE call, reconcile once the
/// TA answers again (retrying with a capped backoff).
pub fn spawn(s: Arc<AppState>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            if s.reconcile.rolled_back().is_some() {
                // Re-check now and then: the operator may have accepted the restore.
                tokio::select! {
                    _ = tokio::time::sleep(ROLLBACK_RECHECK) => {}
                    _ = stop.changed() => return,
                }
                if let Err(e) = run_once(&s, false).await {
                    tracing::debug!(error = %e, "TA still refused after a rollback");
                }
                continue;
            }
            if !s.reconcile.is_dirty() {
                tokio::select! {
                    _ = s.reconcile.notify.notified() => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            match run_once(&s, false).await {
                Ok(_) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::debug!(error = %e, "reconciliation deferred: TA not reachable yet");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    })
}
