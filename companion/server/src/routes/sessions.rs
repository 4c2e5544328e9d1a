//! `/kms/agent-sessions`: the owner registers an agent key's session on `SessionKeyValidator`
//! (call targets, spend cap, validity window, the operator key as revoker) through a
//! UserOperation from the owner's account, signed by the owner key in the TA.
//!
//! The ceremony binds the exact operation: `/BeginAuthentication` with Purpose `GrantSession`
//! builds the UserOperation (deploying the account in the same operation if it has no code yet)
//! and keeps it with the ceremony; the WebAuthn challenge commits to `SignMessage` of its
//! userOpHash at the owner path. `/kms/agent-sessions` then checks that the request asks for the
//! same session, has the TA sign exactly that operation, records the grant as a `pending` row of
//! `agent_sessions`, submits it, and waits (bounded) for its inclusion.
//!
//! A grant is one of the agent's sessions only once included with a successful execution
//! (`active`); a reverted one is `failed` (422 `grant_failed`), one refused by the bundler too.
//! One not included within `--receipt-wait-secs` stays `pending` (202) and the background task
//! ([`grant_tick`]) settles it: `active` when its receipt comes, `failed` when the owner's nonce
//! passed without it or after [`GRANT_DROP_AFTER_SECS`]. A grant on an account where the agent
//! already has a session supersedes it (the validator keeps one per agent and account); one on
//! another account adds a session. A grant that becomes active for an agent revoked in the
//! meantime is revoked on chain at once (the operator's `revokeSession`).

use std::sync::Arc;

use alloy::primitives::{Address, B256, U256};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kms_chain::nonce::NonceKey;
use kms_chain::operator::{owner_sign_body, OperatorSigner};
use kms_chain::session::{parse_selector, SessionGrant, TargetPermission, TokenLimit};
use kms_chain::userop::v0_7::{RpcUserOperation, UserOperation};
use kms_db::{AgentSession, AgentStatus, ChallengeKind, NewSession, SessionStatus};
use kms_proto::authz::AuthorizedBody;
use kms_proto::WalletId;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::audit::Event;
use crate::chain::{bundler_error, chain_error, ChainState};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{checksummed, from_value, hex_fixed, uint128, uint256, JsonBody};
use crate::ops::{agent_key_id, AgentSessionRequest, TargetSpec};
use crate::revocation::{revoke_account, AccountOutcome, AccountRevocation, CompanionChain};
use crate::state::AppState;
use crate::webauthn::{BeginAuthenticationResponse, Purpose};

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

/// A session request resolved against the database and the TA.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GrantPlan {
    wallet_id: WalletId,
    agent_index: u32,
    key_id: String,
    owner: Address,
    salt: U256,
    grant: SessionGrant,
}

impl GrantPlan {
    /// What the ceremony commits to besides the operation (compared at completion).
    fn canonical(&self) -> Value {
        json!({
            "keyId": self.key_id,
            "owner": self.owner,
            "salt": self.salt.to_string(),
            "grant": self.grant,
        })
    }

