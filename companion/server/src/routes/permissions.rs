//! `/kms/permission-requests`: the owner's side of ERC-7715 requests (API key): the pending
//! requests of a wallet, decoded, and the decision on one (see
//! [`crate::service::permissions`]). Approving follows the existing ceremonies: the page (or any
//! client) creates the agent (`CreateAgentKey`, `/kms/create-agent-key` with the listing's
//! `createAgent`), grants it the listing's `session` (`GrantSession`, `/kms/agent-sessions`),
//! then resolves the request with the agent's keyId; only then is the dapp answered.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::audit::{AuditMode, Audited};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::JsonBody;
use crate::ops;
use crate::service::permissions;
use crate::state::AppState;

/// `/kms/permission-requests`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListPermissionRequests {
    /// The wallet (its id, as `KeyId` elsewhere) [default: every wallet].
    #[serde(default)]
    pub human_key_id: Option<String>,
    /// Also the last decided requests [default: false, the pending ones only].
    #[serde(default)]
    pub include_decided: bool,
}

/// `/kms/permission-requests/resolve`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResolvePermissionRequest {
    /// The request.
    pub request_id: String,
    /// `approve` (after granting the request's session to `keyId`) or `reject`.
    pub decision: String,
    /// The agent granted (with `approve`).
    #[serde(default)]
    pub key_id: Option<String>,
    /// Who gets the agent credential: `owner` (default: the dapp gets none; keep it from the
    /// agent's creation) or `requester` (then `credential` is the agent's current credential,
    /// handed to the waiting call only, never stored or logged).
    #[serde(default)]
    pub credential_to: Option<String>,
    /// The agent's credential, with `credentialTo: "requester"`.
    #[serde(default)]
    pub credential: Option<String>,
}

/// The pending ERC-7715 permission requests (decoded: permissions, the session they map onto,
/// what was dropped, who asked, when they expire).
#[utoipa::path(post, path = "/kms/permission-requests", tag = "dapp", request_body = ListPermissionRequests,
    responses((status = 200, description = "`{requests: [{requestId, walletId, requester, status, createdAt, expiresAt, \
        expiry, permissions, dropped, session, createAgent}]}`: `session` is what to grant (`/kms/agent-sessions` \
        fields without keyId), `createAgent` the agent to create (`label`, `ttlSecs`).", body = Object),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    JsonBody(r): JsonBody<ListPermissionRequests>,
) -> Result<Json<Value>, ApiError> {
    let wallet = match &r.human_key_id {
        Some(k) => {
            let id = ops::wallet_id(k)?.to_uuid_string();
            if s.db.get_wallet(&id).await?.is_none() {
                return Err(ApiError::not_found(ErrorCode::KeyNotFound, "key not found"));
            }
            Some(id)
        }
        None => None,
    };
    let rows =
        s.db.permission_requests(wallet.as_deref(), kms_db::now_secs(), r.include_decided)
            .await?;
    let ttl = s.config.jwt_ttl_secs;
    Ok(Json(json!({
        "requests": rows.iter().map(|r| permissions::describe(r, ttl)).collect::<Vec<_>>(),
    })))
}

/// Approve (once the request's session is granted to the agent) or reject an ERC-7715 request:
/// the waiting `wallet_grantPermissions` call gets the answer, or 4001.
#[utoipa::path(post, path = "/kms/permission-requests/resolve", tag = "dapp", request_body = ResolvePermissionRequest,
    responses((status = 200, description = "`{requestId, status, delivered, credentialTo, result?}`: `delivered` says \
        whether the dapp's call was still waiting and got the answer; `credentialTo` who has the credential \
        (`requester` only when delivered with it).", body = Object),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn resolve(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    JsonBody(r): JsonBody<ResolvePermissionRequest>,
) -> Result<Json<Value>, ApiError> {
    let res = async {
        match r.decision.as_str() {
            "approve" => {
                let key_id = r.key_id.as_deref().ok_or_else(|| {
                    ApiError::bad_request(ErrorCode::InvalidRequest, "keyId is required to approve")
                })?;
                let to_requester = match r.credential_to.as_deref() {
                    None | Some("owner") => false,
                    Some("requester") => true,
                    Some(_) => {
                        return Err(ApiError::bad_request(
                            ErrorCode::InvalidRequest,
                            "credentialTo must be `owner` or `requester`",
                        ))
                    }
                };
                let a = permissions::approve(
                    &s,
                    &r.request_id,
                    key_id,
                    r.credential.as_deref(),
                    to_requester,
                )
                .await?;
                Ok(json!({
                    "requestId": r.request_id,
                    "status": "approved",
                    "delivered": a.delivered,
                    "credentialTo": a.credential_to,
                    "result": a.result,
                }))
            }
            "reject" => {
                let delivered = permissions::reject(&s, &r.request_id).await?;
                Ok(json!({
                    "requestId": r.request_id,
                    "status": "rejected",
                    "delivered": delivered,
                }))
            }
            _ => Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                "decision must be `approve` or `reject`",
            )),
        }
    }
    .await;
    let detail = format!("request={} decision={}", r.request_id, r.decision);
    let audit = Audited::new(&caller.actor, "ResolvePermissionRequest")
        .key_id(r.key_id.as_deref())
        .detail(detail.as_str());
    Ok(Json(s.audited(audit, AuditMode::Durable, res).await?))
}
