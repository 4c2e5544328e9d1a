//! The audit trail: events go through a channel to one writer task that appends them to the
//! hash-chained `audit_log` table in batches (one transaction per batch).
//!
//! **Group commit.** Whoever waits for an event ([`Audit::record_durable`]) waits for the
//! commit of the batch that carries it; while one batch commits, the events of concurrent
//! requests queue and go into the next one, so N concurrent signatures share one transaction
//! (and, with `--audit-durability sync`, one fsync) instead of paying one each.
//!
//! **Durability** (`--audit-durability`, [`AuditDurability`]): `sync` commits every batch under
//! `PRAGMA synchronous = FULL` (the WAL is fsynced before the commit returns: the rows survive
//! a power loss), `commit` under the database's `NORMAL` (they survive a crash of the
//! companion, not of the machine), `queued` does not make the signing routes wait at all.
//! Routes that release a signature ([`crate::routes`]) record its event *before* answering and
//! withhold the signature (503 `audit_unavailable`) when the event cannot be committed.
//!
//! **Checkpoints.** The writer counts committed events; once `--audit-checkpoint-events` have
//! been committed since the last checkpoint it wakes the checkpoint task
//! ([`crate::tasks`]), which has the TA sign the new head ([`kms_db::Db::anchor_audit_log_from`]).
//! The writer remembers the row hashes it committed since ([`kms_db::AuditTail`]), so the
//! checkpoint does not read the rows back while they are exactly the chain's continuation.
//!
//! Events never carry secrets: no JWT, API key, assertion or signature input beyond the public
//! userOpHash.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kms_db::{AuditEvent, AuditTail, Db};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::config::AuditDurability;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::state::AppState;

/// Most events in one transaction.
const MAX_BATCH: usize = 512;

enum Msg {
    Event(AuditEvent, Option<oneshot::Sender<bool>>),
    Flush(oneshot::Sender<bool>),
}

/// The audit event could not be committed (the database failed through every retry, or the
/// writer is gone). Logged by the writer; the caller decides what it means for its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the audit event could not be committed")]
pub struct AuditUnavailable;

/// When the checkpoint task is due: events committed since the last checkpoint.
#[derive(Debug, Default)]
pub struct CheckpointTrigger {
    since: AtomicU64,
    every: u64,
    notify: Notify,
}

impl CheckpointTrigger {
    /// Count `n` committed events; wake the task when `every` have accumulated.
    fn committed(&self, n: u64) {
        let total = self.since.fetch_add(n, Ordering::Relaxed) + n;
        if self.every > 0 && total >= self.every {
            self.notify.notify_one();
        }
    }

    /// Wait until enough events have been committed.
    pub async fn due(&self) {
        self.notify.notified().await;
    }

    /// A checkpoint is starting: count from zero.
    pub fn reset(&self) {
        self.since.store(0, Ordering::Relaxed);
    }
}

/// Handle to the audit writer (cheap to clone).
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Msg>,
    metrics: Arc<Metrics>,
    durability: AuditDurability,
    trigger: Arc<CheckpointTrigger>,
    tail: Arc<AuditTail>,
}

/// What one event says.
pub struct Event<'a> {
    /// Who.
    pub actor: &'a str,
    /// What.
    pub action: &'a str,
    /// Which key.
    pub key_id: Option<&'a str>,
    /// `ok`, or the error code.
    pub outcome: &'a str,
    /// userOpHash, when there is one.
    pub user_op_hash: Option<&'a str>,
    /// Non-secret detail.
    pub detail: Option<&'a str>,
}

impl Event<'_> {
    fn to_db(&self) -> AuditEvent {
        AuditEvent {
            ts: kms_db::now_secs(),
            actor: self.actor.to_owned(),
            action: self.action.to_owned(),
            key_id: self.key_id.map(str::to_owned),
            outcome: self.outcome.to_owned(),
            user_op_hash: self.user_op_hash.map(str::to_owned),
            detail: self.detail.map(str::to_owned),
        }
    }
}

