//! The agent API, adapters of [`crate::service::credentials`]: `/kms/create-agent-key`,
//! `/kms/sign-agent` (the hot path), `/kms/refresh-agent-credential`,
//! `/kms/revoke-agent-credential`, and the owner's listing `/kms/list-agent-keys`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use kms_chain::session::SessionGrant;
use kms_db::{AgentKey, AgentSession, SessionStatus};
use kms_proto::authz::AuthorizedBody;
use kms_proto::{AgentCredential, HdPath, SignAgentUserOp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{AuditMode, Audited};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, ErrorCode};
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
            account: a.account.to_checksum(None),
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
        // Through the batcher: gathered with the agent signatures waiting at the same moment.
        s.tee
            .agent_signature(SignAgentUserOp {
                wallet_id: agent.auth.wallet,
                agent_index: agent.auth.index,
                jwt: agent.auth.jwt,
                user_op_hash,
                account,
            })
            .await
            .map_err(ApiError::from)
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

// ------------------------------------------------------------ listing

/// `/kms/list-agent-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListAgentKeysRequest {
    /// The owner's wallet id.
    pub human_key_id: String,
}

/// One session of an agent on one account (a row per grant), as recorded when it was granted.
/// Sessions recorded before grants carried functions, tokens and a gas cap have only `account`,
/// `targets`, `spendCap`, the window, `revoker` and `transactionHash`; their
/// `targetPermissions`, `tokens`, `gasCap`, `paymaster`, `maxOps`, `period` and `periodCap` are
/// `null`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListedSession {
    /// `pending` (the owner's operation submitted, not known to be included: not a session
    /// yet), `active` (included: a live session), `failed` (refused, reverted or dropped: never
    /// a session; `error` says why), `superseded` (replaced by a later grant on the same
    /// account), `revoked` (revoked on chain, `revokeTransactionHash`) or `revoke_failed` (the
    /// revocation failed: still live; revoking again retries it).
    pub status: String,
    /// The owner's smart account.
    pub account: String,
    /// Its kind: `agent-account` (the project's `AgentAccount`) or `erc7579` (an ERC-7579
    /// account with `SessionKeyValidator` as its module, an owner EOA delegated with EIP-7702
    /// included).
    pub account_kind: String,
    /// On an ERC-7579 account, the agent's nonce lane there (`null` on an `AgentAccount`, or
    /// until the grant is included).
    pub lane: Option<u16>,
    /// Every address the session may call: its targets, then its capped tokens.
    pub targets: Vec<String>,
    /// The call targets and the functions allowed on each (`null` for a session recorded
    /// before grants carried functions).
    pub target_permissions: Option<Vec<ListedTarget>>,
    /// ERC-20 caps (`null` for a session recorded before grants carried tokens).
    pub tokens: Option<Vec<ListedToken>>,
    /// Cap on the cumulative native value (decimal wei).
    pub spend_cap: Option<String>,
    /// Cap on the cumulative maximum gas cost of the agent's operations (decimal wei).
    pub gas_cap: Option<String>,
    /// The one paymaster the agent's operations may use (`null`: none, the account pays gas).
    pub paymaster: Option<String>,
    /// Most operations in this grant (0 = no limit).
    pub max_ops: Option<u32>,
    /// Length of a budget period in seconds, periods counted from `validAfter` (0 = no periodic
    /// budget; `null` for a session recorded before grants carried the whole grant).
    pub period: Option<u32>,
    /// Cap on the native value of one period (decimal wei; `"0"` without a period, `null` for a
    /// session recorded before grants carried the whole grant). `spendCap` still caps the total.
    pub period_cap: Option<String>,
    /// First valid time (unix seconds).
    pub valid_after: Option<i64>,
    /// Last valid time (unix seconds; 0 = no end).
    pub valid_until: Option<i64>,
    /// Who may revoke besides the account.
    pub revoker: Option<String>,
    /// The transaction that included the grant.
    pub transaction_hash: Option<String>,
    /// The owner's UserOperation that granted it (`null` for sessions recorded before grants
    /// were rows of their own).
    pub user_op_hash: Option<String>,
    /// Why it failed, or why its revocation failed (or a note on it, e.g. `not on chain`).
    pub error: Option<String>,
    /// The operator's `revokeSession` transaction.
    pub revoke_transaction_hash: Option<String>,
    /// Recorded (unix seconds).
    pub created_at: i64,
    /// Became active (unix seconds).
    pub activated_at: Option<i64>,
    /// Revoked (unix seconds).
    pub revoked_at: Option<i64>,
}

