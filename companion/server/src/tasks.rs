//! Background tasks: JWT secret rotation (and keeping `jwt_secret_meta`
//! true to the TA; on the one replica holding the rotation lease, [`crate::replicas`]), pending session grants settled from the chain
//! ([`crate::service::sessions::grant_tick`]), audit checkpoints signed in the TA,
//! expired-ceremony cleanup, and limiter sweeping.

use std::sync::Arc;
use std::time::Duration;

use kms_proto::{
    AuditAnchor, JwtRotateSecret, JwtSecretStatus, KidStatus, RotationMode, TaError, TaInfo,
};
use kms_tee_client::TeeError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::Event;
use crate::error::ApiError;
use crate::state::AppState;

/// Rewrite this companion's TA's rows of `jwt_secret_meta` from its `JwtSecretStatus`.
pub async fn sync_jwt_meta(s: &AppState) -> Result<(), ApiError> {
    let list = s.tee.call(&JwtSecretStatus {}).await?;
    s.db.sync_jwt_secret_meta_from_ta(&this_ta_name(s).await?, &list, kms_db::now_secs())
        .await?;
    Ok(())
}

/// The name this companion's TA has in `jwt_secret_meta` (its operator address, as
/// `wallets.ta_id`), asking the TA for it if it was not reached since the start.
async fn this_ta_name(s: &AppState) -> Result<String, ApiError> {
    s.operator().await?;
    crate::replicas::this_ta(s)
        .ok_or_else(|| ApiError::internal("the TA's operator key is not known after opening it"))
}

/// What one rotation tick did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// The new current kid, if a rotation happened.
    pub rotated_to: Option<String>,
    /// Kids removed (verify-only kids past their overlap).
    pub purged: Vec<String>,
    /// A rotation was due but the TA refused it (its verify-only kids are at
    /// their limit and none may be dropped early): the time (unix seconds, TA
    /// clock) from which it can run. A later tick tries again.
    pub refused_until: Option<u64>,
}

