//! The agent API: create, sign (hot path), refresh, revoke.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::{Extension, Json};
use kms_db::{AgentActivation, AgentStatus};
use kms_proto::authz::AuthorizedBody;
use kms_proto::{AgentCredential, CreateAgentKey, HdPath, JwtSignPayload, SignAgentUserOp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::audit::Event;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{checksum, checksum_str, hex0x, hex_fixed, JsonBody};
use crate::ops::{self, CreateAgentKeyRequest, RefreshAgentRequest, RevokeAgentRequest};
use crate::ratelimit::ClientAddr;
use crate::revocation::{AccountRevocation, CompanionChain, RevokeFailure};
use crate::state::{AppState, CachedCredential};
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

/// Records the operator's on-chain revocation of one account in the audit log (already done: a
/// failure to record it is logged by the writer).
pub(crate) async fn audit_account_revocation(s: &AppState, key_id: &str, a: &AccountRevocation) {
    let outcome = match a.outcome.failure() {
        Some(_) => "refused:chain_revoke_failed".to_owned(),
        None => "ok".to_owned(),
    };
    let detail = format!(
        "account={} status={} {}",
        a.account,
        a.outcome.status(),
        crate::revocation::describe(&a.outcome)
    );
    let _ = s
        .audit
        .record_durable(Event {
            actor: "operator",
            action: "RevokeSessionOnChain",
            key_id: Some(key_id),
            outcome: &outcome,
            user_op_hash: None,
            detail: Some(&detail),
        })
        .await;
}

impl From<RevokeFailure> for ApiError {
    fn from(f: RevokeFailure) -> Self {
        match f {
            RevokeFailure::Database(m) => ApiError::Internal(format!("database: {m}")),
            RevokeFailure::Tee(e) => e.into(),
            RevokeFailure::UnknownToTa(e) => kms_tee_client::TeeError::Ta(e).into(),
            RevokeFailure::TaRolledBack(reason) => crate::reconcile::rolled_back_error(&reason),
            other => ApiError::internal(other.to_string()),
        }
    }
}

fn credential_hash(jwt: &str) -> String {
    hex::encode(Sha256::digest(jwt.as_bytes()))
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let v = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized(
            "credential_missing",
            "Authorization: Bearer <agent credential> is required",
        )
    })?;
    let v = v.to_str().map_err(|_| {
        ApiError::unauthorized("credential_malformed", "malformed Authorization header")
    })?;
    let token = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized(
                "credential_missing",
                "Authorization must be a Bearer credential",
            )
        })?;
    Ok(token.trim())
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

fn activation<'a>(
    c: &AgentCredential,
    address: &'a str,
    public_key: &'a str,
    hash: &'a str,
) -> AgentActivation<'a> {
    AgentActivation {
        agent_address: address,
        public_key,
        credential_hash: hash,
        kid: "",
        generation: c.generation,
        issued_at: i64::try_from(c.iat).unwrap_or(i64::MAX),
        expires_at: i64::try_from(c.exp).unwrap_or(i64::MAX),
        now: kms_db::now_secs(),
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
                r.web_authn_assertion.as_ref(),
                r.passkey_assertion.is_some(),
                "wallet id",
            )
            .await?;
        let index =
            s.db.reserve_agent_index(&wallet, &body.label, kms_db::now_secs())
                .await?;
        key_id = Some(kms_proto::jwt::key_id(&body.wallet_id, index));
        match s
            .tee
            .call(&CreateAgentKey {
                agent_index: index,
                body: body.clone(),
                assertion,
            })
            .await
        {
            Ok(c) => {
                let jwt = c.to_jwt();
                let hash = credential_hash(&jwt);
                let (address, public_key) = (hex0x(&c.address), hex0x(&c.public_key));
                let mut act = activation(&c, &address, &public_key, &hash);
                act.kid = &c.kid;
                s.db.activate_agent(&wallet, index, &act).await?;
                Ok(c)
            }
            Err(e) => {
                s.db.fail_agent(&wallet, index, e.code(), kms_db::now_secs())
                    .await?;
                Err(e)
            }
        }
    }
    .await;
    s.audit_durable(
        &caller.actor,
        "CreateAgentKey",
        Some(key_id.as_deref().unwrap_or(&wallet)),
        &res,
        None,
    )
    .await;
    let c = res?;
    Ok(Json(response(
        kms_proto::jwt::key_id(&body.wallet_id, c.agent_index),
        &c,
    )))
}