    fn fields(&self) -> SessionFields {
        let g = &self.grant;
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
}

async fn plan(s: &AppState, r: &AgentSessionRequest) -> Result<GrantPlan, ApiError> {
    let (wallet_id, agent_index) = agent_key_id(&r.key_id)?;
    let key_id = kms_proto::jwt::key_id(&wallet_id, agent_index);
    let wallet_str = wallet_id.to_uuid_string();
    let agent =
        s.db.get_agent(&wallet_str, agent_index)
            .await?
            .ok_or_else(|| ApiError::not_found("agent_not_found", "unknown agent key"))?;
    match agent.status {
        AgentStatus::Active => {}
        AgentStatus::Revoked => {
            return Err(ApiError::Conflict {
                code: "agent_revoked",
                message: "the agent key is revoked; create a new agent".into(),
            })
        }
        AgentStatus::Pending | AgentStatus::Failed => {
            return Err(ApiError::not_found("agent_not_found", "unknown agent key"))
        }
    }
    let agent_address = Address::from(hex_fixed::<20>(
        "agent address",
        agent.agent_address.as_deref().unwrap_or_default(),
    )?);
    let wallet =
        s.db.get_wallet(&wallet_str)
            .await?
            .ok_or_else(|| ApiError::not_found("key_not_found", "key not found"))?;
    let owner = Address::from(hex_fixed::<20>("owner address", &wallet.address)?);
    let salt = match &r.salt {
        Some(v) => U256::from_be_bytes(uint256("salt", v)?),
        None => U256::ZERO,
    };
    let operator = s.operator().await?.address();
    let grant = SessionGrant {
        key: agent_address,
        targets: r
            .targets
            .iter()
            .map(target_permission)
            .collect::<Result<_, _>>()?,
        tokens: r
            .tokens
            .iter()
            .map(|t| {
                Ok(TokenLimit {
                    token: Address::from(hex_fixed::<20>("tokens[].token", &t.token)?),
                    cap: uint128("tokens[].cap", &t.cap)?,
                })
            })
            .collect::<Result<_, ApiError>>()?,
        spend_cap: uint128("spendCap", &r.spend_cap)?,
        gas_cap: uint128("gasCap", &r.gas_cap)?,
        paymaster: r
            .paymaster
            .as_deref()
            .map(|p| hex_fixed::<20>("paymaster", p).map(Address::from))
            .transpose()?,
        max_ops: r.max_ops.unwrap_or(0),
        period: r.period.unwrap_or(0),
        period_cap: match &r.period_cap {
            Some(v) => uint128("periodCap", v)?,
            None => 0,
        },
        valid_after: r.valid_after.unwrap_or(0),
        valid_until: r.valid_until.unwrap_or(0),
        revoker: operator,
    };
    Ok(GrantPlan {
        wallet_id,
        agent_index,
        key_id,
        owner,
        salt,
        grant,
    })
}

/// One `targets` entry of the request as the validator's permission.
fn target_permission(t: &TargetSpec) -> Result<TargetPermission, ApiError> {
    let (target, selectors, any_selector) = match t {
        TargetSpec::Address(a) => (a, &[][..], false),
        TargetSpec::Detailed {
            target,
            selectors,
            any_selector,
        } => (target, &selectors[..], *any_selector),
    };
    Ok(TargetPermission {
        target: Address::from(hex_fixed::<20>("targets[].target", target)?),
        any_selector,
        selectors: selectors
            .iter()
            .map(|s| parse_selector(s).map_err(|e| ApiError::unprocessable("invalid_session", e)))
            .collect::<Result<_, _>>()?,
    })
}

/// `/BeginAuthentication` with Purpose `GrantSession`: builds the owner's operation and starts a
/// ceremony whose challenge commits to signing its userOpHash.
pub async fn begin_grant(
    s: &AppState,
    key_id: Option<&str>,
    payload: Option<Value>,
) -> Result<BeginAuthenticationResponse, ApiError> {
    let chain = s.chain()?;
    let mut payload = match payload {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "Payload must be a JSON object",
            ))
        }
    };
    if let Some(k) = key_id {
        match payload.get("keyId") {
            Some(Value::String(existing)) if existing != k => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "Payload.keyId differs from KeyId",
                ))
            }
            _ => payload["keyId"] = Value::String(k.to_owned()),
        }
    }
    let request: AgentSessionRequest = from_value(payload)?;
    let plan = plan(s, &request).await?;
    let prepared = chain
        .client
        .prepare_grants(plan.owner, plan.salt, std::slice::from_ref(&plan.grant))
        .await
        .map_err(|e| chain_error(e, None))?;
    let account = prepared.op.sender;
    let body = owner_sign_body(plan.wallet_id, prepared.user_op_hash);
    // Everything the owner approves, so that a client can recompute the userOpHash from the
    // operation (EntryPoint, chain id) and show what it does: the account's calls (the grant,
    // decoded too), nonce, gas limits, fees and the most it can cost.
    let summary = checksummed(json!({
        "userOpHash": prepared.user_op_hash,
        "account": account,
        "deploysAccount": prepared.deploys_account,
        "entryPoint": chain.client.entry_point().address,
        "entryPointVersion": chain.client.entry_point().version.to_string(),
        "chainId": chain.client.chain_id(),
        "userOp": prepared.op.to_rpc(),
        "calls": [plan.grant.owner_call(chain.client.validator())],
        "maxGasCost": prepared.op.max_gas_cost().to_string(),
        "session": plan.grant,
    }));
    let metadata = json!({
        "plan": plan.canonical(),
        "userOp": prepared.op.to_rpc(),
        "userOpHash": prepared.user_op_hash,
        "deploysAccount": prepared.deploys_account,
    });
    let mut resp = s
        .begin_authentication(
            &plan.wallet_id,
            Purpose::GrantSession,
            &body.payload_digest(),
            Some(metadata),
        )
        .await?;
    resp.user_operation = Some(summary);
    Ok(resp)
}

