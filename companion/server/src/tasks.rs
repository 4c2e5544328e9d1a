//! Background tasks: JWT secret rotation (and keeping `jwt_secret_meta`
//! true to the TA), expired-ceremony cleanup, and limiter sweeping.

use std::sync::Arc;
use std::time::Duration;

use kms_proto::{JwtRotateSecret, JwtSecretStatus, KidStatus, RotationMode, TaInfo};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::Event;
use crate::error::ApiError;
use crate::state::AppState;

/// Rewrite `jwt_secret_meta` from the TA's `JwtSecretStatus`.
pub async fn sync_jwt_meta(s: &AppState) -> Result<(), ApiError> {
    let list = s.tee.call(&JwtSecretStatus {}).await?;
    s.db.sync_jwt_secret_meta_from_ta(&list, kms_db::now_secs())
        .await?;
    Ok(())
}

/// What one rotation tick did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// The new current kid, if a rotation happened.
    pub rotated_to: Option<String>,
    /// Kids removed (verify-only kids past their overlap).
    pub purged: Vec<String>,
}

/// One rotation tick: rotate when the current kid is older than the issue
/// period (by the TA's clock), then purge expired verify-only kids, then
/// rewrite `jwt_secret_meta` from the TA.
pub async fn rotation_tick(s: &AppState) -> Result<RotationReport, ApiError> {
    let mut report = RotationReport::default();
    let status = s.tee.call(&JwtSecretStatus {}).await?;
    let now = s.tee.call(&TaInfo {}).await?.now;
    if let Some(current) = status.iter().find(|k| k.status == KidStatus::Current) {
        if now.saturating_sub(current.created_at) >= s.config.jwt_rotation_period_secs {
            let r = s
                .tee
                .call(&JwtRotateSecret {
                    mode: RotationMode::Normal,
                })
                .await?;
            report.rotated_to = r.current_kid.clone();
            report.purged.extend(r.removed);
            tracing::info!(new_kid = ?r.current_kid, retired = ?r.retired, "JWT secret rotated");
            s.audit
                .record_durable(Event {
                    actor: "system",
                    action: "JwtRotateSecret",
                    key_id: r.current_kid.as_deref(),
                    outcome: "ok",
                    user_op_hash: None,
                    detail: Some("normal"),
                })
                .await;
        }
    }
    let purge = s
        .tee
        .call(&JwtRotateSecret {
            mode: RotationMode::PurgeExpired,
        })
        .await?;
    report.purged.extend(purge.removed.iter().cloned());
    s.db.sync_jwt_secret_meta_from_ta(&purge.secrets, kms_db::now_secs())
        .await?;
    Ok(report)
}

/// Start the background tasks; they stop when `shutdown` becomes true.
pub fn spawn(s: Arc<AppState>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let rotation = {
        let s = s.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs(s.config.jwt_rotation_tick_secs);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = rotation_tick(&s).await {
                            tracing::warn!(error = %e, "JWT rotation tick failed");
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        })
    };
    let intents = {
        let s = s.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            if s.chain.is_none() {
                return;
            }
            let period = Duration::from_secs(s.config.intent_poll_secs);
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = tick.tick() => intent_tick(&s).await,
                    _ = stop.changed() => break,
                }
            }
        })
    };
    let cleanup = {
        let mut stop = shutdown;
        tokio::spawn(async move {
            let period = Duration::from_secs(s.config.challenge_cleanup_secs);
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        match s.db.purge_challenges(kms_db::now_secs()).await {
                            Ok(n) if n > 0 => tracing::debug!(removed = n, "expired ceremonies removed"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "ceremony cleanup failed"),
                        }
                        s.limits.api.sweep();
                        s.limits.agent.sweep();
                    }
                    _ = stop.changed() => break,
                }
            }
        })
    };
    vec![rotation, intents, cleanup]
}

/// One tick of the intent task: bring up to 100 open intents up to date (receipts; re-submission
/// of signed operations whose submission failed transiently).
pub async fn intent_tick(s: &AppState) {
    let Some(chain) = s.chain.as_ref() else {
        return;
    };
    let open = match s.db.open_intents(100).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "reading open intents failed");
            return;
        }
    };
    for intent in open {
        let hash = intent.user_op_hash.clone();
        match crate::routes::intents::refresh(s, chain, intent).await {
            Ok(i) if i.status == "included" || i.status == "failed" => {
                tracing::info!(user_op_hash = %hash, status = %i.status, "intent settled");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(user_op_hash = %hash, error = %e, "intent refresh failed"),
        }
    }
}