/// The Bearer JWT of a `/kms/sign-agent` request and the agent it names, checked against the
/// request's `keyId` (403 when they differ): `(jwt, canonical keyId, wallet, index, exp)`.
fn named_agent<'h>(
    headers: &'h HeaderMap,
    key_id: &str,
) -> Result<
    (
        &'h str,
        String,
        kms_proto::WalletId,
        u32,
        kms_proto::jwt::AgentClaims,
    ),
    ApiError,
> {
    let jwt = bearer(headers)?;
    let parsed = kms_proto::jwt::parse(jwt).map_err(|e| {
        ApiError::unauthorized("credential_malformed", format!("invalid credential: {e}"))
    })?;
    let (wallet, index) = ops::agent_key_id(key_id)?;
    // One canonical spelling for the limiter, the cache and the audit
    // trail (case or leading zeros must not open another bucket).
    let key_id = kms_proto::jwt::key_id(&wallet, index);
    let claims = &parsed.claims;
    if claims.agent_index != index
        || claims.wallet_id.parse::<kms_proto::WalletId>().ok() != Some(wallet)
    {
        return Err(ApiError::forbidden(
            "key_id_mismatch",
            "keyId does not match the credential",
        ));
    }
    Ok((jwt, key_id, wallet, index, claims.clone()))
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
    client: ClientAddr,
    headers: HeaderMap,
    JsonBody(r): JsonBody<SignAgentRequest>,
) -> Result<Json<SignAgentResponse>, ApiError> {
    // An address that spent its budget of failed authentications is refused before its
    // credential is even read.
    s.limits.clients.admit(client.0)?;
    let (jwt, key_id, wallet, index, claims) =
        named_agent(&headers, &r.key_id).map_err(|e| s.limits.refused(client, e))?;
    let user_op_hash = hex_fixed::<32>("payload", &r.payload)?;
    let account = hex_fixed::<20>("accountAddress", &r.account_address)?;
    let res = match check_credential(&s, &key_id, wallet, index, jwt, &claims).await {
        // Not this agent's current credential: the request's address pays, never the agent.
        Err(e) => Err(s.limits.refused(client, e)),
        Ok(_) => {
            // The credential matches: the agent's own bucket, before any TEE call.
            s.limits.agent.check(&key_id)?;
            s.tee
                .call(&SignAgentUserOp {
                    wallet_id: wallet,
                    agent_index: index,
                    jwt: jwt.to_owned(),
                    user_op_hash,
                    account,
                })
                .await
        }
    };
    let outcome = crate::routes::outcome(&res);
    let actor = format!("agent:{key_id}");
    let hash_hex = hex0x(&user_op_hash);
    let event = Event {
        actor: &actor,
        action: "SignAgentUserOp",
        key_id: Some(&key_id),
        outcome: &outcome,
        user_op_hash: Some(&hash_hex),
        detail: None,
    };
    if res.is_ok() {
        // Recorded (per --audit-durability) before the signature is answered.
        s.audit_release(event).await?;
    } else {
        s.audit.record(event);
    }
    let sig = res?;
    s.metrics.count_signature("agent_userop");
    Ok(Json(SignAgentResponse {
        key_id,
        agent_address: checksum(&sig.agent_address),
        signature: hex0x(&sig.signature),
    }))
}

/// The host's checks of a presented agent credential, before any TEE call: the agent exists
/// and is active, the JWT is its current credential (constant-time hash comparison, cached for
/// a few seconds), and it has not expired. The TA checks the HMAC and claims itself when it
/// signs. Returns the cached credential facts (the agent address among them).
pub(crate) async fn check_credential(
    s: &AppState,
    key_id: &str,
    wallet: kms_proto::WalletId,
    index: u32,
    jwt: &str,
    claims: &kms_proto::jwt::AgentClaims,
) -> Result<CachedCredential, ApiError> {
    let exp = claims.exp;
    let presented = credential_hash(jwt);
    let current = match s.credentials.get(key_id) {
        Some(c) => c,
        None => {
            let row =
                s.db.get_agent(&wallet.to_uuid_string(), index)
                    .await?
                    .ok_or_else(|| ApiError::not_found("agent_not_found", "unknown agent key"))?;
            match row.status {
                AgentStatus::Active => {}
                AgentStatus::Revoked => {
                    return Err(ApiError::unauthorized(
                        "credential_revoked",
                        "the agent key is revoked",
                    ))
                }
                AgentStatus::Pending | AgentStatus::Failed => {
                    return Err(ApiError::not_found("agent_not_found", "unknown agent key"))
                }
            }
            let c = CachedCredential {
                hash: row.credential_hash.unwrap_or_default(),
                expires_at: row.expires_at.unwrap_or(0),
                agent_address: row.agent_address.unwrap_or_default(),
                generation: row.generation.unwrap_or(0),
                cached_at: std::time::Instant::now(),
            };
            s.credentials.put(key_id, c.clone());
            c
        }
    };
    if !bool::from(presented.as_bytes().ct_eq(current.hash.as_bytes())) {
        return Err(not_current(
            claims,
            current.generation,
            &current.agent_address,
        ));
    }
    let now = u64::try_from(kms_db::now_secs()).unwrap_or(0);
    if exp <= now || current.expires_at <= kms_db::now_secs() {
        return Err(ApiError::unauthorized(
            "credential_expired",
            "the credential has expired",
        ));
    }
    Ok(current)
}

