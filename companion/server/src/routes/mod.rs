//! HTTP routes.

pub mod agent;
pub mod agent_session;
pub mod ceremony;
pub mod health;
pub mod intents;
pub mod sessions;
pub mod ui;
pub mod wallet;

use axum::http::HeaderMap;

use crate::error::{ApiError, ErrorCode};

/// Check the AWS-style `x-amz-target: TrentService.<Op>` header. With
/// `optional`, a missing header is accepted (a present one must match).
pub fn check_target(headers: &HeaderMap, ops: &[&str], optional: bool) -> Result<(), ApiError> {
    let Some(v) = headers.get("x-amz-target") else {
        if optional {
            return Ok(());
        }
        return Err(ApiError::bad_request(
            ErrorCode::MissingTarget,
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
            ErrorCode::InvalidTarget,
            format!("x-amz-target must be TrentService.{} for this path", ops[0]),
        ))
    }
}