/// One call target of a session and the functions allowed on it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListedTarget {
    /// The address called.
    pub target: String,
    /// Every function allowed.
    pub any_selector: bool,
    /// The functions allowed, as 4-byte selectors (`0x` + 8 hex digits). Empty without
    /// `anySelector`: plain transfers (empty call data) only.
    pub selectors: Vec<String>,
}

/// A cap on one ERC-20 token.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListedToken {
    /// The token contract.
    pub token: String,
    /// The most the agent may move or approve in total, in the token's base units (decimal).
    pub cap: String,
}

/// One agent key (public facts only: never the credential or its hash).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListedAgentKey {
    /// `"{wallet}:{index}"`.
    pub key_id: String,
    /// Index under the wallet.
    pub agent_index: u32,
    /// Label given at creation.
    pub label: String,
    /// `pending`, `active`, `revoked` or `failed`.
    pub status: String,
    /// The agent key's address.
    pub agent_address: Option<String>,
    /// SEC1 compressed public key, 0x hex.
    pub public_key: Option<String>,
    /// `m/44'/60'/0'/1/<index>`.
    pub derivation_path: String,
    /// Current credential generation.
    pub generation: Option<u32>,
    /// Current credential issued at (unix seconds).
    pub issued_at: Option<i64>,
    /// Current credential expires at (unix seconds).
    pub expires_at: Option<i64>,
    /// Created (unix seconds).
    pub created_at: i64,
    /// Revoked (unix seconds).
    pub revoked_at: Option<i64>,
    /// The agent's current session: its most recently activated active one (what an intent
    /// without `account` uses), else the most recently activated of those it had (revoked,
    /// superseded); `null` when no grant was ever included. `sessions` lists all.
    pub session: Option<ListedSession>,
    /// Every session row of the agent, one per grant, newest first: on each account, whatever
    /// its status (pending and failed grants too).
    pub sessions: Vec<ListedSession>,
}

/// `/kms/list-agent-keys` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListAgentKeysResponse {
    /// The wallet.
    pub human_key_id: String,
    /// Its agent keys, by index.
    pub agent_keys: Vec<ListedAgentKey>,
}