/// Why a presented credential that is not the agent's current one is refused (401): one of an
/// earlier generation, for the agent's own address, was superseded (by a refresh or a revoke);
/// anything else (the current generation or a later one, another address: a forged or tampered
/// token) is invalid. The host cannot check the HMAC (its secret is in the TA), so a tampered
/// copy of an earlier credential still reads as superseded; it is refused all the same.
fn not_current(
    claims: &kms_proto::jwt::AgentClaims,
    current_generation: u32,
    agent_address: &str,
) -> ApiError {
    if claims.gen < current_generation && claims.agent_address.eq_ignore_ascii_case(agent_address) {
        ApiError::unauthorized(
            "credential_superseded",
            "this credential was superseded (by a refresh or a revoke): it is not the key's \
             current credential",
        )
    } else {
        ApiError::unauthorized(
            "credential_invalid",
            "invalid credential: it is not a credential the companion issued for this key \
             (forged or tampered)",
        )
    }
}

/// An agent authenticated by its Bearer credential (host checks done; the TA checks again
/// when it signs).
pub(crate) struct AgentAuth {
    /// Canonical `"{wallet}:{index}"`.
    pub key_id: String,
    /// Wallet.
    pub wallet: kms_proto::WalletId,
    /// Agent index.
    pub index: u32,
    /// The presented JWT (for the TA).
    pub jwt: String,
    /// The agent key address (`0x` lowercase).
    pub agent_address: String,
}

/// Authenticates the Bearer agent credential of a request: refuses `client` at once when its
/// address has spent its budget of failed authentications (429), parses the JWT, checks that
/// `key_id` (when given) names the credential's agent (403 otherwise), then
/// [`check_credential`]; any refusal up to there charges `client`'s bucket. Once the credential
/// matches, the agent's own rate limit is taken when `rate_limited` (requests that lead to a
/// TEE call).
pub(crate) async fn authenticate_agent(
    s: &AppState,
    headers: &HeaderMap,
    key_id: Option<&str>,
    client: ClientAddr,
    rate_limited: bool,
) -> Result<AgentAuth, ApiError> {
    s.limits.clients.admit(client.0)?;
    let auth = identify_agent(s, headers, key_id)
        .await
        .map_err(|e| s.limits.refused(client, e))?;
    if rate_limited {
        s.limits.agent.check(&auth.key_id)?;
    }
    Ok(auth)
}

