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
    /// Record a credential or wallet event and wait for it to be committed.
    pub async fn audit_durable<T>(
        &self,
        actor: &str,
        action: &str,
        key_id: Option<&str>,
        result: &Result<T, ApiError>,
        detail: Option<&str>,
    ) {
        let outcome = outcome(result);
        self.audit
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
}
