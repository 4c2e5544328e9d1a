//! The intent API: `POST /agent/intents` and `GET /agent/intents/{userOpHash}` (Bearer agent
//! credential).
//!
//! An intent is a list of calls the agent wants its session's account to make. The companion
//! checks it against the on-chain session — every rule of `SessionKeyValidator`: targets and
//! their functions, token caps, the value cap, the usage limit, the validity window (with the
//! bundler's margin), each budget net of what this agent's intents still in flight will charge —
//! and refuses what the chain would refuse (403 with a reason code and what remains); otherwise
//! it builds the UserOperation (the agent's own nonce key, gas estimated with the 106-byte stub),
//! checks its maximum gas cost against the gas budget, has the TA sign it with the
//! presented credential (`SignAgentUserOp`: the TA checks the JWT), records it, submits it, and
//! answers 202 with the userOpHash. One agent's intents are built one after another (each waits
//! for the previous one's inclusion); different agents proceed in parallel.
//!
//! `Idempotency-Key`: a retried POST with the same key returns the recorded intent instead of
//! submitting again; the same key with different calls is refused (422 `idempotency_key_reused`,
//! naming the key and the recorded intent). Nothing is ever re-built for an intent: a transient bundler failure leaves
//! the signed operation recorded (`signed`), and the background task re-submits exactly it.
//! A bundler's error is judged only on evidence ([`crate::lifecycle`]): "already known" is
//! `pending`, an AA25 is looked up on chain first, an answer that says nothing about the
//! operation (another userOpHash, an unreadable answer) leaves it open, and only a validation
//! refusal of an operation neither on chain nor held by the bundler is `failed`.
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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, Bytes, B256, U256};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::Json;
use kms_chain::account::Call;
use kms_chain::bundler::UserOperationReceipt;
use kms_chain::client::ChainError;
use kms_chain::nonce::NonceKey;
use kms_chain::session::{precheck, InFlight, RefusalCode, SessionSnapshot};
use kms_db::{Intent, IntentReason, IntentStatus, NewIntent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::audit::Event;
use crate::chain::{chain_error, refusal, ChainState};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{checksum_str, checksummed, hex_bytes, hex_fixed, uint256, JsonBody};
use crate::lifecycle;
use crate::ratelimit::ClientAddr;
use crate::routes::agent::{authenticate_agent, AgentAuth};
use crate::state::AppState;
use crate::tee::AgentSigningRequest;

/// Most calls in one intent.
pub const MAX_CALLS: usize = 16;
/// Longest `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;
/// How long the background task leaves a new intent to the request that records it (seconds):
/// the request submits it and schedules what follows; only a request that never got that far
/// (a crash) leaves it to the task.
pub const RESUBMIT_AFTER_SECS: i64 = 30;

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
    /// account of its most recently activated session]. An account without an active session
    /// of the agent is refused (403 `no_session`).
    #[serde(default)]
    pub account: Option<String>,
    /// The calls, in order (one: `execute`; several: `executeBatch`).
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
            account: i.account.as_deref().map(checksum_str),
            status: i.status.clone(),
            status_reason: i.status_reason.clone(),
            evidence: i
                .evidence_json
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok())
                .map(checksummed),
            nonce: i.nonce.clone(),
            value: i.value_wei.clone(),
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
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ));
    }
    Ok(Some(v.to_owned()))
}