/// One rotation tick: rotate when the current kid is older than the issue
/// period (by the TA's clock), then purge expired verify-only kids, then
/// rewrite `jwt_secret_meta` from the TA.
///
/// A normal rotation the TA refuses (`JwtRotationRefused`: it keeps every
/// verify-only kid until its retire time, up to a bound) is not a failure of
/// the tick: it is logged with the time it can run, the purge and the
/// metadata sync still happen, and the next tick past that time rotates.
/// With a rotation period of at least the overlap (the configuration's
/// rule) the task never meets it; an operator's manual rotations can.
pub async fn rotation_tick(s: &AppState) -> Result<RotationReport, ApiError> {
    let mut report = RotationReport::default();
    let status = s.tee.call(&JwtSecretStatus {}).await?;
    let now = s.tee.call(&TaInfo {}).await?.now;
    if let Some(current) = status.iter().find(|k| k.status == KidStatus::Current) {
        if now.saturating_sub(current.created_at) >= s.config.jwt_rotation_period_secs {
            match s
                .tee
                .try_call(&JwtRotateSecret {
                    mode: RotationMode::Normal,
                })
                .await
            {
                Ok(r) => {
                    report.rotated_to = r.current_kid.clone();
                    report.purged.extend(r.removed);
                    tracing::info!(new_kid = ?r.current_kid, retired = ?r.retired, "JWT secret rotated");
                    // Already done: a failure to record it is logged by the writer.
                    let _ = s
                        .audit
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
                Err(TeeError::Ta(TaError::JwtRotationRefused { retry_at })) => {
                    report.refused_until = Some(retry_at);
                    tracing::warn!(
                        current_kid = %current.kid,
                        retry_at,
                        retry_in_secs = retry_at.saturating_sub(now),
                        max_verify_only = kms_proto::jwt::MAX_VERIFY_ONLY_KIDS,
                        "JWT secret rotation due but refused by the TA: its verify-only secrets \
                         are at their limit and may still verify live credentials; the task \
                         retries at its next tick from retry_at (a forced rotation, \
                         `kms-admin rotate-jwt-secret --force`, runs now and kills every credential)"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let purge = s
        .tee
        .call(&JwtRotateSecret {
            mode: RotationMode::PurgeExpired,
        })
        .await?;
    report.purged.extend(purge.removed.iter().cloned());
    s.db.sync_jwt_secret_meta_from_ta(&this_ta_name(s).await?, &purge.secrets, kms_db::now_secs())
        .await?;
    Ok(report)
}

/// One audit checkpoint run: the TA's anchor brought up to the end of the audit log
/// ([`kms_db::Db::anchor_audit_log_from`]: the TA's last checkpoint stored if the table lacks it,
/// then the rows after it signed by the TA, 4096 at a time, their hashes from the audit writer's
/// memory while it is exactly the chain's continuation, else read from the table). When another checkpointer (`kms-admin
/// audit checkpoint`) came first, the TA refuses as out of step and the run starts again from
/// the TA's new anchor.
pub async fn audit_checkpoint(s: &AppState) -> Result<kms_db::Anchored, String> {
    s.audit.checkpoint_trigger().reset();
    let mut attempt = 0;
    loop {
        let info = s
            .tee
            .call(&AuditAnchor {})
            .await
            .map_err(|e| format!("reading the TA's audit anchor: {e}"))?;
        let tee = &s.tee;
        match s
            .db
            .anchor_audit_log_from(&info, Some(s.audit.tail()), |req| async move {
                tee.try_call(&req).await
            })
            .await
        {
            Ok(done) => return Ok(done),
            Err(kms_db::AnchorError::Ta(TeeError::Ta(TaError::AuditCheckpointOutOfStep {
                ..
            }))) if attempt < 3 => attempt += 1,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// [`audit_checkpoint`], logged and counted (a failure loudly: the log is not being anchored).
pub async fn audit_checkpoint_logged(s: &AppState) {
    match audit_checkpoint(s).await {
        Ok(done) => {
            s.metrics.observe_audit_checkpoint("ok", Some(done.seq));
            if done.recovered {
                tracing::warn!(
                    "the TA's last audit checkpoint was missing from audit_checkpoints (a crash \
                     after it was signed?); stored it now"
                );
            }
            if done.forks > 0 {
                tracing::warn!(
                    forks = done.forks,
                    "audit checkpoints stored beside older ones of the same number: the TA's \
                     state was restored since those were signed (kms-admin audit verify notes it)"
                );
            }
            if let Some(last) = done.signed.last() {
                tracing::info!(
                    index = last.index,
                    seq = last.seq,
                    checkpoints = done.signed.len(),
                    rows_from_memory = done.from_memory,
                    "audit log anchored in the TA"
                );
            }
        }
        Err(e) => {
            s.metrics.observe_audit_checkpoint("error", None);
            tracing::error!(
                error = %e,
                "AUDIT CHECKPOINT FAILED: the audit log is not being anchored in the TA; \
                 `kms-admin audit verify` says what is wrong"
            );
        }
    }
}

/// A task running `f` at once and then every `period` (a late tick is delayed, not bunched),
/// until `stop` changes.
fn every<F, Fut>(
    period: Duration,
    mut stop: watch::Receiver<bool>,
    s: Arc<AppState>,
    f: F,
) -> JoinHandle<()>
where
    F: Fn(Arc<AppState>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => f(s.clone()).await,
                _ = stop.changed() => break,
            }
        }
    })
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
                        // One replica of those sharing the database rotates (crate::replicas).
                        match crate::replicas::leads_rotation(&s).await {
                            Ok(true) => {
                                s.metrics.count_rotation_tick("ran");
                                if let Err(e) = rotation_tick(&s).await {
                                    tracing::warn!(error = %e, "JWT rotation tick failed");
                                }
                            }
                            Ok(false) => s.metrics.count_rotation_tick("skipped"),
                            Err(e) => {
                                s.metrics.count_rotation_tick("error");
                                tracing::warn!(error = %e, "JWT rotation tick: the rotation lease could not be read");
                            }
                        }
                    }
                    _ = stop.changed() => {
                        crate::replicas::release_rotation(&s).await;
                        break;
                    }
                }
            }
        })
    };
    // Open intents, and pending session grants (settled from their receipts, or given up as
    // dropped), each every --intent-poll-secs when the chain is configured.
    let poll = Duration::from_secs(s.config.intent_poll_secs);
    let intents = every(poll, shutdown.clone(), s.clone(), |s| async move {
        if s.chain.is_some() {
            intent_tick(&s).await;
        }
    });
    let grants = every(poll, shutdown.clone(), s.clone(), |s| async move {
        if s.chain.is_some() {
            crate::service::sessions::grant_tick(&s).await;
        }
    });
    let checkpoints = {
        let s = s.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            if s.config.audit_checkpoint_secs == 0 {
                return;
            }
            let trigger = s.audit.checkpoint_trigger().clone();
            // The first tick is at once: it stores a checkpoint a crash left unstored and
            // anchors what was logged before this start.
            let period = Duration::from_secs(s.config.audit_checkpoint_secs);
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = trigger.due() => tick.reset(),
                    _ = stop.changed() => break,
                }
                audit_checkpoint_logged(&s).await;
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
                        s.limits.sweep();
                    }
                    _ = stop.changed() => break,
                }
            }
        })
    };
    vec![rotation, intents, grants, checkpoints, cleanup]
}

/// What one tick of the intent task did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IntentTickReport {
    /// Intents looked at.
    pub looked_at: usize,
    /// Of those, intents that reached a final status.
    pub settled: usize,
}

/// One tick of the intent task: the open intents that are due (`next_check_at` passed), the
/// longest overdue first, at most [`crate::lifecycle::TASK_BATCH`] of them and for at most
/// twice `--intent-poll-secs` (10 s at least), each brought up to date by
/// [`crate::lifecycle::refresh`] (lookups, re-submission of the identical operation, settlement
/// with evidence) and rescheduled with its own backoff. Intents that never settle therefore
/// wait longer and longer and never keep the others from their turn.
pub async fn intent_tick(s: &AppState) -> IntentTickReport {
    let mut report = IntentTickReport::default();
    let Some(chain) = s.chain.as_ref() else {
        return report;
    };
    let started = std::time::Instant::now();
    let budget = Duration::from_secs(s.config.intent_poll_secs.saturating_mul(2).max(10));
    let due = match s
        .db
        .due_intents(kms_db::now_secs(), crate::lifecycle::TASK_BATCH)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "reading due intents failed");
            return report;
        }
    };
    for intent in due {
        if started.elapsed() > budget {
            // The rest stay due and come first next time.
            break;
        }
        let hash = intent.user_op_hash.clone();
        report.looked_at += 1;
        match crate::lifecycle::refresh(s, chain, intent).await {
            Ok(i) if !i.is_open() => report.settled += 1,
            Ok(_) => {}
            Err(e) => tracing::warn!(user_op_hash = %hash, error = %e, "intent refresh failed"),
        }
    }
    report
}