/// The operation kept with a `GrantSession` ceremony.
struct StoredGrant {
    op: UserOperation,
    user_op_hash: B256,
    deploys_account: bool,
}

fn stored_grant(
    s: &AppState,
    plan: &GrantPlan,
    metadata: Option<&str>,
) -> Result<StoredGrant, ApiError> {
    let chain = s.chain()?;
    let meta: Value = metadata
        .and_then(|m| serde_json::from_str(m).ok())
        .ok_or_else(|| ApiError::internal("GrantSession ceremony without its operation"))?;
    if meta["plan"] != plan.canonical() {
        return Err(ApiError::forbidden(
            "payload_mismatch",
            "the ceremony was started for a different session: start /BeginAuthentication with \
             exactly this request's fields",
        ));
    }
    let rpc: RpcUserOperation = serde_json::from_value(meta["userOp"].clone())
        .map_err(|e| ApiError::internal(format!("stored operation: {e}")))?;
    let op = UserOperation::try_from(rpc).map_err(|e| ApiError::internal(e.to_string()))?;
    let user_op_hash = chain
        .client
        .entry_point()
        .user_op_hash(&op, chain.client.chain_id())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let stored_hash: Option<B256> = serde_json::from_value(meta["userOpHash"].clone()).ok();
    if stored_hash != Some(user_op_hash) {
        return Err(ApiError::internal(
            "stored operation does not hash to its userOpHash",
        ));
    }
    Ok(StoredGrant {
        op,
        user_op_hash,
        deploys_account: meta["deploysAccount"].as_bool().unwrap_or(false),
    })
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
    let plan = plan(&s, &r).await?;
    let mut user_op_hash = None;
    let res = async {
        let Some(ceremony) = r.web_authn_assertion.as_ref() else {
            return Err(crate::webauthn::ceremony_required(
                Purpose::GrantSession,
                r.passkey_assertion.is_some(),
                "agent keyId",
            ));
        };
        let wallet_str = plan.wallet_id.to_uuid_string();
        let peeked = s
            .db
            .peek_challenge(
                &ceremony.challenge_id,
                ChallengeKind::Authentication,
                Some(&wallet_str),
                Purpose::GrantSession.as_str(),
                kms_db::now_secs(),
            )
            .await??;
        let stored = stored_grant(&s, &plan, peeked.metadata_json.as_deref())?;
        user_op_hash = Some(stored.user_op_hash);
        let body = owner_sign_body(plan.wallet_id, stored.user_op_hash);
        let assertion = s
            .finish_authentication(
                &plan.wallet_id,
                Purpose::GrantSession,
                &body.payload_digest(),
                Some(ceremony),
                false,
                "agent keyId",
            )
            .await?;
        let signature = s
            .tee
            .sign_owner_user_op(plan.wallet_id, stored.user_op_hash, assertion, plan.owner)
            .await?;
        let op = stored.op.clone().with_signature(signature);
        let account = op.sender;
        let g = &plan.grant;
        let addresses: Vec<String> = g
            .targets
            .iter()
            .map(|t| t.target)
            .chain(g.tokens.iter().map(|l| l.token))
            .map(|a| a.to_string())
            .collect();
        let targets_json =
            serde_json::to_string(&addresses).map_err(|e| ApiError::internal(e.to_string()))?;
        let grant_json =
            serde_json::to_string(g).map_err(|e| ApiError::internal(e.to_string()))?;
        let op_json = serde_json::to_string(&op.to_rpc())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let account_str = account.to_string().to_ascii_lowercase();
        let hash_str = format!("{:#x}", stored.user_op_hash);
        let spend_cap = g.spend_cap.to_string();
        let revoker = g.revoker.to_string();
        // Recorded `pending` before it leaves: a grant is one of the agent's sessions only once
        // it is included (below, or the background task), and one that never is replaces
        // nothing.
        let session_id = s
            .db
            .insert_session(&NewSession {
                wallet_id: &wallet_str,
                agent_index: plan.agent_index,
                account: &account_str,
                targets_json: &targets_json,
                spend_cap: &spend_cap,
                valid_after: i64::try_from(g.valid_after).unwrap_or(i64::MAX),
                valid_until: i64::try_from(g.valid_until).unwrap_or(i64::MAX),
                revoker: Some(&revoker),
                grant_json: Some(&grant_json),
                user_op_hash: Some(&hash_str),
                user_op_json: Some(&op_json),
                now: kms_db::now_secs(),
            })
            .await?;
        match chain.client.submit(&op).await {
            Ok(_) => {}
            // It may have reached the bundler: the row stays pending, and the background task
            // settles it (its receipt, or the owner's nonce passing without it).
            Err(kms_chain::client::ChainError::Bundler(e)) if e.is_transient() => {
                return Err(bundler_error(&e, Some(account)))
            }
            Err(e) => {
                let err = chain_error(e, Some(account));
                s.db.fail_session(
                    session_id,
                    &format!("refused: {err}"),
                    None,
                    kms_db::now_secs(),
                )
                .await?;
                return Err(err);
            }
        }
        s.metrics.count_signature("owner_userop");
        let (status, tx) = match chain
            .client
            .wait_for_receipt(
                &chain.client.expected_receipt(&op, stored.user_op_hash),
                chain.receipt_wait,
            )
            .await
        {
            Ok(receipt) if receipt.success => {
                let tx = format!("{:#x}", receipt.receipt.transaction_hash);
                activated(&s, session_id, &tx).await?;
                ("included", Some(tx))
            }
            Ok(receipt) => {
                s.db.fail_session(
                    session_id,
                    "the owner's operation was included but its execution reverted",
                    Some(&format!("{:#x}", receipt.receipt.transaction_hash)),
                    kms_db::now_secs(),
                )
                .await?;
                return Err(ApiError::detailed(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "grant_failed",
                    "the owner's operation was included but its execution failed",
                    json!({"userOpHash": stored.user_op_hash, "transactionHash": receipt.receipt.transaction_hash, "reason": receipt.reason}),
                ));
            }
            // Not included within the wait: pending, settled later by the background task.
            Err(kms_chain::client::ChainError::Bundler(
                kms_chain::bundler::BundlerError::ReceiptTimeout { .. },
            )) => ("pending", None),
            Err(kms_chain::client::ChainError::Bundler(e)) => return Err(bundler_error(&e, Some(account))),
            Err(e) => return Err(chain_error(e, Some(account))),
        };
        Ok((stored, account, status, tx))
    }
    .await;
    let outcome = crate::routes::outcome(&res);
    let hash_hex = user_op_hash.map(|h| h.to_string());
    // Already done: a failure to record it is logged by the writer.
    let _ = s
        .audit
        .record_durable(Event {
            actor: "owner-passkey",
            action: "GrantSession",
            key_id: Some(&plan.key_id),
            outcome: &outcome,
            user_op_hash: hash_hex.as_deref(),
            detail: None,
        })
        .await;
    let (stored, account, status, tx) = res?;
    let code = if status == "included" {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        code,
        Json(AgentSessionResponse {
            key_id: plan.key_id.clone(),
            agent_address: plan.grant.key.to_string(),
            account: account.to_string(),
            user_op_hash: stored.user_op_hash.to_string(),
            status: status.to_owned(),
            transaction_hash: tx,
            deploys_account: stored.deploys_account,
            session: plan.fields(),
        }),
    ))
}