impl Audit {
    /// Start the writer task. `checkpoint_events`: wake the checkpoint task after this many
    /// committed events (0: never by count).
    pub fn start(
        db: Db,
        metrics: Arc<Metrics>,
        durability: AuditDurability,
        checkpoint_events: u64,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(65536);
        let trigger = Arc::new(CheckpointTrigger {
            every: checkpoint_events,
            ..CheckpointTrigger::default()
        });
        let full_sync = durability == AuditDurability::Sync;
        let tail = Arc::new(AuditTail::new());
        let handle = tokio::spawn(writer(
            db,
            rx,
            full_sync,
            metrics.clone(),
            trigger.clone(),
            tail.clone(),
        ));
        (
            Self {
                tx,
                metrics,
                durability,
                trigger,
                tail,
            },
            handle,
        )
    }

    /// The configured durability.
    pub fn durability(&self) -> AuditDurability {
        self.durability
    }

    /// The checkpoint task's trigger.
    pub fn checkpoint_trigger(&self) -> &Arc<CheckpointTrigger> {
        &self.trigger
    }

    /// The writer's memory of the rows it committed, for the checkpoint task.
    pub fn tail(&self) -> &AuditTail {
        &self.tail
    }

    /// Queue an event (never blocks; counts a drop if the queue is full).
    pub fn record(&self, e: Event<'_>) {
        if self.tx.try_send(Msg::Event(e.to_db(), None)).is_err() {
            self.metrics.count_audit_dropped();
            tracing::error!(action = e.action, "audit queue full: event dropped");
        }
    }

    /// Record an event and wait until the batch carrying it is committed.
    pub async fn record_durable(&self, e: Event<'_>) -> Result<(), AuditUnavailable> {
        let (done, wait) = oneshot::channel();
        if self
            .tx
            .send(Msg::Event(e.to_db(), Some(done)))
            .await
            .is_err()
        {
            self.metrics.count_audit_dropped();
            tracing::error!(action = e.action, "audit writer gone: event not recorded");
            return Err(AuditUnavailable);
        }
        match wait.await {
            Ok(true) => Ok(()),
            _ => Err(AuditUnavailable),
        }
    }

    /// The event of a signature about to be released: waited for ([`Audit::record_durable`])
    /// unless the durability is `queued` (then queued, and `Ok`).
    pub async fn record_for_release(&self, e: Event<'_>) -> Result<(), AuditUnavailable> {
        match self.durability {
            AuditDurability::Queued => {
                self.record(e);
                Ok(())
            }
            AuditDurability::Commit | AuditDurability::Sync => self.record_durable(e).await,
        }
    }

    /// Wait until every event queued before this call is committed (or given up on).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn writer(
    db: Db,
    mut rx: mpsc::Receiver<Msg>,
    full_sync: bool,
    metrics: Arc<Metrics>,
    trigger: Arc<CheckpointTrigger>,
    tail: Arc<AuditTail>,
) {
    let mut batch = Vec::with_capacity(256);
    let mut waiters = Vec::new();
    // Its own connection (opened on first use, reopened after a failure).
    let mut appender: Option<kms_db::AuditAppender> = None;
    while let Some(first) = rx.recv().await {
        // Everything queued while the previous batch committed goes into this one.
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event(e, w) => {
                    batch.push(e);
                    waiters.extend(w);
                }
                Msg::Flush(w) => waiters.push(w),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let mut committed = true;
        if !batch.is_empty() {
            let mut attempt = 0;
            loop {
                let appended = match appender.as_mut() {
                    Some(a) => a.append(&batch).await,
                    None => match db.audit_appender(full_sync).await {
                        Ok(a) => {
                            let a = a.remembering(tail.clone());
                            appender.insert(a).append(&batch).await
                        }
                        Err(e) => Err(e),
                    },
                };
                match appended {
                    Ok(()) => {
                        metrics.count_audit_commit(batch.len() as u64);
                        trigger.committed(batch.len() as u64);
                        break;
                    }
                    Err(e) => {
                        // A fresh connection for the next attempt.
                        appender = None;
                        if attempt < 5 {
                            attempt += 1;
                            tracing::warn!(error = %e, attempt, "audit append failed; retrying");
                            tokio::time::sleep(std::time::Duration::from_millis(50 * attempt))
                                .await;
                            continue;
                        }
                        committed = false;
                        metrics.count_audit_lost(batch.len() as u64);
                        tracing::error!(
                            error = %e,
                            events = batch.len(),
                            "AUDIT APPEND FAILED: events lost; signatures waiting for them are \
                             withheld (503 audit_unavailable)"
                        );
                        break;
                    }
                }
            }
            batch.clear();
        }
        for w in waiters.drain(..) {
            let _ = w.send(committed);
        }
    }
}