fn parse_calls(calls: &[IntentCall]) -> Result<Vec<Call>, ApiError> {
    if calls.is_empty() {
        return Err(ApiError::unprocessable(
            "no_calls",
            "calls must not be empty",
        ));
    }
    if calls.len() > MAX_CALLS {
        return Err(ApiError::unprocessable(
            "too_many_calls",
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

/// When the agent has no session on `account` because the account checks sessions with another
/// validator than the companion's (an account of an earlier factory: its sessions predate the
/// current session rules and are never widened to them), a `no_session` refusal that says so.
async fn outdated_account(
    chain: &ChainState,
    account: Address,
    agent: Address,
) -> Result<(), ApiError> {
    let validator = chain.client.validator();
    match chain.client.node().account_validator(account).await {
        Ok(Some(used)) if used != validator => Err(ApiError::detailed(
            StatusCode::FORBIDDEN,
            "no_session",
            format!(
                "account {account} checks sessions with validator {used}, not this companion's \
                 {validator}: its sessions were granted under earlier rules and are not used; \
                 grant the agent a session on an account of the current factory"
            ),
            json!({"account": account, "agentAddress": agent, "accountValidator": used,
                "validator": validator}),
        )),
        _ => Ok(()),
    }
}

/// A failed build of the operation as HTTP. The bundler's gas estimation runs validation, which
/// charges the session for the simulated operation: when even that exceeds the gas budget left,
/// the agent gets the pre-check's `gas_over_budget` with what remains (the real operation's
/// maximum cost is unknown without an estimate, so `maxGasCost` is null).
fn estimate_error(
    e: ChainError,
    snapshot: &SessionSnapshot,
    in_flight: &InFlight,
    account: Address,
) -> ApiError {
    let gas_refusal = match &e {
        ChainError::Bundler(b) => {
            b.rejection()
                .and_then(|r| r.revert)
                .and_then(|r| r.refusal_code())
                == Some(RefusalCode::GasOverBudget)
        }
        _ => false,
    };
    if !gas_refusal {
        return chain_error(e, Some(account));
    }
    let remaining = snapshot.session.remaining_gas();
    let available = remaining.saturating_sub(in_flight.gas);
    ApiError::detailed(
        StatusCode::FORBIDDEN,
        RefusalCode::GasOverBudget.as_str(),
        format!(
            "only {available} wei of the gas budget are available (left {remaining}, in flight {}): \
             less than even the bundler's gas estimation charges, so no operation of this agent \
             can pass until the owner grants more gas",
            in_flight.gas
        ),
        json!({
            "maxGasCost": null,
            "available": available.to_string(),
            "remainingGasBudget": remaining.to_string(),
            "inFlight": in_flight.gas.to_string(),
        }),
    )
}

/// What the open intents of one agent will charge its session when they validate, for an
/// operation with `next` (the EntryPoint's next nonce of its lane): those of that lane whose
/// sequence the chain has not passed, and, conservatively, every open one of its other lanes
/// (other budget periods: their sequences are not compared) — their value, maximum gas cost,
/// count and token amounts; the value of those in `next`'s lane also counts against its
/// period's cap. An unreadable field counts as zero (rows recorded before the field existed).
fn in_flight(open: &[Intent], next: U256) -> InFlight {
    let (lane, seq) = NonceKey::split(next);
    let mut total = InFlight::default();
    for i in open {
        let Some((key, open_seq)) = i
            .nonce
            .as_deref()
            .and_then(|n| n.parse::<U256>().ok())
            .map(NonceKey::split)
        else {
            continue;
        };
        let same_lane = key == lane;
        if same_lane && open_seq < seq {
            continue;
        }
        let wei = |v: Option<&str>| v.and_then(|v| v.parse::<U256>().ok()).unwrap_or_default();
        let tokens: BTreeMap<Address, U256> = i
            .token_amounts_json
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        total.add(
            wei(i.value_wei.as_deref()),
            wei(i.max_gas_cost_wei.as_deref()),
            &tokens,
            same_lane,
        );
    }
    total
}

fn calls_json(calls: &[Call]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| json!({"to": c.to, "value": c.value.to_string(), "data": c.data}))
            .collect(),
    )
}

/// The phases of one request and their durations, for the `Server-Timing` header.
#[derive(Debug)]
struct Phases {
    start: Instant,
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn start() -> Self {
        let now = Instant::now();
        Phases {
            start: now,
            last: now,
            done: Vec::with_capacity(9),
        }
    }

    /// Ends phase `name` (which began where the previous one ended).
    fn end(&mut self, name: &'static str) {
        let now = Instant::now();
        self.done.push((name, now - self.last));
        self.last = now;
    }

    /// `name;dur=<ms>, ...` with the total last.
    fn header(&self) -> HeaderValue {
        let mut v = String::new();
        let total = self.last - self.start;
        for (name, d) in self.done.iter().chain([&("total", total)]) {
            if !v.is_empty() {
                v.push_str(", ");
            }
            let _ = write!(v, "{name};dur={:.3}", d.as_secs_f64() * 1000.0);
        }
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("total"))
    }
}

fn hash_hex(h: B256) -> String {
    format!("{h:#x}")
}

/// Submit an intent: pre-check, build, TA signature, bundler (Bearer agent credential).
#[utoipa::path(post, path = "/agent/intents", tag = "intents", request_body = IntentRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request return the first result")),
    responses((status = 202, body = IntentResponse, headers(("Server-Timing" = String,
            description = "Milliseconds per phase: auth, queue, nonce, policy, prepare, sign, record, submit, total"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "Policy refusal, with `details` saying what remains: target_not_allowed, selector_not_allowed, over_budget, gas_over_budget, token_over_budget, malformed_token_call, usage_exhausted, session_expired, session_not_yet_valid, session_revoked, no_session (also paymaster_not_allowed, lane_not_allowed when the chain refuses)"),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "bundler_unavailable: the bundler could not be reached or its answer said nothing about the operation; the signed operation is kept (`details`: `userOpHash`, `status` `signed`, `statusReason`), re-submitted as is and settled with evidence: follow it with GET /agent/intents/{userOpHash}, do not submit the same calls again"),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn submit_intent(
    State(s): State<Arc<AppState>>,
    client: ClientAddr,
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
    let auth = authenticate_agent(&s, &headers, r.key_id.as_deref(), client, true).await?;
    let idem = idempotency_key(&headers)?;
    let calls = parse_calls(&r.calls)?;
    phases.end("auth");
    let mut hash = None;
    let res = submit_checked(
        &s,
        chain,
        &auth,
        r.account.as_deref(),
        idem,
        calls,
        &mut hash,
        &mut phases,
    )
    .await;
    let outcome = crate::routes::outcome(&res);
    let actor = format!("agent:{}", auth.key_id);
    let hash_hex = hash.map(hash_hex);
    let event = Event {
        actor: &actor,
        action: "SubmitIntent",
        key_id: Some(&auth.key_id),
        outcome: &outcome,
        user_op_hash: hash_hex.as_deref(),
        detail: None,
    };
    if res.is_ok() {
        // The signature's own event was committed before the operation left (see
        // `submit_checked`); this one records the submission's outcome, waited for like it.
        // The operation is with the bundler already: a failure here is logged (by the writer,
        // and counted as lost), not answered.
        let _ = s.audit.record_for_release(event).await;
    } else {
        s.audit.record(event);
    }
    let intent = res?;
    Ok((
        StatusCode::ACCEPTED,
        [(
            header::HeaderName::from_static("server-timing"),
            phases.header(),
        )],
        Json(IntentResponse::from(&intent)),
    ))
}

#[allow(clippy::too_many_arguments)]
async fn submit_checked(
    s: &AppState,
    chain: &ChainState,
    auth: &AgentAuth,
    requested_account: Option<&str>,
    idem: Option<String>,
    calls: Vec<Call>,
    hash_out: &mut Option<B256>,
    phases: &mut Phases,
) -> Result<Intent, ApiError> {
    let wallet_str = auth.wallet.to_uuid_string();
    let agent = Address::from(hex_fixed::<20>("agent address", &auth.agent_address)?);
    // The account of one of the agent's active sessions (the one asked for, or the most
    // recently activated), else 403 no_session.
    let account = crate::routes::sessions::intent_account(
        s,
        &wallet_str,
        auth.index,
        agent,
        requested_account,
    )
    .await?;

    // One intent of this agent at a time (in any of its period lanes), from the idempotency
    // check to the submission.
    let mut guard = chain.nonces.lock(account, NonceKey::for_agent(agent)).await;
    if let Some(k) = &idem {
        if let Some(existing) = s.db.find_intent_by_idempotency_key(&auth.key_id, k).await? {
            *hash_out = existing.user_op_hash.parse().ok();
            same_calls(&existing, &calls, k)?;
            return Ok(existing);
        }
    }
    phases.end("queue");
    // Once the agent's previous operation is included (or passed), the session read sees what it
    // spent; the operation names the lane of the period containing now (bundlers check windows
    // against their clock).
    chain
        .client
        .settle_in_flight(&mut guard, chain.receipt_wait)
        .await
        .map_err(|e| chain_error(e, Some(account)))?;
    let now = u64::try_from(kms_db::now_secs()).unwrap_or(0);
    let snapshot = chain
        .client
        .read_session_for_calls(account, agent, &calls, now)
        .await
        .map_err(|e| chain_error(e, Some(account)))?;
    let lane = match u32::try_from(snapshot.period_index) {
        Ok(p) if snapshot.session.period != 0 => NonceKey::for_agent_period(agent, p),
        _ => NonceKey::for_agent(agent),
    };
    let nonce = chain
        .client
        .nonce(account, lane)
        .await
        .map_err(|e| chain_error(e, Some(account)))?;
    phases.end("nonce");

    // What this agent's intents still in flight (recorded, not settled, not passed by the
    // chain's nonce) will charge the session when they validate.
    let in_flight = in_flight(&s.db.open_intents_of(&auth.key_id).await?, nonce);
    if snapshot.session.epoch == 0 {
        outdated_account(chain, account, agent).await?;
    }
    precheck(&snapshot, &calls, &in_flight, None, now, chain.margins).map_err(|r| refusal(&r))?;
    phases.end("policy");

    let prepared = chain
        .client
        .prepare_agent_op(account, agent, calls.clone(), Some(nonce))
        .await
        .map_err(|e| estimate_error(e, &snapshot, &in_flight, account))?;
    // The gas rule needs the estimate: the operation's maximum cost is what the validator charges.
    let max_gas_cost = prepared.op.max_gas_cost();
    let charges = precheck(
        &snapshot,
        &calls,
        &in_flight,
        Some(max_gas_cost),
        now,
        chain.margins,
    )
    .map_err(|r| refusal(&r))?;
    let user_op_hash = prepared.user_op_hash;
    *hash_out = Some(user_op_hash);
    phases.end("prepare");
    let (signature, _) = s
        .tee
        .sign_agent_user_op(&AgentSigningRequest {
            wallet_id: auth.wallet,
            agent_index: auth.index,
            jwt: &auth.jwt,
            user_op_hash,
            account,
            expected_key: Some(agent),
        })
        .await?;
    s.metrics.count_signature("agent_intent");
    let op = prepared.signed(signature);
    phases.end("sign");

    let entry_point = chain.client.entry_point();
    let hash_str = hash_hex(user_op_hash);
    // The signature's audit event is committed (per --audit-durability) before the signed
    // operation is recorded or submitted; if it cannot be, nothing leaves (503
    // audit_unavailable) and the agent may retry.
    let actor = format!("agent:{}", auth.key_id);
    s.audit_release(Event {
        actor: &actor,
        action: "SignAgentUserOp",
        key_id: Some(&auth.key_id),
        outcome: "ok",
        user_op_hash: Some(&hash_str),
        detail: Some("intent"),
    })
    .await?;
    s.db.insert_intent(&NewIntent {
        user_op_hash: hash_str.clone(),
        key_id: auth.key_id.clone(),
        wallet_id: Some(wallet_str),
        agent_index: Some(auth.index),
        account: Some(account.to_string().to_ascii_lowercase()),
        status: IntentStatus::Signed,
        chain_id: i64::try_from(chain.client.chain_id()).ok(),
        entry_point: Some(entry_point.address.to_string().to_ascii_lowercase()),
        calls_json: Some(calls_json(&calls).to_string()),
        user_op_json: Some(
            serde_json::to_string(&op.to_rpc()).map_err(|e| ApiError::internal(e.to_string()))?,
        ),
        nonce: Some(format!("{nonce:#x}")),
        value_wei: Some(charges.value.to_string()),
        max_gas_cost_wei: Some(max_gas_cost.to_string()),
        token_amounts_json: Some(
            serde_json::to_string(&charges.tokens)
                .map_err(|e| ApiError::internal(e.to_string()))?,
        ),
        idempotency_key: idem,
        // The background task leaves it to this request until then (a crash in between).
        next_check_at: kms_db::now_secs() + RESUBMIT_AFTER_SECS,
        first_block: i64::try_from(snapshot.block_number).ok(),
        now: kms_db::now_secs(),
    })
    .await?;
    phases.end("record");

    let recorded =
        s.db.get_intent(&hash_str)
            .await?
            .ok_or_else(|| ApiError::internal("intent vanished"))?;
    match chain.client.submit(&op).await {
        Ok(sub) => {
            guard.submitted(nonce, user_op_hash);
            let reason = if sub.already_known {
                IntentReason::AlreadyKnown
            } else {
                IntentReason::Accepted
            };
            lifecycle::accepted(s, &recorded, Some(&sub), reason, kms_db::now_secs()).await?;
        }
        Err(e) => {
            // Judged only on evidence (lookups first): see `lifecycle::after_send_error`.
            let (status, reason) =
                lifecycle::after_send_error(s, chain, &recorded, &op, user_op_hash, &e).await?;
            if status.is_open() {
                // It may be with the bundler: the next intent of this agent waits for it.
                guard.submitted(nonce, user_op_hash);
            }
            if status == IntentStatus::Included || status == IntentStatus::Pending {
                tracing::info!(user_op_hash = %hash_str, %status, %reason, error = %e,
                    "the bundler's error turned out not to be a refusal of the operation");
            } else {
                return Err(submit_error(e, account, &hash_str, status, reason));
            }
        }
    }
    let intent =
        s.db.get_intent(&hash_str)
            .await?
            .ok_or_else(|| ApiError::internal("intent vanished"))?;
    phases.end("submit");
    Ok(intent)
}

/// A submission that did not end with the bundler holding the operation, as HTTP: a verdict on
/// the operation (the intent `failed`, `dropped`, `cancelled` or `replaced`, or kept open after
/// an AA25 while the chain has not passed its nonce) is the bundler's refusal as usual (403 with
/// a policy code, 422 `bundler_rejected` / `account_unfunded`); no verdict (unreachable
/// bundler, an answer that says nothing about the operation) is 502 `bundler_unavailable`, the
/// signed operation kept. `details` always carry `userOpHash`, `status` and `statusReason`.
fn submit_error(
    e: ChainError,
    account: Address,
    hash: &str,
    status: IntentStatus,
    reason: IntentReason,
) -> ApiError {
    let err = match reason {
        IntentReason::BundlerUnreachable | IntentReason::BundlerAnswerUnusable => {
            ApiError::detailed(
                StatusCode::BAD_GATEWAY,
                "bundler_unavailable",
                format!(
                    "the bundler could not be reached or its answer could not be used; the \
                     signed operation is kept, re-submitted as is and looked up until it settles \
                     (GET /agent/intents/{hash}): {e}"
                ),
                json!({}),
            )
        }
        _ => chain_error(e, Some(account)),
    };
    match err {
        ApiError::Detailed {
            status: http,
            code,
            message,
            mut details,
        } => {
            if let Some(d) = details.as_object_mut() {
                d.insert("userOpHash".into(), json!(hash));
                d.insert("status".into(), json!(status.as_str()));
                d.insert("statusReason".into(), json!(reason.as_str()));
            }
            ApiError::Detailed {
                status: http,
                code,
                message,
                details,
            }
        }
        other => other,
    }
}

/// Refuses a retry under `key` whose calls are not those of the intent recorded under it (the
/// recorded operation's callData is what these calls encode to): a reused key must not make a
/// different request look accepted.
fn same_calls(existing: &Intent, calls: &[Call], key: &str) -> Result<(), ApiError> {
    let recorded = lifecycle::stored_op(existing)?.call_data;
    let asked = kms_chain::account::encode_calls(calls)
        .map_err(|e| ApiError::unprocessable("no_calls", e.to_string()))?;
    if recorded == asked {
        return Ok(());
    }
    Err(ApiError::detailed(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        format!(
            "Idempotency-Key {key:?} was used for another intent ({}) with different calls; use \
             a new key for a new intent",
            existing.user_op_hash
        ),
        json!({"idempotencyKey": key, "userOpHash": existing.user_op_hash}),
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
    client: ClientAddr,
    headers: HeaderMap,
    Path(user_op_hash): Path<String>,
) -> Result<Json<IntentResponse>, ApiError> {
    let chain = s.chain()?;
    let auth = authenticate_agent(&s, &headers, None, client, false).await?;
    s.limits.agent_reads.check(&auth.key_id)?;
    let hash = B256::from(hex_fixed::<32>("userOpHash", &user_op_hash)?);
    let not_found = || {
        ApiError::not_found(
            "intent_not_found",
            "no intent of this agent has this userOpHash",
        )
    };
    let intent =
        s.db.get_intent(&hash_hex(hash))
            .await?
            .filter(|i| i.key_id == auth.key_id)
            .ok_or_else(not_found)?;
    // An open intent is looked up on chain at most once per interval; otherwise (and once
    // settled) the database answers.
    let intent = if intent.is_open() && chain.intent_checks.due(hash) {
        lifecycle::refresh(&s, chain, intent).await?
    } else {
        intent
    };
    Ok(Json(IntentResponse::from(&intent)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_lists_each_phase_then_the_total() {
        let mut p = Phases::start();
        std::thread::sleep(Duration::from_millis(2));
        p.end("auth");
        p.end("sign");
        let h = p.header();
        let parts: Vec<(String, f64)> = h
            .to_str()
            .unwrap()
            .split(", ")
            .map(|x| {
                let (n, d) = x.split_once(";dur=").unwrap();
                (n.to_owned(), d.parse().unwrap())
            })
            .collect();
        let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["auth", "sign", "total"]);
        assert!(parts[0].1 >= 2.0, "{h:?}");
        assert!((parts[2].1 - parts[0].1 - parts[1].1).abs() < 0.01, "{h:?}");
    }

    fn open(nonce: &str, value: &str, gas: Option<&str>, tokens: Option<&str>) -> Intent {
        Intent {
            user_op_hash: "0x01".into(),
            key_id: "w:0".into(),
            wallet_id: None,
            agent_index: None,
            account: None,
            status: "pending".into(),
            chain_id: None,
            entry_point: None,
            calls_json: None,
            user_op_json: None,
            tx_hash: None,
            error: None,
            created_at: 0,
            updated_at: 0,
            nonce: Some(nonce.into()),
            value_wei: Some(value.into()),
            idempotency_key: None,
            receipt_json: None,
            max_gas_cost_wei: gas.map(str::to_owned),
            token_amounts_json: tokens.map(str::to_owned),
            status_reason: None,
            evidence_json: None,
            next_check_at: 0,
            idle_checks: 0,
            settled_at: None,
            first_block: None,
        }
    }

    #[test]
    fn in_flight_sums_what_the_chain_has_not_passed() {
        let agent = Address::repeat_byte(7);
        let key = NonceKey::for_agent(agent);
        let token = "0x3333333333333333333333333333333333333333";
        let rows = [
            // Passed by the chain's nonce (sequence 4 < 5): not in flight.
            open(&format!("{:#x}", key.nonce(4)), "100", Some("1000"), None),
            open(
                &format!("{:#x}", key.nonce(5)),
                "10",
                Some("700"),
                Some(&format!(r#"{{"{token}":"9"}}"#)),
            ),
            // Recorded before gas and tokens were: counts its value and one operation.
            open(&format!("{:#x}", key.nonce(6)), "1", None, None),
        ];
        let f = in_flight(&rows, key.nonce(5));
        assert_eq!(f.value, U256::from(11));
        assert_eq!(f.period_value, U256::from(11));
        assert_eq!(f.gas, U256::from(700));
        assert_eq!(f.ops, 2);
        assert_eq!(f.tokens[&token.parse::<Address>().unwrap()], U256::from(9));
        assert_eq!(in_flight(&rows, key.nonce(7)), InFlight::default());
        // From another period's lane, every open intent counts (sequences of different lanes
        // are not compared), but none against that period's cap.
        let next_period = NonceKey::for_agent_period(agent, 1);
        let f = in_flight(&rows, next_period.nonce(0));
        assert_eq!((f.value, f.ops), (U256::from(111), 3));
        assert_eq!(f.period_value, U256::ZERO);
        let mut rows = rows.to_vec();
        rows.push(open(
            &format!("{:#x}", next_period.nonce(0)),
            "1000",
            None,
            None,
        ));
        let f = in_flight(&rows, next_period.nonce(0));
        assert_eq!(
            (f.value, f.period_value),
            (U256::from(1111), U256::from(1000))
        );
        assert_eq!(
            in_flight(&rows, next_period.nonce(1)).period_value,
            U256::ZERO
        );
    }

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
