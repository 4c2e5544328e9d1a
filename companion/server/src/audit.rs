//! The audit trail: events go through a channel to one writer task that
//! appends them to the hash-chained `audit_log` table in batches (one
//! transaction per batch), so the signing hot path never waits on a
//! database write lock. Credential and wallet events are recorded with
//! [`Audit::record_durable`], which waits until the row is committed.
//!
//! Events never carry secrets: no JWT, API key, assertion or signature
//! input beyond the public userOpHash.

use std::sync::Arc;

use kms_db::{AuditEvent, Db};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

enum Msg {
    Event(AuditEvent, Option<oneshot::Sender<()>>),
    Flush(oneshot::Sender<()>),
}

/// Handle to the audit writer (cheap to clone).
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Msg>,
    metrics: Arc<Metrics>,
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
    /// Start the writer task.
    pub fn start(db: Db, metrics: Arc<Metrics>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(65536);
        let handle = tokio::spawn(writer(db, rx));
        (Self { tx, metrics }, handle)
    }

    /// Queue an event (never blocks; counts a drop if the queue is full).
    pub fn record(&self, e: Event<'_>) {
        if self.tx.try_send(Msg::Event(e.to_db(), None)).is_err() {
            self.metrics.count_audit_dropped();
            tracing::error!(action = e.action, "audit queue full: event dropped");
        }
    }

    /// Record an event and wait until it is committed.
    pub async fn record_durable(&self, e: Event<'_>) {
        let (done, wait) = oneshot::channel();
        if self
            .tx
            .send(Msg::Event(e.to_db(), Some(done)))
            .await
            .is_err()
        {
            self.metrics.count_audit_dropped();
            return;
        }
        let _ = wait.await;
    }

    /// Wait until every event queued before this call is committed.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn writer(db: Db, mut rx: mpsc::Receiver<Msg>) {
    let mut batch = Vec::with_capacity(256);
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event(e, w) => {
                    batch.push(e);
                    waiters.extend(w);
                }
                Msg::Flush(w) => waiters.push(w),
            }
            if batch.len() < 512 {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let mut attempt = 0;
            loop {
                match db.append_audit(&batch).await {
                    Ok(()) => break,
                    Err(e) if attempt < 5 => {
                        attempt += 1;
                        tracing::warn!(error = %e, attempt, "audit append failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, events = batch.len(), "audit append failed; events lost");
                        break;
                    }
                }
            }
            batch.clear();
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}
