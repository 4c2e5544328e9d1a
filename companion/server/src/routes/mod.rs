//! The HTTP adapters: each extracts and checks a request, calls a service
//! ([`crate::service`]) or the TA, and answers. One module per resource the URL names:
//!
//! | Routes | Module |
//! |---|---|
//! | `/BeginRegistration`, `/CompleteRegistration`, `/BeginAuthentication` | [`ceremony`] |
//! | `/CreateKey`, `/DescribeKey`, `/ListKeys`, `/GetPublicKey`, `/DeriveAddress`, `/Sign`, `/SignHash`, `/DeleteKey`, `/ChangePasskey` | [`wallet`] |
//! | `/kms/create-agent-key`, `/kms/list-agent-keys`, `/kms/sign-agent`, `/kms/refresh-agent-credential`, `/kms/revoke-agent-credential` | [`agent`] |
//! | `/kms/agent-sessions` | [`sessions`] |
//! | `/kms/operator` | [`operator`] |
//! | `/kms/permission-requests`, `/kms/permission-requests/resolve` | [`permissions`] |
//! | `/rpc` (JSON-RPC: ERC-7715 `wallet_grantPermissions`) | [`rpc`] |
//! | `/agent/intents`, `/agent/intents/{userOpHash}`, `/kms/list-agent-intents` | [`intents`] |
//! | `/agent/session` | [`agent_session`] |
//! | `/health` | [`health`] |
//! | `/metrics` | [`metrics`] |
//! | `/openapi.json` | [`openapi`] |
//! | `/ui`, `/ui/{file}` | [`ui`] |
//!
//! Unknown paths and methods get JSON answers ([`not_found`], [`method_not_allowed`]).

pub mod agent;
pub mod agent_session;
pub mod ceremony;
pub mod health;
pub mod intents;
pub mod metrics;
pub mod openapi;
pub mod operator;
pub mod permissions;
pub mod rpc;
pub mod sessions;
pub mod ui;
pub mod wallet;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

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

/// Unknown path.
pub async fn not_found() -> ApiError {
    ApiError::not_found(ErrorCode::RouteNotFound, "no such route")
}

/// Known path, wrong method.
pub async fn method_not_allowed() -> Response {
    let mut r = ApiError::bad_request(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
    .into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}