/// A pending grant with no receipt this long after it was recorded is given up as dropped
/// (`failed`), unless the owner's nonce passed without it first (then at once).
pub const GRANT_DROP_AFTER_SECS: i64 = 3600;

/// Most pending grants one tick of the background task looks at.
const GRANTS_PER_TICK: u32 = 100;

/// A grant was included with a successful execution: its row becomes `active` (superseding the
/// agent's earlier session on the same account). If the agent was revoked in the meantime, the
/// new session is revoked on chain at once.
async fn activated(s: &AppState, session_id: i64, tx: &str) -> Result<(), ApiError> {
    if !s
        .db
        .activate_session(
            session_id,
            Some(tx).filter(|t| !t.is_empty()),
            kms_db::now_secs(),
        )
        .await?
    {
        return Ok(());
    }
    let Some(session) = s.db.get_session(session_id).await? else {
        return Ok(());
    };
    let agent =
        s.db.get_agent(&session.wallet_id, session.agent_index)
            .await?;
    let Some(agent) = agent.filter(|a| a.status == AgentStatus::Revoked) else {
        return Ok(());
    };
    let key_id = session.key_id();
    tracing::warn!(key_id = %key_id, account = %session.account,
        "a grant was included after its agent was revoked: revoking the session on chain");
    let outcome = match (
        crate::revocation::ChainAccess::open(&CompanionChain(s)).await,
        agent
            .agent_address
            .as_deref()
            .and_then(|a| a.parse::<Address>().ok()),
    ) {
        (Ok(side), Some(key)) => {
            revoke_account(&s.db, &side, key, &session.account, &[session.id]).await
        }
        (Err(f), _) => AccountOutcome::Failed(f),
        (_, None) => AccountOutcome::Failed(crate::revocation::RevokeFailure::BadRecord),
    };
    if let AccountOutcome::Failed(f) = &outcome {
        let _ =
            s.db.session_revoke_failed(session.id, &f.to_string(), kms_db::now_secs())
                .await;
        tracing::error!(key_id = %key_id, account = %session.account, error = %f,
            "the session of a revoked agent could not be revoked on chain: revoke the agent again");
    }
    let revocation = AccountRevocation {
        account: session.account.clone(),
        outcome,
        sessions: vec![session.id],
        pending_grant: false,
    };
    crate::routes::agent::audit_account_revocation(s, &key_id, &revocation).await;
    Ok(())
}

