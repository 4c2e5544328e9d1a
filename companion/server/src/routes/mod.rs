//! HTTP routes.

pub mod agent;
pub mod ceremony;
pub mod health;
pub mod intents;
pub mod sessions;
pub mod ui;
pub mod wallet;

use axum::http::HeaderMap;

use crate::audit::Event;
use crate::error::ApiError;
use crate::state::AppState;

/// Check the AWS-style `x-amz-target: TrentService.<Op>` header. With
/// `optional`, a missing header is accepted (a present one must match).
pub fn check_target(headers: &HeaderMap, ops: &[&str], optional: bool) -> Result<(), ApiError> {
    let Some(v) = headers.get("x-amz-target") else {
        if optional {
            return Ok(());
        }
        return Err(ApiError::bad_request(
            "missing_target",
            format!("header x-amz-target: TrentService.{} is required", ops[0]),
        ));
    };
    let v = v.to_str().unwrap_or("");
    if ops
        .iter()
        .any(|op| v.strip_prefix("TrentService.") == Some(op))
    {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_target",
            format!("x-amz-target must be TrentService.{} for this path", ops[0]),
        ))
    }
}

/// The audit outcome string of a result.
pub fn outcome<T>(r: &Result<T, ApiError>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("refused:{}", e.code()),
    }
}

impl AppState {
    /// Record a credential or wallet event and wait for it to be committed. The operation has
    /// already happened (in the TA and the database): a failure to record it does not change
    /// the answer; the writer logs it loudly and counts it (`kms_audit_events_lost_total`).
    pub async fn audit_durable<T>(
        &self,
        actor: &str,
        action: &str,
        key_id: Option<&str>,
        result: &Result<T, ApiError>,
        detail: Option<&str>,
    ) {
        let outcome = outcome(result);
        let _ = self
            .audit
            .record_durable(Event {
                actor,
                action,
                key_id,
                outcome: &outcome,
                user_op_hash: None,
                detail,
            })
            .await;
    }

    /// Record the event of a signature the TA made, before the signature leaves the companion
    /// (answered, or submitted to the bundler). With `--audit-durability sync` or `commit` this
    /// waits for the commit of the batch carrying it (concurrent requests share it), and when
    /// the event cannot be committed the signature is withheld: 503 `audit_unavailable` (the
    /// TA signed, but nothing it signed is released without its record; the request can be
    /// retried). With `queued` the event is queued and the signature released at once.
    pub async fn audit_release(&self, e: Event<'_>) -> Result<(), ApiError> {
        let action = e.action;
        self.audit.record_for_release(e).await.map_err(|_| {
            self.metrics.count_audit_withheld();
            tracing::error!(
                action,
                "signature withheld: its audit event could not be committed"
            );
            audit_unavailable()
        })
    }

    /// The audit event of a wallet route (`/Sign`, `/SignHash`): always committed before the
    /// answer. A signature whose event cannot be committed is withheld (503
    /// `audit_unavailable`); a refusal is recorded as by [`AppState::audit_durable`].
    pub async fn audit_wallet_signature<T>(
        &self,
        actor: &str,
        action: &str,
        key_id: Option<&str>,
        result: &Result<T, ApiError>,
        detail: Option<&str>,
    ) -> Result<(), ApiError> {
        if result.is_err() {
            self.audit_durable(actor, action, key_id, result, detail)
                .await;
            return Ok(());
        }
        self.audit
            .record_durable(Event {
                actor,
                action,
                key_id,
                outcome: "ok",
                user_op_hash: None,
                detail,
            })
            .await
            .map_err(|_| {
                self.metrics.count_audit_withheld();
                tracing::error!(
                    action,
                    "signature withheld: its audit event could not be committed"
                );
                audit_unavailable()
            })
    }
}

/// 503 `audit_unavailable`: a signature withheld because its audit event was not committed.
pub fn audit_unavailable() -> ApiError {
    ApiError::detailed(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        "the signature was not released: its audit record could not be committed (the audit \
         log is unavailable); nothing signed left the companion, retry later",
        serde_json::json!({}),
    )
}