/// One session row as listed.
pub fn listed_session(a: &AgentSession) -> ListedSession {
    // The whole grant, when it was recorded (unreadable JSON lists like an older record).
    let grant = a
        .grant_json
        .as_deref()
        .and_then(|g| serde_json::from_str::<SessionGrant>(g).ok());
    ListedSession {
        status: a.status.as_str().to_owned(),
        account: a.account.to_checksum(None),
        account_kind: a.account_kind.as_str().to_owned(),
        lane: a.lane,
        targets: a
            .targets
            .as_deref()
            .and_then(|t| serde_json::from_str::<Vec<String>>(t).ok())
            .unwrap_or_default()
            .iter()
            .map(|t| checksum_str(t))
            .collect(),
        target_permissions: grant.as_ref().map(|g| {
            g.targets
                .iter()
                .map(|t| ListedTarget {
                    target: t.target.to_string(),
                    any_selector: t.any_selector,
                    selectors: t.selectors.iter().map(|s| s.to_string()).collect(),
                })
                .collect()
        }),
        tokens: grant.as_ref().map(|g| {
            g.tokens
                .iter()
                .map(|l| ListedToken {
                    token: l.token.to_string(),
                    cap: l.cap.to_string(),
                })
                .collect()
        }),
        spend_cap: a.spend_cap.map(|c| c.to_string()),
        gas_cap: grant.as_ref().map(|g| g.gas_cap.to_string()),
        paymaster: grant
            .as_ref()
            .and_then(|g| g.paymaster)
            .map(|p| p.to_string()),
        max_ops: grant.as_ref().map(|g| g.max_ops),
        period: grant.as_ref().map(|g| g.period),
        period_cap: grant.as_ref().map(|g| g.period_cap.to_string()),
        valid_after: a.valid_after,
        valid_until: a.valid_until,
        revoker: a.revoker.map(|r| r.to_checksum(None)),
        transaction_hash: a.tx_hash.clone(),
        user_op_hash: a.user_op_hash.clone(),
        error: a.error.clone(),
        revoke_transaction_hash: a.revoke_tx_hash.clone(),
        created_at: a.created_at,
        activated_at: a.activated_at,
        revoked_at: a.revoked_at,
    }
}

/// The agent's current session among `sessions` (see [`ListedAgentKey::session`]).
pub fn current_session(sessions: &[AgentSession]) -> Option<&AgentSession> {
    let latest = |status: &[SessionStatus]| {
        sessions
            .iter()
            .filter(|s| status.contains(&s.status))
            .max_by_key(|s| (s.activated_at, s.id))
    };
    latest(&[SessionStatus::Active]).or_else(|| {
        latest(&[
            SessionStatus::Revoked,
            SessionStatus::RevokeFailed,
            SessionStatus::Superseded,
        ])
        .filter(|s| s.activated_at.is_some())
    })
}

fn listed(a: AgentKey, sessions: &[AgentSession]) -> ListedAgentKey {
    ListedAgentKey {
        key_id: a.key_id(),
        agent_index: a.agent_index,
        derivation_path: kms_proto::HdPath::agent(a.agent_index).to_string(),
        label: a.label,
        status: a.status.as_str().to_owned(),
        agent_address: a.agent_address.map(|a| a.to_checksum(None)),
        public_key: a.public_key.map(|p| {
            if p.starts_with("0x") {
                p
            } else {
                format!("0x{p}")
            }
        }),
        generation: a.generation,
        issued_at: a.issued_at,
        expires_at: a.expires_at,
        created_at: a.created_at,
        revoked_at: a.revoked_at,
        session: current_session(sessions).map(listed_session),
        sessions: sessions.iter().map(listed_session).collect(),
    }
}

/// List a wallet's agent keys (read-only; public facts, no credentials).
#[utoipa::path(post, path = "/kms/list-agent-keys", tag = "agent", request_body = ListAgentKeysRequest,
    responses((status = 200, body = ListAgentKeysResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_agent_keys(
    State(s): State<Arc<AppState>>,
    JsonBody(r): JsonBody<ListAgentKeysRequest>,
) -> Result<Json<ListAgentKeysResponse>, ApiError> {
    let id = ops::wallet_id(&r.human_key_id)?.to_uuid_string();
    if s.db.get_wallet(&id).await?.is_none() {
        return Err(ApiError::not_found(ErrorCode::KeyNotFound, "key not found"));
    }
    let agent_keys = s.db.list_agents(Some(&id)).await?;
    let sessions = s.db.sessions_of_wallet(Some(&id)).await?;
    Ok(Json(ListAgentKeysResponse {
        human_key_id: id,
        agent_keys: agent_keys
            .into_iter()
            .map(|a| {
                let mine: Vec<AgentSession> = sessions
                    .iter()
                    .filter(|s| s.agent_index == a.agent_index)
                    .cloned()
                    .collect();
                listed(a, &mine)
            })
            .collect(),
    }))
}