/// A grant's operation was included: `active` when its execution succeeded, `failed` when it
/// reverted.
async fn settled(s: &AppState, id: i64, success: bool, tx: &str) -> Result<(), ApiError> {
    if success {
        activated(s, id, tx).await
    } else {
        s.db.fail_session(
            id,
            "the owner's operation was included but its execution reverted",
            Some(tx).filter(|t| !t.is_empty()),
            kms_db::now_secs(),
        )
        .await?;
        Ok(())
    }
}

/// Settles one pending grant from the chain: `active` when its receipt (from the bundler, or,
/// once the owner's nonce passed, the EntryPoint's `UserOperationEvent` read from the node) shows
/// a successful execution, `failed` when it shows a reverted one, when the owner's nonce passed
/// without it (dropped: another operation took its nonce), or after [`GRANT_DROP_AFTER_SECS`]. Returns the
/// row's status afterwards.
pub async fn settle_grant(
    s: &AppState,
    chain: &ChainState,
    grant: &AgentSession,
) -> Result<SessionStatus, ApiError> {
    if grant.status != SessionStatus::Pending {
        return Ok(grant.status);
    }
    let now = kms_db::now_secs();
    let op = grant
        .user_op_json
        .as_deref()
        .and_then(|j| serde_json::from_str::<RpcUserOperation>(j).ok())
        .and_then(|r| UserOperation::try_from(r).ok());
    let hash = grant
        .user_op_hash
        .as_deref()
        .and_then(|h| h.parse::<B256>().ok());
    let (Some(op), Some(hash)) = (op, hash) else {
        s.db.fail_session(grant.id, "no readable operation recorded", None, now)
            .await?;
        return Ok(SessionStatus::Failed);
    };
    // The nonce first: if it had passed before the receipt lookup found nothing, the operation
    // can no longer be included.
    let (key, _) = NonceKey::split(op.nonce);
    let passed = match chain.client.nonce(op.sender, key).await {
        Ok(on_chain) => on_chain > op.nonce,
        Err(e) => {
            tracing::debug!(error = %e, "reading the owner's nonce failed");
            return Ok(SessionStatus::Pending);
        }
    };
    match chain
        .client
        .receipt(&chain.client.expected_receipt(&op, hash))
        .await
    {
        Ok(Some(receipt)) => {
            let tx = format!("{:#x}", receipt.receipt.transaction_hash);
            settled(s, grant.id, receipt.success, &tx).await?;
        }
        Ok(None) if passed => {
            // The bundler may not know (or not yet) the receipt of an operation another bundler
            // included: the EntryPoint's events, read from the node, decide.
            match chain
                .client
                .user_operation_events(op.sender, Some(hash), None)
                .await
            {
                Ok(events) => match events
                    .iter()
                    .find(|e| e.user_op_hash == hash && e.nonce == op.nonce)
                {
                    Some(e) => {
                        let tx = e
                            .transaction_hash
                            .map(|t| format!("{t:#x}"))
                            .unwrap_or_default();
                        settled(s, grant.id, e.success, &tx).await?;
                    }
                    None => {
                        s.db.fail_session(
                            grant.id,
                            &format!(
                                "dropped: the owner's nonce {:#x} was used by another operation",
                                op.nonce
                            ),
                            None,
                            now,
                        )
                        .await?;
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, "reading the grant's UserOperationEvent failed")
                }
            }
        }
        Ok(None) if now - grant.created_at >= GRANT_DROP_AFTER_SECS => {
            s.db.fail_session(
                grant.id,
                &format!(
                    "dropped: not included within {GRANT_DROP_AFTER_SECS} s (grant again: the \
                     new operation takes its nonce, so this one can never be included)"
                ),
                None,
                now,
            )
            .await?;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(error = %e, "grant receipt lookup failed");
        }
    }
    Ok(s.db
        .get_session(grant.id)
        .await?
        .map_or(SessionStatus::Pending, |g| g.status))
}

