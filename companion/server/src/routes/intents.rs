//! The intent API, an adapter of [`crate::service::intents`]: `POST /agent/intents` and
//! `GET /agent/intents/{userOpHash}` (Bearer agent credential), and the owner's listing
//! `/kms/list-agent-intents` (API key).
//!
//! `POST` parses the calls and the `Idempotency-Key`, hands them to the
//! [`IntentPipeline`], records the outcome in the audit log and answers 202 with the intent,
//! or the pipeline's refusal (403 with a policy code and what remains, 422
//! `idempotency_key_reused`, 502 `bundler_unavailable` with the signed operation kept, …).
//!
//! `GET /agent/intents/{userOpHash}` has a rate limit per agent of its own
//! (`--agent-read-rate-limit`) and looks an open intent up on chain at most once per
//! `--intent-poll-secs`; in between, and once the intent is settled, the database answers.
//!
//! The 202 answer carries a `Server-Timing` header (W3C Server Timing) with the time of each
//! phase: `auth` (credential), `queue` (agent record, this agent's lock, idempotency),
//! `nonce` (EntryPoint nonce, waiting for the agent's previous operation), `policy` (intents in
//! flight and the on-chain session), `prepare` (fees, gas estimate, build, userOpHash), `sign`
//! (the TA), `record` (the signature's audit event, committed per `--audit-durability`, then the
//! intent row), `submit` (bundler) and `total`, in milliseconds.

use std::sync::Arc;

use alloy::primitives::{Address, Bytes, B256, U256};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::Json;
use kms_chain::account::Call;
use kms_chain::bundler::UserOperationReceipt;
use kms_db::Intent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::audit::{AuditMode, Audited};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::{checksummed, hex_bytes, hex_fixed, uint256, Agent, JsonBody};
use crate::ops;
use crate::service::intents::{IntentPipeline, Phases, Submission};
use crate::state::AppState;

/// Most calls in one intent.
pub const MAX_CALLS: usize = 16;
/// Longest `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;
/// One call of an intent.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntentCall {
    /// The address called (20 bytes hex).
    pub to: String,
    /// Native value in wei (number, decimal string or `0x` hex) [default: 0].
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub value: Option<Value>,
    /// Call data hex [default: empty].
    #[serde(default)]
    pub data: Option<String>,
}

/// `POST /agent/intents`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntentRequest {
    /// The agent key id; optional (the credential names it), must match when given.
    #[serde(default)]
    pub key_id: Option<String>,
    /// The smart account to act from: one where the agent has an active session [default: the
    /// account of its one active session]. Required when the agent has active sessions on
    /// several accounts (else 422 `account_required`, `details.accounts` listing them). An
    /// account without an active session of the agent is refused (403 `no_session`).
    #[serde(default)]
    pub account: Option<String>,
    /// The calls, in order (on `AgentAccount` one is `execute`, several `executeBatch`; on an
    /// ERC-7579 account ERC-7579 `execute` in single or batch mode).
    pub calls: Vec<IntentCall>,
}

/// An intent and what became of it.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntentResponse {
    /// The UserOperation's hash.
    pub user_op_hash: String,
    /// The agent key id.
    pub key_id: String,
    /// The account making the calls.
    pub account: Option<String>,
    /// Open: `signed` (recorded; not yet known to be with the bundler, re-submitted as is) or
    /// `pending` (with the bundler). Final, each with `evidence`: `included` (executed
    /// successfully), `failed` (cannot execute: execution reverted, or the bundler refused the
    /// operation in validation), `replaced` (another operation used its nonce), `dropped` (its
    /// validity ended before inclusion), `cancelled` (its agent or session was revoked before it
    /// reached the chain). Only `included` moved anything; after any other final status the same
    /// calls may be submitted again as a new intent.
    pub status: String,
    /// Why it has its status: `recorded`, `bundler_unreachable`, `bundler_answer_unusable`,
    /// `nonce_conflict` (open); `accepted`, `already_known`, `resubmitted`,
    /// `revoked_in_mempool` (pending); `receipt`, `entry_point_event` (included);
    /// `execution_reverted`, `bundler_rejected` (failed); `nonce_passed` (replaced); `expired`
    /// (dropped); `agent_revoked`, `session_revoked` (cancelled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// What showed the status (`source`: `bundlerReceipt`, `entryPointEvent`, `entryPointNonce`
    /// with the operation that used the nonce, `bundlerRefusal` with the bundler's answer and
    /// what was checked before, `bundlerAnswer`, `agentRevoked`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub evidence: Option<Value>,
    /// The operation's nonce (`0x` hex).
    pub nonce: Option<String>,
    /// Total native value of the calls (decimal wei).
    pub value: Option<String>,
    /// The calls.
    #[schema(value_type = Option<Object>)]
    pub calls: Option<Value>,
    /// The bundle transaction, once included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_hash: Option<String>,
    /// Its block, once included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_number: Option<String>,
    /// Whether the execution succeeded, once included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    /// What the operation paid (wei), once included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_gas_cost: Option<String>,
    /// Gas used, once included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_gas_used: Option<String>,
    /// Revert data of a failed execution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why it did not (or will not) execute, in words (failed, replaced, dropped, cancelled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Recorded (unix seconds).
    pub created_at: i64,
    /// Last change (unix seconds).
    pub updated_at: i64,
    /// When it reached its final status (unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<i64>,
}