/// What an audited operation is: who did what to which key (see [`AppState::audited`]).
#[derive(Clone, Copy, Debug)]
pub struct Audited<'a> {
    actor: &'a str,
    action: &'a str,
    key_id: Option<&'a str>,
    user_op_hash: Option<&'a str>,
    detail: Option<&'a str>,
}

impl<'a> Audited<'a> {
    /// `actor` did `action`.
    pub fn new(actor: &'a str, action: &'a str) -> Self {
        Audited {
            actor,
            action,
            key_id: None,
            user_op_hash: None,
            detail: None,
        }
    }
    /// To key `key_id`.
    pub fn key_id(mut self, key_id: impl Into<Option<&'a str>>) -> Self {
        self.key_id = key_id.into();
        self
    }
    /// For UserOperation `hash`.
    pub fn user_op_hash(mut self, hash: impl Into<Option<&'a str>>) -> Self {
        self.user_op_hash = hash.into();
        self
    }
    /// With a non-secret `detail`.
    pub fn detail(mut self, detail: impl Into<Option<&'a str>>) -> Self {
        self.detail = detail.into();
        self
    }
    fn event(self, outcome: &'a str) -> Event<'a> {
        Event {
            actor: self.actor,
            action: self.action,
            key_id: self.key_id,
            outcome,
            user_op_hash: self.user_op_hash,
            detail: self.detail,
        }
    }
}

/// How an audited operation's event is recorded, by what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditMode {
    /// The operation already happened (in the TA and the database): its event (or its refusal)
    /// is committed before the answer, and a failure to commit it does not change the answer
    /// (the writer logs it loudly and counts it, `kms_audit_events_lost_total`).
    Durable,
    /// A signature is about to leave the companion: its event is recorded per
    /// `--audit-durability` first (`sync`/`commit`: the commit of the batch carrying it, shared
    /// by concurrent requests), and when it cannot be, the signature is withheld (503
    /// `audit_unavailable`, counted). A refusal is queued (the hot path waits for nothing).
    Release,
    /// [`AuditMode::Release`] for the wallet routes (`/Sign`, `/SignHash`): the event of a
    /// signature and of a refusal is always committed, whatever `--audit-durability`.
    ReleaseCommitted,
    /// What was signed already left (an intent with the bundler): the outcome is recorded per
    /// `--audit-durability`, a failure to record it logged, not answered; a refusal is queued.
    AfterRelease,
}

impl AppState {
    /// Records the event of `what` with `result`'s outcome (`ok`, or `refused:<code>`) as
    /// `mode` says, and returns `result`, or 503 `audit_unavailable` when a signature must be
    /// withheld. The one way routes and services write the audit log.
    pub async fn audited<T>(
        &self,
        what: Audited<'_>,
        mode: AuditMode,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("refused:{}", e.code()),
        };
        let event = what.event(&outcome);
        let recorded = match (mode, result.is_ok()) {
            (AuditMode::Durable, _) | (AuditMode::ReleaseCommitted, false) => {
                let _ = self.audit.record_durable(event).await;
                Ok(())
            }
            (AuditMode::Release | AuditMode::AfterRelease, false) => {
                self.audit.record(event);
                Ok(())
            }
            (AuditMode::Release, true) => self.audit.record_for_release(event).await,
            (AuditMode::ReleaseCommitted, true) => self.audit.record_durable(event).await,
            (AuditMode::AfterRelease, true) => {
                let _ = self.audit.record_for_release(event).await;
                Ok(())
            }
        };
        if recorded.is_err() {
            self.metrics.count_audit_withheld();
            tracing::error!(
                action = what.action,
                "signature withheld: its audit event could not be committed"
            );
            return Err(audit_unavailable());
        }
        result
    }
}

/// 503: a signature withheld because its audit event could not be committed.
pub fn audit_unavailable() -> ApiError {
    ApiError::detailed(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::AuditUnavailable,
        "the signature was not released: its audit record could not be committed (the audit \
         log is unavailable); nothing signed left the companion, retry later",
        serde_json::json!({}),
    )
}
