//! The owner's page at `/ui` (static assets compiled into the binary, served
//! with a strict Content-Security-Policy) and the two read-only listings it
//! needs that the rest of the API does not offer: an owner's agent keys and
//! an agent's recent intents. The page uses only the public HTTP API; these
//! listings are ordinary API-key routes, usable by any client.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kms_chain::session::SessionGrant;
use kms_db::{AgentKey, AgentSession, SessionStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::{checksum_str, checksummed, JsonBody};
use crate::ops;
use crate::state::AppState;

/// The page's Content-Security-Policy: only this origin's own scripts,
/// styles, images and API; no inline code, no frames, no forms posting
/// anywhere, DOM sinks closed by Trusted Types (the page builds its DOM with
/// `textContent` only).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

/// The assets: path under `/ui/`, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/app.js"),
    ),
    (
        "webauthn.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/webauthn.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/api.js"),
    ),
    (
        "eth.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/eth.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/style.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("../../ui/icon.svg"),
    ),
];

const INDEX: &[u8] = include_bytes!("../../ui/index.html");

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure_headers(h);
    r
}

/// The headers every page response carries.
fn secure_headers(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static(
            "publickey-credentials-create=(self), publickey-credentials-get=(self), \
             clipboard-write=(self), camera=(), microphone=(), geolocation=(), payment=()",
        ),
    );
}

/// `GET /ui`: the page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/{file}`: one of the page's assets (404 JSON otherwise).
pub async fn file(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, ct, body)) => asset(ct, body),
        None if name.is_empty() || name == "index.html" => index().await,
        None => ApiError::not_found(ErrorCode::RouteNotFound, "no such file").into_response(),
    }
}

// ------------------------------------------------------------ listings

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
        account: checksum_str(&a.account),
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
        spend_cap: a.spend_cap.clone(),
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
        revoker: a.revoker.as_deref().map(checksum_str),
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
        agent_address: a.agent_address.as_deref().map(checksum_str),
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
                status: i.status,
                status_reason: i.status_reason,
                evidence: i
                    .evidence_json
                    .as_deref()
                    .and_then(|e| serde_json::from_str(e).ok())
                    .map(checksummed),
                settled_at: i.settled_at,
                account: i.account.as_deref().map(checksum_str),
                chain_id: i.chain_id,
                transaction_hash: i.tx_hash,
                error: i.error,
                created_at: i.created_at,
                updated_at: i.updated_at,
            })
            .collect(),
    }))
}