impl From<&Intent> for IntentResponse {
    fn from(i: &Intent) -> Self {
        let receipt: Option<UserOperationReceipt> = i
            .receipt_json
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok());
        IntentResponse {
            user_op_hash: i.user_op_hash.clone(),
            key_id: i.key_id.clone(),
            account: i.account.map(|a| a.to_checksum(None)),
            status: i.status.to_string(),
            status_reason: i.status_reason.map(|r| r.to_string()),
            evidence: i
                .evidence_json
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok())
                .map(checksummed),
            nonce: i.nonce.map(|n| format!("{n:#x}")),
            value: i.value_wei.map(|v| v.to_string()),
            calls: i
                .calls_json
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok())
                .map(checksummed),
            transaction_hash: i.tx_hash.clone(),
            block_number: receipt.as_ref().map(|r| r.receipt.block_number.to_string()),
            success: receipt.as_ref().map(|r| r.success),
            actual_gas_cost: receipt.as_ref().map(|r| r.actual_gas_cost.to_string()),
            actual_gas_used: receipt.as_ref().map(|r| r.actual_gas_used.to_string()),
            reason: receipt
                .as_ref()
                .and_then(|r| r.reason.as_ref())
                .filter(|r| !r.is_empty())
                .map(|r| r.to_string()),
            error: i.error.clone(),
            created_at: i.created_at,
            updated_at: i.updated_at,
            settled_at: i.settled_at,
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let v = v.to_str().unwrap_or("");
    if v.is_empty() || v.len() > MAX_IDEMPOTENCY_KEY || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidIdempotencyKey,
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ));
    }
    Ok(Some(v.to_owned()))
}

fn parse_calls(calls: &[IntentCall]) -> Result<Vec<Call>, ApiError> {
    if calls.is_empty() {
        return Err(ApiError::unprocessable(
            ErrorCode::NoCalls,
            "calls must not be empty",
        ));
    }
    if calls.len() > MAX_CALLS {
        return Err(ApiError::unprocessable(
            ErrorCode::TooManyCalls,
            format!("at most {MAX_CALLS} calls per intent"),
        ));
    }
    calls
        .iter()
        .map(|c| {
            Ok(Call::new(
                Address::from(hex_fixed::<20>("calls[].to", &c.to)?),
                match &c.value {
                    Some(v) => U256::from_be_bytes(uint256("calls[].value", v)?),
                    None => U256::ZERO,
                },
                Bytes::from(match &c.data {
                    Some(d) => hex_bytes("calls[].data", d)?,
                    None => Vec::new(),
                }),
            ))
        })
        .collect()
}

