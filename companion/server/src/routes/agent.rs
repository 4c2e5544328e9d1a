//! The agent API, adapters of [`crate::service::credentials`]: `/kms/create-agent-key`,
//! `/kms/sign-agent` (the hot path), `/kms/refresh-agent-credential`,
//! `/kms/revoke-agent-credential`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use kms_proto::authz::AuthorizedBody;
use kms_proto::{AgentCredential, HdPath, SignAgentUserOp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{AuditMode, Audited};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{bearer, checksum, checksum_str, hex0x, hex_fixed, Agent, JsonBody};
use crate::ops::{self, CreateAgentKeyRequest, RefreshAgentRequest, RevokeAgentRequest};
use crate::ratelimit::ClientAddr;
use crate::revocation::AccountRevocation;
use crate::service::credentials::{audit_account_revocation, revoked_generation, AgentCredentials};
use crate::state::AppState;
use crate::webauthn::Purpose;

/// A newly issued agent credential (shown once).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentCredentialResponse {
    /// `"{wallet}:{index}"`.
    pub key_id: String,
    /// The agent key's address.
    pub agent_address: String,
    /// SEC1 compressed public key, 0x hex.
    pub public_key: String,
    /// `m/44'/60'/0'/1/<index>`.
    pub derivation_path: String,
    /// The JWT. Returned once; only its SHA-256 is stored.
    pub agent_credential: String,
    /// Expiry (unix seconds).
    pub expires_at: u64,
    /// Credential generation (`gen` claim).
    pub generation: u32,
}

/// `/kms/sign-agent`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignAgentRequest {
    /// `"{wallet}:{index}"`; must match the credential.
    pub key_id: String,
    /// The userOpHash (32 bytes hex).
    pub payload: String,
    /// The smart account the signature is for (20 bytes hex).
    pub account_address: String,
    /// Ignored (always secp256k1).
    #[serde(default)]
    pub algorithm: Option<String>,
}

/// `/kms/sign-agent` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignAgentResponse {
    /// Key id.
    pub key_id: String,
    /// Agent key address.
    pub agent_address: String,
    /// `0x` + 106 bytes, the session signature `SessionKeyValidator` checks: the marker byte
    /// `0x08` (1 byte) ‖ `account` (20) ‖ the agent key's address (20) ‖ `r` (32) ‖ `s` (32) ‖
    /// `v` (1). `r ‖ s ‖ v` is the agent key's ECDSA secp256k1 signature (low `s`, `v` 27 or 28)
    /// over the EIP-191 hash of the 32-byte userOpHash:
    /// `keccak256("\x19Ethereum Signed Message:\n32" ‖ userOpHash)`, so
    /// `ecrecover(that digest, v, r, s)` is `agentAddress`. The account routes a signature of
    /// this length starting with the marker to `SessionKeyValidator`; any other is an owner
    /// signature.
    pub signature: String,
}

/// `/kms/revoke-agent-credential` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokeAgentResponse {
    /// Always true (idempotent).
    pub success: bool,
    /// Key id.
    pub key_id: String,
    /// When it was revoked (unix seconds).
    pub revoked_at: i64,
    /// The TA's generation after the revoke.
    pub generation: u32,
    /// The on-chain layer for the agent's most recently activated session (the one account a
    /// client of one session knows); `sessions` has every account. Absent when the agent had no
    /// session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_chain: Option<OnChainRevocation>,
    /// The on-chain layer for each account where the agent had a live session (the most recently
    /// activated first), and for an account of a pending grant where a live session was found and
    /// revoked (or the check failed). Empty when there was nothing to revoke on chain.
    pub sessions: Vec<OnChainRevocation>,
}

/// What became of the agent's session on one account.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnChainRevocation {
    /// `revoked` (the operator's revokeSession mined), `already_revoked`, `not_on_chain` (no
    /// session of the agent there: nothing to revoke), or `failed` (the session may still be
    /// live: revoking again retries it).
    pub status: String,
    /// The smart account.
    pub account: String,
    /// The operator's `revokeSession` transaction, when one was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_hash: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the account had only a pending grant (checked because it may be included
    /// already): reported when a live session was found and revoked there, or the check failed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending_grant: bool,
}

impl From<&AccountRevocation> for OnChainRevocation {
    fn from(a: &AccountRevocation) -> Self {
        OnChainRevocation {
            status: a.outcome.status().to_owned(),
            account: checksum_str(&a.account),
            transaction_hash: a.outcome.tx_hash().map(|h| format!("{h:#x}")),
            error: a.outcome.failure().map(|f| f.to_string()),
            pending_grant: a.pending_grant,
        }
    }
}

