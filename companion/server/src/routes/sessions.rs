//! `/kms/agent-sessions`, an adapter of [`crate::service::sessions`]: the owner registers an
//! agent key's session on chain with the passkey ceremony `GrantSession` (started with
//! `/BeginAuthentication`, which builds the operation: [`sessions::begin_grant`]).
//!
//! 200 when the grant was included within `--receipt-wait-secs` (the session is active), 202
//! when it is still pending (recorded; the background task settles it), 422 `grant_failed` when
//! its execution reverted.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::audit::{AuditMode, Audited};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{checksummed, JsonBody};
use crate::ops::AgentSessionRequest;
use crate::service::sessions::{self, GrantOutcome, GrantPlan};
use crate::state::AppState;

/// The session registered for an agent: the grant as sent to `SessionKeyValidator`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionFields {
    /// Call targets and the functions allowed on each (`selectors` as 4-byte hex; an empty list
    /// without `anySelector` allows plain transfers only).
    #[schema(value_type = Vec<Object>)]
    pub targets: Value,
    /// ERC-20 caps (`cap` in the token's units, decimal).
    #[schema(value_type = Vec<Object>)]
    pub tokens: Value,
    /// Spend cap (decimal wei).
    pub spend_cap: String,
    /// Gas cap (decimal wei): the most the agent's operations may cost in gas.
    pub gas_cap: String,
    /// The one paymaster allowed, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paymaster: Option<String>,
    /// Most operations (0 = no limit).
    pub max_ops: u32,
    /// Budget period in seconds (0 = none).
    pub period: u32,
    /// Native-value cap per period (decimal wei; "0" without a period).
    pub period_cap: String,
    /// First valid time (unix seconds).
    pub valid_after: u64,
    /// Last valid time (unix seconds; 0 = no end).
    pub valid_until: u64,
    /// Who may revoke besides the account: the companion's operator key.
    pub revoker: String,
}

/// `/kms/agent-sessions` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSessionResponse {
    /// The agent key id.
    pub key_id: String,
    /// The agent key address.
    pub agent_address: String,
    /// The owner's smart account the session is on.
    pub account: String,
    /// Its kind: `agent-account` (the owner's `AgentAccount`) or `erc7579` (the ERC-7579 account
    /// the request named).
    pub account_kind: String,
    /// The owner's UserOperation.
    pub user_op_hash: String,
    /// `included` (200: the agent's session on `account` is active) or `pending` (202: not
    /// included within the wait; the grant is recorded as pending, the operation stays with the
    /// bundler, and it becomes the agent's session once included).
    pub status: String,
    /// The bundle transaction, once included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_hash: Option<String>,
    /// Whether the operation deploys the account.
    pub deploys_account: bool,
    /// The session.
    pub session: SessionFields,
}

/// The session of `plan` as answered.
fn fields(plan: &GrantPlan) -> SessionFields {
    let g = &plan.grant;
    SessionFields {
        // Addresses EIP-55 checksummed, as everywhere in answers.
        targets: checksummed(serde_json::to_value(&g.targets).unwrap_or_default()),
        tokens: checksummed(serde_json::to_value(&g.tokens).unwrap_or_default()),
        spend_cap: g.spend_cap.to_string(),
        gas_cap: g.gas_cap.to_string(),
        paymaster: g.paymaster.map(|p| p.to_string()),
        max_ops: g.max_ops,
        period: g.period,
        period_cap: g.period_cap.to_string(),
        valid_after: g.valid_after,
        valid_until: g.valid_until,
        revoker: g.revoker.to_string(),
    }
}

/// Register an agent's session on chain (owner passkey ceremony `GrantSession`).
#[utoipa::path(post, path = "/kms/agent-sessions", tag = "agent", request_body = AgentSessionRequest,
    responses((status = 200, body = AgentSessionResponse), (status = 202, body = AgentSessionResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 502, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn agent_sessions(
    State(s): State<Arc<AppState>>,
    JsonBody(r): JsonBody<AgentSessionRequest>,
) -> Result<(StatusCode, Json<AgentSessionResponse>), ApiError> {
    let chain = s.chain()?;
    let plan = sessions::plan(&s, &r).await?;
    let mut user_op_hash = None;
    let res = sessions::grant(&s, chain, &plan, &r, &mut user_op_hash).await;
    let hash_hex = user_op_hash.map(|h| h.to_string());
    let audit = Audited::new("owner-passkey", "GrantSession")
        .key_id(plan.key_id.as_str())
        .user_op_hash(hash_hex.as_deref());
    let granted = s.audited(audit, AuditMode::Durable, res).await?;
    let code = if granted.status == GrantOutcome::Included {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        code,
        Json(AgentSessionResponse {
            key_id: plan.key_id.clone(),
            agent_address: plan.grant.key.to_string(),
            account: granted.account.to_string(),
            account_kind: plan.kind().as_str().to_owned(),
            user_op_hash: granted.stored.user_op_hash.to_string(),
            status: granted.status.as_str().to_owned(),
            transaction_hash: granted.transaction_hash,
            deploys_account: granted.stored.deploys_account,
            session: fields(&plan),
        }),
    ))
}