/// Submit an intent: pre-check, build, TA signature, bundler (Bearer agent credential).
#[utoipa::path(post, path = "/agent/intents", tag = "intents", request_body = IntentRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request return the first result")),
    responses((status = 202, body = IntentResponse, headers(("Server-Timing" = String,
            description = "Milliseconds per phase: auth, queue, nonce, policy, prepare, sign, record, submit, total"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "Policy refusal, with `details` saying what remains: target_not_allowed, selector_not_allowed, over_budget, gas_over_budget, token_over_budget, malformed_token_call, usage_exhausted, session_expired, session_not_yet_valid, session_revoked, no_session (also paymaster_not_allowed, lane_not_allowed when the chain refuses)"),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody, description = "account_required: the agent has sessions on several accounts and the intent names none; bundler_rejected, account_unfunded, no_calls, …"), (status = 429, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "bundler_unavailable: the bundler could not be reached or its answer said nothing about the operation; the signed operation is kept (`details`: `userOpHash`, `status` `signed`, `statusReason`), re-submitted as is and settled with evidence: follow it with GET /agent/intents/{userOpHash}, do not submit the same calls again"),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn submit_intent(
    State(s): State<Arc<AppState>>,
    agent: Agent,
    headers: HeaderMap,
    JsonBody(r): JsonBody<IntentRequest>,
) -> Result<
    (
        StatusCode,
        [(header::HeaderName, HeaderValue); 1],
        Json<IntentResponse>,
    ),
    ApiError,
> {
    let mut phases = Phases::start();
    let chain = s.chain()?;
    agent.require_key_id(&s, r.key_id.as_deref())?;
    let auth = agent.auth;
    s.limits.agent.check(&auth.key_id)?;
    let submission = Submission {
        idempotency_key: idempotency_key(&headers)?,
        calls: parse_calls(&r.calls)?,
        account: r
            .account
            .as_deref()
            .map(|a| hex_fixed::<20>("account", a).map(Address::from))
            .transpose()?,
    };
    phases.end("auth");
    let submitted = IntentPipeline::new(&s, chain)
        .submit(&auth, submission, &mut phases)
        .await;
    let res = submitted.result.map_err(ApiError::from);
    let hash = submitted.user_op_hash.map(|h| format!("{h:#x}"));
    let actor = format!("agent:{}", auth.key_id);
    // The signature's own event was committed before the operation left (see the pipeline);
    // this one records the submission's outcome. The operation is with the bundler already: a
    // failure to record it is logged (by the writer, and counted as lost), not answered.
    let intent = s
        .audited(
            Audited::new(&actor, "SubmitIntent")
                .key_id(auth.key_id.as_str())
                .user_op_hash(hash.as_deref()),
            AuditMode::AfterRelease,
            res,
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        [(
            header::HeaderName::from_static("server-timing"),
            phases.header(),
        )],
        Json(IntentResponse::from(&intent)),
    ))
}

/// An intent's status and receipt (Bearer credential of the agent that submitted it).
#[utoipa::path(get, path = "/agent/intents/{userOpHash}", tag = "intents",
    params(("userOpHash" = String, Path, description = "The intent's userOpHash")),
    responses((status = 200, body = IntentResponse, description = "The intent: open (`signed`, `pending`) or final (`included`, `failed`, `replaced`, `dropped`, `cancelled`), with `statusReason` and `evidence`"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_intent(
    State(s): State<Arc<AppState>>,
    agent: Agent,
    Path(user_op_hash): Path<String>,
) -> Result<Json<IntentResponse>, ApiError> {
    let chain = s.chain()?;
    s.limits.agent_reads.check(&agent.auth.key_id)?;
    let hash = B256::from(hex_fixed::<32>("userOpHash", &user_op_hash)?);
    let intent = IntentPipeline::new(&s, chain)
        .status(&agent.auth, hash)
        .await?;
    Ok(Json(IntentResponse::from(&intent)))
}

// ------------------------------------------------------------ listing

/// `/kms/list-agent-intents`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListAgentIntentsRequest {
    /// Agent key id `"{wallet}:{index}"`.
    pub key_id: String,
    /// How many, newest first, 1..=100 [default: 20].
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One intent.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListedIntent {
    /// The UserOperation hash.
    pub user_op_hash: String,
    /// `signed` or `pending` (open); `included`, `failed`, `dropped`, `replaced` or `cancelled`
    /// (final).
    pub status: String,
    /// Why it has its status (e.g. `receipt`, `nonce_passed`, `agent_revoked`).
    pub status_reason: Option<String>,
    /// What showed the status (the receipt or EntryPoint event, the bundler's answer, the nonce
    /// seen and the operation that used it, …).
    #[schema(value_type = Option<Object>)]
    pub evidence: Option<Value>,
    /// When it reached a final status (unix seconds).
    pub settled_at: Option<i64>,
    /// The smart account.
    pub account: Option<String>,
    /// Chain id.
    pub chain_id: Option<i64>,
    /// The calls the agent asked for.
    #[schema(value_type = Option<Object>)]
    pub calls: Option<Value>,
    /// The bundle transaction, once included.
    pub transaction_hash: Option<String>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Submitted (unix seconds).
    pub created_at: i64,
    /// Last status change (unix seconds).
    pub updated_at: i64,
}

/// `/kms/list-agent-intents` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListAgentIntentsResponse {
    /// The agent key.
    pub key_id: String,
    /// Its most recent intents, newest first.
    pub intents: Vec<ListedIntent>,
}

/// An agent's recent intents and their status (read-only).
#[utoipa::path(post, path = "/kms/list-agent-intents", tag = "agent", request_body = ListAgentIntentsRequest,
    responses((status = 200, body = ListAgentIntentsResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_agent_intents(
    State(s): State<Arc<AppState>>,
    JsonBody(r): JsonBody<ListAgentIntentsRequest>,
) -> Result<Json<ListAgentIntentsResponse>, ApiError> {
    let (wallet, index) = ops::agent_key_id(&r.key_id)?;
    let limit = r.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidLimit,
            "limit must be between 1 and 100",
        ));
    }
    let key_id = kms_proto::jwt::key_id(&wallet, index);
    if s.db
        .get_agent(&wallet.to_uuid_string(), index)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(
            ErrorCode::AgentNotFound,
            "unknown agent key",
        ));
    }
    let rows = s.db.recent_intents_of(&key_id, limit).await?;
    Ok(Json(ListAgentIntentsResponse {
        key_id,
        intents: rows
            .into_iter()
            .map(|i| ListedIntent {
                calls: i
                    .calls_json
                    .as_deref()
                    .and_then(|c| serde_json::from_str(c).ok())
                    .map(checksummed),
                user_op_hash: i.user_op_hash,
                status: i.status.to_string(),
                status_reason: i.status_reason.map(|r| r.to_string()),
                evidence: i
                    .evidence_json
                    .as_deref()
                    .and_then(|e| serde_json::from_str(e).ok())
                    .map(checksummed),
                settled_at: i.settled_at,
                account: i.account.map(|a| a.to_checksum(None)),
                chain_id: i.chain_id,
                transaction_hash: i.tx_hash,
                error: i.error,
                created_at: i.created_at,
                updated_at: i.updated_at,
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_are_parsed_strictly() {
        let ok = parse_calls(&[IntentCall {
            to: "0x1111111111111111111111111111111111111111".into(),
            value: Some(json!("1000")),
            data: Some("0xabcd".into()),
        }])
        .unwrap();
        assert_eq!(ok[0].value, U256::from(1000));
        assert_eq!(ok[0].data.len(), 2);
        assert_eq!(parse_calls(&[]).unwrap_err().code(), "no_calls");
        let short = IntentCall {
            to: "0x11".into(),
            value: None,
            data: None,
        };
        assert_eq!(
            parse_calls(&[short]).unwrap_err().status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let bad_hex = IntentCall {
            to: "0xzz".into(),
            value: None,
            data: None,
        };
        assert_eq!(
            parse_calls(&[bad_hex]).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        let many: Vec<IntentCall> = (0..=MAX_CALLS)
            .map(|_| IntentCall {
                to: "0x1111111111111111111111111111111111111111".into(),
                value: None,
                data: None,
            })
            .collect();
        assert_eq!(parse_calls(&many).unwrap_err().code(), "too_many_calls");
    }

    #[test]
    fn idempotency_keys_are_checked() {
        let mut h = HeaderMap::new();
        assert_eq!(idempotency_key(&h).unwrap(), None);
        h.insert("idempotency-key", "abc-123".parse().unwrap());
        assert_eq!(idempotency_key(&h).unwrap().as_deref(), Some("abc-123"));
        h.insert("idempotency-key", "a b".parse().unwrap());
        assert!(idempotency_key(&h).is_err());
        h.insert("idempotency-key", "x".repeat(129).parse().unwrap());
        assert!(idempotency_key(&h).is_err());
    }
}