/// [`authenticate_agent`] without the limits.
async fn identify_agent(
    s: &AppState,
    headers: &HeaderMap,
    key_id: Option<&str>,
) -> Result<AgentAuth, ApiError> {
    let jwt = bearer(headers)?;
    let parsed = kms_proto::jwt::parse(jwt).map_err(|e| {
        ApiError::unauthorized("credential_malformed", format!("invalid credential: {e}"))
    })?;
    let claims = &parsed.claims;
    let claim_wallet: kms_proto::WalletId = claims.wallet_id.parse().map_err(|_| {
        ApiError::unauthorized("credential_malformed", "invalid credential: wallet_id")
    })?;
    let (wallet, index) = match key_id {
        Some(k) => ops::agent_key_id(k)?,
        None => (claim_wallet, claims.agent_index),
    };
    if claims.agent_index != index || claim_wallet != wallet {
        return Err(ApiError::forbidden(
            "key_id_mismatch",
            "keyId does not match the credential",
        ));
    }
    let key_id = kms_proto::jwt::key_id(&wallet, index);
    let c = check_credential(s, &key_id, wallet, index, jwt, claims).await?;
    Ok(AgentAuth {
        key_id,
        wallet,
        index,
        jwt: jwt.to_owned(),
        agent_address: c.agent_address,
    })
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
    // The Bearer is optional: the passkey ceremony authorises the refresh.
    let presented = if headers.contains_key(header::AUTHORIZATION) {
        let (jwt, _, _, _, claims) =
            named_agent(&headers, &r.key_id).map_err(|e| s.limits.refused(client, e))?;
        Some((jwt, claims))
    } else {
        None
    };
    let (wallet, index) = ops::agent_key_id(&r.key_id)?;
    let key_id = kms_proto::jwt::key_id(&wallet, index);
    let body = ops::prepare_refresh(&s, &r)
        .await
        .map_err(|e| s.limits.refused(client, e))?;
    let wallet_str = wallet.to_uuid_string();
    let actor = match presented {
        Some(_) => format!("agent:{key_id}"),
        None => "owner-passkey".to_owned(),
    };
    let res = async {
        async {
            let row =
                s.db.get_agent(&wallet_str, index)
                    .await?
                    .ok_or_else(|| ApiError::not_found("agent_not_found", "unknown agent key"))?;
            if row.status == AgentStatus::Revoked {
                return Err(ApiError::unauthorized(
                    "credential_revoked",
                    "the agent key is revoked",
                ));
            }
            if let Some((jwt, claims)) = &presented {
                let stored = row.credential_hash.unwrap_or_default();
                if !bool::from(credential_hash(jwt).as_bytes().ct_eq(stored.as_bytes())) {
                    return Err(not_current(
                        claims,
                        row.generation.unwrap_or(0),
                        row.agent_address.as_deref().unwrap_or_default(),
                    ));
                }
            }
            Ok(())
        }
        .await
        .map_err(|e| s.limits.refused(client, e))?;
        let assertion = s
            .finish_authentication(
                &wallet,
                Purpose::RefreshAgentCredential,
                &body.payload_digest(),
                r.web_authn_assertion.as_ref(),
                r.passkey_assertion.is_some(),
                "agent keyId",
            )
            .await?;
        let c = s
            .tee
            .call(&JwtSignPayload {
                body: body.clone(),
                assertion,
            })
            .await?;
        let new_jwt = c.to_jwt();
        let hash = credential_hash(&new_jwt);
        let (address, public_key) = (hex0x(&c.address), hex0x(&c.public_key));
        let mut act = activation(&c, &address, &public_key, &hash);
        act.kid = &c.kid;
        s.db.refresh_agent(&wallet_str, index, &act).await?;
        s.credentials.invalidate(&key_id);
        Ok(c)
    }
    .await;
    s.audit_durable(&actor, "RefreshAgentCredential", Some(&key_id), &res, None)
        .await;
    let c = res?;
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
    let wallet_str = req.wallet_id.to_uuid_string();
    let ceremony = s
        .finish_authentication(
            &req.wallet_id,
            Purpose::RevokeAgentCredential,
            &ops::revoke_digest(&req),
            r.web_authn_assertion.as_ref(),
            r.passkey_assertion.is_some(),
            "agent keyId",
        )
        .await;
    if ceremony.is_err() {
        s.audit_durable(
            "owner-passkey",
            "RevokeAgentCredential",
            Some(&key_id),
            &ceremony,
            None,
        )
        .await;
    }
    ceremony?;
    let row =
        s.db.get_agent(&wallet_str, req.agent_index)
            .await?
            .ok_or_else(|| ApiError::not_found("agent_not_found", "unknown agent key"))?;
    // The one revocation path (kms-admin's too): database first (the host refuses at once even
    // if the TEE is unreachable), then the TA's generation bump, then every live session's
    // account on chain.
    let done = crate::revocation::revoke_agent(
        &s.db,
        &s.tee,
        Some(&CompanionChain(&s)),
        req.wallet_id,
        &row,
        || s.credentials.invalidate(&key_id),
    )
    .await;
    let res: Result<u32, ApiError> = match (
        done.database.failure().or(done.tee.failure()),
        done.generation,
    ) {
        (Some(f), _) => Err(f.clone().into()),
        (None, Some(g)) => Ok(g),
        (None, None) => Err(ApiError::internal("the TA reported no generation")),
    };
    s.audit_durable(
        "owner-passkey",
        "RevokeAgentCredential",
        Some(&key_id),
        &res,
        None,
    )
    .await;
    for a in &done.accounts {
        audit_account_revocation(&s, &key_id, a).await;
    }
    let generation = res?;
    let row = s.db.get_agent(&wallet_str, req.agent_index).await?;
    let sessions: Vec<OnChainRevocation> = done.accounts.iter().map(Into::into).collect();
    Ok(Json(RevokeAgentResponse {
        success: true,
        key_id,
        revoked_at: row
            .and_then(|a| a.revoked_at)
            .unwrap_or_else(kms_db::now_secs),
        generation,
        on_chain: sessions.first().cloned(),
        sessions,
    }))
}