fn response(key_id: String, c: &AgentCredential) -> AgentCredentialResponse {
    AgentCredentialResponse {
        key_id,
        agent_address: checksum(&c.address),
        public_key: hex0x(&c.public_key),
        derivation_path: HdPath::agent(c.agent_index).to_string(),
        agent_credential: c.to_jwt(),
        expires_at: c.exp,
        generation: c.generation,
    }
}

/// Create an agent key and its first credential (passkey ceremony).
#[utoipa::path(post, path = "/kms/create-agent-key", tag = "agent", request_body = CreateAgentKeyRequest,
    responses((status = 200, body = AgentCredentialResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "`agent_exists`"),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create_agent_key(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    JsonBody(r): JsonBody<CreateAgentKeyRequest>,
) -> Result<Json<AgentCredentialResponse>, ApiError> {
    let body = ops::prepare_mint(&s, &r).await?;
    let wallet = body.wallet_id.to_uuid_string();
    let mut key_id = None;
    let res = async {
        let assertion = s
            .finish_authentication(
                &body.wallet_id,
                Purpose::CreateAgentKey,
                &body.payload_digest(),
                &r,
                "wallet id",
            )
            .await?;
        AgentCredentials(&s)
            .create(&body, assertion, |index| {
                key_id = Some(kms_proto::jwt::key_id(&body.wallet_id, index))
            })
            .await
    }
    .await;
    let audit =
        Audited::new(&caller.actor, "CreateAgentKey").key_id(key_id.as_deref().unwrap_or(&wallet));
    let c = s.audited(audit, AuditMode::Durable, res).await?;
    Ok(Json(response(
        kms_proto::jwt::key_id(&body.wallet_id, c.agent_index),
        &c,
    )))
}

/// Sign a userOpHash with an agent key (Bearer agent credential).
#[utoipa::path(post, path = "/kms/sign-agent", tag = "agent", request_body = SignAgentRequest,
    description = "Signs a userOpHash with the agent key for `SessionKeyValidator` (Bearer agent credential). \
        The answer's `signature` is `0x08 ‖ account (20 bytes) ‖ agent address (20) ‖ r (32) ‖ s (32) ‖ v (1)` \
        (106 bytes): the marker byte `0x08`, then the agent key's ECDSA signature (low s, v ∈ {27, 28}) over \
        the EIP-191 hash of the 32-byte userOpHash, `keccak256(\"\\x19Ethereum Signed Message:\\n32\" ‖ userOpHash)` \
        (not over the userOpHash itself).",
    responses((status = 200, body = SignAgentResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sign_agent(
    State(s): State<Arc<AppState>>,
    agent: Result<Agent, ApiError>,
    JsonBody(r): JsonBody<SignAgentRequest>,
) -> Result<Json<SignAgentResponse>, ApiError> {
    // One canonical spelling of the key id for the audit trail (case or leading zeros must not
    // read as another key).
    let named = ops::agent_key_id(&r.key_id)
        .map(|(w, i)| kms_proto::jwt::key_id(&w, i))
        .unwrap_or_else(|_| r.key_id.clone());
    let mut hash_hex = None;
    let res = async {
        let agent = agent?;
        agent.require_key_id(&s, Some(&r.key_id))?;
        let user_op_hash = hex_fixed::<32>("payload", &r.payload)?;
        hash_hex = Some(hex0x(&user_op_hash));
        let account = hex_fixed::<20>("accountAddress", &r.account_address)?;
        // The credential matches: the agent's own bucket, before any TEE call.
        s.limits.agent.check(&agent.auth.key_id)?;
        // The hot path answers the TA's signature as is: the client checks it, and checking it
        // here too would double the CPU of each request (the intent pipeline checks its own).
        s.tee
            .call(&SignAgentUserOp {
                wallet_id: agent.auth.wallet,
                agent_index: agent.auth.index,
                jwt: agent.auth.jwt,
                user_op_hash,
                account,
            })
            .await
    }
    .await;
    let actor = format!("agent:{named}");
    let audit = Audited::new(&actor, "SignAgentUserOp")
        .key_id(named.as_str())
        .user_op_hash(hash_hex.as_deref());
    // Recorded (per --audit-durability) before the signature is answered.
    let sig = s.audited(audit, AuditMode::Release, res).await?;
    s.metrics.count_signature("agent_userop");
    Ok(Json(SignAgentResponse {
        key_id: named,
        agent_address: checksum(&sig.agent_address),
        signature: hex0x(&sig.signature),
    }))
}

/// Issue a new credential for an agent; the previous one is superseded in the database and in
/// the TA (generation). The owner's passkey ceremony (Purpose `RefreshAgentCredential`, bound
/// to `keyId` and `ttlSecs`) authorises it: with it alone a lost credential is re-issued. A
/// request may also carry the agent's current credential as a Bearer (possibly expired); one
/// that is not the current credential is refused (401), as on the other agent routes.
#[utoipa::path(post, path = "/kms/refresh-agent-credential", tag = "agent", request_body = RefreshAgentRequest,
    description = "Re-issues the agent's credential (a new JWT at the next generation; the previous \
        one is dead in the database and in the TA). The owner's passkey ceremony (`/BeginAuthentication` \
        with Purpose `RefreshAgentCredential`, KeyId = the agent key id, Payload `{\"ttlSecs\"}` when \
        given) is the authorisation: no Bearer is needed, so a lost credential can be re-issued with the \
        passkey alone. An `Authorization: Bearer` header, when sent, must be the agent's current \
        credential (an expired one is accepted).",
    responses((status = 200, body = AgentCredentialResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn refresh_agent_credential(
    State(s): State<Arc<AppState>>,
    client: ClientAddr,
    headers: HeaderMap,
    JsonBody(r): JsonBody<RefreshAgentRequest>,
) -> Result<Json<AgentCredentialResponse>, ApiError> {
    // Failed credentials count against the client address, as on `/kms/sign-agent`.
    s.limits.clients.admit(client.0)?;
    let refused = |e: ApiError| s.limits.refused(client, e);
    // The Bearer is optional: the passkey ceremony authorises the refresh.
    let presented = bearer(&headers).map_err(|e| refused(e.into()))?;
    let (wallet, index) = ops::agent_key_id(&r.key_id).map_err(refused)?;
    if let Some(p) = &presented {
        p.require_agent(wallet, index)
            .map_err(|e| refused(e.into()))?;
    }
    let key_id = kms_proto::jwt::key_id(&wallet, index);
    let body = ops::prepare_refresh(&s, &r).await.map_err(refused)?;
    let actor = match presented {
        Some(_) => format!("agent:{key_id}"),
        None => "owner-passkey".to_owned(),
    };
    let credentials = AgentCredentials(&s);
    let res = async {
        credentials
            .check_refreshable(wallet, index, presented.as_ref())
            .await
            .map_err(|e| refused(e.into()))?;
        let assertion = s
            .finish_authentication(
                &wallet,
                Purpose::RefreshAgentCredential,
                &body.payload_digest(),
                &r,
                "agent keyId",
            )
            .await?;
        credentials.refresh(&body, assertion).await
    }
    .await;
    let audit = Audited::new(&actor, "RefreshAgentCredential").key_id(key_id.as_str());
    let c = s.audited(audit, AuditMode::Durable, res).await?;
    Ok(Json(response(key_id, &c)))
}

/// Revoke an agent key in the database, the TA and on chain (every account where it has a live
/// session; idempotent); requires the owner's passkey ceremony.
#[utoipa::path(post, path = "/kms/revoke-agent-credential", tag = "agent", request_body = RevokeAgentRequest,
    responses((status = 200, body = RevokeAgentResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn revoke_agent_credential(
    State(s): State<Arc<AppState>>,
    JsonBody(r): JsonBody<RevokeAgentRequest>,
) -> Result<Json<RevokeAgentResponse>, ApiError> {
    let req = ops::prepare_revoke(&s, &r).await?;
    let key_id = kms_proto::jwt::key_id(&req.wallet_id, req.agent_index);
    let audit = Audited::new("owner-passkey", "RevokeAgentCredential").key_id(key_id.as_str());
    let mut done = None;
    let res = async {
        s.finish_authentication(
            &req.wallet_id,
            Purpose::RevokeAgentCredential,
            &ops::revoke_digest(&req),
            &r,
            "agent keyId",
        )
        .await?;
        // The one revocation path (kms-admin's too): database, TA, every live session on chain.
        let revocation = done.insert(
            AgentCredentials(&s)
                .revoke(req.wallet_id, req.agent_index)
                .await?,
        );
        revoked_generation(revocation)
    }
    .await;
    let res = s.audited(audit, AuditMode::Durable, res).await;
    let accounts = done.map(|d| d.accounts).unwrap_or_default();
    for a in &accounts {
        audit_account_revocation(&s, &key_id, a).await;
    }
    let generation = res?;
    let revoked_at =
        s.db.get_agent(&req.wallet_id.to_uuid_string(), req.agent_index)
            .await?
            .and_then(|a| a.revoked_at)
            .unwrap_or_else(kms_db::now_secs);
    let sessions: Vec<OnChainRevocation> = accounts.iter().map(Into::into).collect();
    Ok(Json(RevokeAgentResponse {
        success: true,
        key_id,
        revoked_at,
        generation,
        on_chain: sessions.first().cloned(),
        sessions,
    }))
}
