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
//! `pending` rows alone (a create may be in flight).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kms_db::AgentStatus;
use kms_proto::{GetAgentState, RevokeAgentKey, TaError, WalletId};
use kms_tee_client::TeeError;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::state::AppState;

/// A pending row younger than this is left alone by a live run (a create
/// may be in flight: ceremony, TA call and activation).
pub const PENDING_GRACE_SECS: i64 = 600;

/// Shared flag: a TEE call failed as unavailable, so the two stores may
/// disagree until the next reconciliation.
#[derive(Default)]
pub struct Reconcile {
    dirty: AtomicBool,
    notify: Notify,
    runs: AtomicU64,
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
        .client()
        .call_async(&GetAgentState {
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
/// `startup`: no request is in flight, so every pending row is stale.
pub async fn reconcile_agents(s: &AppState, startup: bool) -> Result<Report, ApiError> {
    let mut report = Report::default();
    let now = kms_db::now_secs();
    for row in s.db.list_agents(None).await? {
        report.examined += 1;
        let Ok(wallet) = row.wallet_id.parse::<WalletId>() else {
            continue;
        };
        let index = row.agent_index;
        let key_id = kms_proto::jwt::key_id(&wallet, index);
        match row.status {
            AgentStatus::Active => {
                let Some(st) = ta_state(s, wallet, index).await? else {
                    tracing::error!(%key_id, "active in the database but unknown to the TA (TA state rolled back?)");
                    continue;
                };
                if st.revoked {
                    s.db.revoke_agent(&row.wallet_id, index, Some(st.generation), now)
                        .await?;
                    s.credentials.invalidate(&key_id);
                    report.revoked_in_db.push(key_id);
                } else if row.generation != Some(st.generation) {
                    if row.generation.is_some_and(|g| g > st.generation) {
                        tracing::error!(%key_id, db = ?row.generation, ta = st.generation,
                            "the TA's generation is behind the database (TA state rolled back?)");
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
                            .client()
                            .call_async(&RevokeAgentKey {
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
                if row.status == AgentStatus::Pending
                    && !startup
                    && now - row.created_at < PENDING_GRACE_SECS
                {
                    continue;
                }
                let mut touched = false;
                if let Some(st) = ta_state(s, wallet, index).await? {
                    if !st.revoked {
                        s.tee
                            .client()
                            .call_async(&RevokeAgentKey {
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
            Ok(r)
        }
        Err(e) => {
            s.reconcile.dirty.store(true, Ordering::SeqCst);
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