/// One tick of the grant task: settles up to 100 pending grants ([`settle_grant`]).
pub async fn grant_tick(s: &AppState) {
    let Some(chain) = s.chain.as_ref() else {
        return;
    };
    let pending = match s.db.pending_sessions(GRANTS_PER_TICK).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "reading pending grants failed");
            return;
        }
    };
    for grant in pending {
        match settle_grant(s, chain, &grant).await {
            Ok(SessionStatus::Pending) => {}
            Ok(status) => tracing::info!(key_id = %grant.key_id(), account = %grant.account,
                user_op_hash = ?grant.user_op_hash, %status, "grant settled"),
            Err(e) => tracing::warn!(session = grant.id, error = %e, "grant settlement failed"),
        }
    }
}

/// The account an agent's intent acts from: `requested` when the agent has an active session on
/// it, else (none requested) the account of its most recently activated active session; 403
/// `no_session` otherwise (a pending, failed, superseded or revoked grant is not a session).
pub(crate) async fn intent_account(
    s: &AppState,
    wallet_id: &str,
    index: u32,
    agent: Address,
    requested: Option<&str>,
) -> Result<Address, ApiError> {
    let requested = requested
        .map(|a| hex_fixed::<20>("account", a).map(Address::from))
        .transpose()?;
    let active = s.db.active_sessions_of_agent(wallet_id, index).await?;
    let accounts: Vec<Address> = active
        .iter()
        .filter_map(|a| a.account.parse::<Address>().ok())
        .collect();
    match requested {
        None => accounts.first().copied().ok_or_else(|| {
            ApiError::detailed(
                StatusCode::FORBIDDEN,
                "no_session",
                "this agent has no active session on any account: the owner registers one with \
                 POST /kms/agent-sessions (a grant counts once it is included)",
                json!({"agentAddress": agent, "accounts": []}),
            )
        }),
        Some(account) if accounts.contains(&account) => Ok(account),
        Some(account) => Err(ApiError::detailed(
            StatusCode::FORBIDDEN,
            "no_session",
            format!(
                "this agent has no active session on account {account}: its sessions are on {}",
                if accounts.is_empty() {
                    "no account".to_owned()
                } else {
                    accounts
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            json!({"agentAddress": agent, "account": account, "accounts": accounts}),
        )),
    }
}
