//! `GET /agent/session` (Bearer agent credential): the agent's session as the chain has it.
//!
//! The account is the one asked for (`?account=0x…`, one of the agent's active sessions) or the
//! account of its one active session, chosen as `POST /agent/intents` chooses it (403
//! `no_session` otherwise; 422 `account_required` when it has sessions on several and names
//! none). The answer names the account's kind (`agent-account` or `erc7579`, recorded at grant)
//! and, on an ERC-7579 account, the agent's lane there and the module's state (a session ended by
//! the module's uninstallation reads `revoked`). The targets, functions and tokens probed are those of
//! the grant recorded for that session; everything reported about them (allowed, every function,
//! which functions are listed, token caps and what they have counted), the budgets and the window
//! is read from `SessionKeyValidator.readSession` at the latest block, so what the answer says
//! the agent may do is what the validator would accept. It shares the rate limit of
//! `GET /agent/intents/{userOpHash}` (`--agent-read-rate-limit`).

use std::sync::Arc;

use alloy::primitives::{Address, Bytes, U256};
use axum::extract::{Query, State};
use axum::Json;
use kms_chain::account::{AccountKind, Call};
use kms_chain::session::{SessionGrant, ValidatorPath};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{hex_fixed, Agent};
use crate::service::intents::IntentPipeline;
use crate::state::AppState;

/// `GET /agent/session` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AgentSessionQuery {
    /// The smart account (one of the agent's active sessions) [default: the account of its one
    /// active session; required when it has several].
    #[serde(default)]
    pub account: Option<String>,
}

/// One target of the session, as the validator has it.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionTargetView {
    /// The address called.
    pub target: String,
    /// Listed by the current grant and the session active (calls to it may pass).
    pub allowed: bool,
    /// Every function of it allowed (else only plain transfers and `selectors`).
    pub any_selector: bool,
    /// The functions allowed besides plain transfers (4-byte selectors, `0x` hex), as listed on
    /// chain.
    pub selectors: Vec<String>,
}

/// One ERC-20 cap of the session, as the validator has it (amounts in the token's smallest
/// units, decimal strings).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionTokenView {
    /// The token contract.
    pub token: String,
    /// The cap on what `transfer`/`approve`/`transferFrom` may move in total.
    pub cap: String,
    /// Counted against the cap so far.
    pub spent: String,
    /// Left (`cap − spent`; 0 unless the session is active).
    pub remaining: String,
}

/// The agent's session on one account, read on chain (amounts in wei, decimal strings).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSessionResponse {
    /// The agent key id.
    pub key_id: String,
    /// The agent key address.
    pub agent_address: String,
    /// The smart account the session is on (intents act from it).
    pub account: String,
    /// The account's kind, recorded at grant: `agent-account` (the project's `AgentAccount`) or
    /// `erc7579` (an ERC-7579 account with the validator as its module).
    pub account_kind: String,
    /// On an `erc7579` account, the agent key's lane there (its operations' nonce key is
    /// `validator ‖ lane ‖ period`); `null` on `agent-account`.
    pub lane: Option<u16>,
    /// On an `erc7579` account, whether the validator module is installed on it now (`null` on
    /// `agent-account`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_installed: Option<bool>,
    /// The accounts of every active session of the agent, most recently activated first.
    pub accounts: Vec<String>,
    /// The validator read (`SessionKeyValidator`).
    pub validator: String,
    /// The block read.
    pub block_number: u64,
    /// Its timestamp (unix seconds).
    pub block_timestamp: u64,
    /// `active`, `not_yet_valid`, `expired` (by the block's timestamp), `revoked` or
    /// `never_granted`. Only `active` lets intents pass.
    pub status: String,
    /// First valid timestamp (unix seconds).
    pub valid_after: u64,
    /// Last valid timestamp (unix seconds; 0 = no end).
    pub valid_until: u64,
    /// The targets of the grant with what the validator allows on each.
    pub targets: Vec<SessionTargetView>,
    /// The ERC-20 caps.
    pub tokens: Vec<SessionTokenView>,
    /// Cap on the native value moved in total.
    pub spend_cap: String,
    /// Native value moved so far.
    pub spent: String,
    /// Native value left (0 unless active; a periodic budget may allow less now: `periodRemaining`).
    pub remaining_value: String,
    /// Cap on the gas the operations may cost (each charged its maximum cost).
    pub gas_cap: String,
    /// Charged so far.
    pub gas_spent: String,
    /// Left (0 unless active).
    pub remaining_gas: String,
    /// Most operations (0 = no limit).
    pub max_ops: u32,
    /// Operations so far.
    pub ops_used: u32,
    /// Budget period in seconds (0 = none).
    pub period: u32,
    /// Native-value cap per period.
    pub period_cap: String,
    /// The period containing the block's time (0 without a period).
    pub period_index: u64,
    /// Native value spent in that period.
    pub period_spent: String,
    /// Native value left in that period (`null` without a period).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_remaining: Option<String>,
    /// The one paymaster allowed (`null`: the account pays gas).
    pub paymaster: Option<String>,
    /// The revoker besides the account (the operator key), or `null`.
    pub revoker: Option<String>,
}

/// The agent's session as the chain has it: account, targets and functions, token caps,
/// remaining budgets, validity window and status (Bearer agent credential).
#[utoipa::path(get, path = "/agent/session", tag = "intents",
    params(AgentSessionQuery),
    responses((status = 200, body = AgentSessionResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "no_session: no active session (on the account asked for)"),
        (status = 422, body = ErrorBody, description = "account_required: sessions on several accounts and none asked for"),
        (status = 502, body = ErrorBody, description = "the node could not be read"),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_agent_session(
    State(s): State<Arc<AppState>>,
    agent: Agent,
    Query(q): Query<AgentSessionQuery>,
) -> Result<Json<AgentSessionResponse>, ApiError> {
    let chain = s.chain()?;
    let auth = agent.auth;
    s.limits.agent_reads.check(&auth.key_id)?;
    let requested = q
        .account
        .as_deref()
        .map(|a| hex_fixed::<20>("account", a).map(Address::from))
        .transpose()?;
    let session = IntentPipeline::new(&s, chain)
        .session(&auth, requested)
        .await?;
    let account = session.account;
    let kind = crate::service::intents::account_kind(session.account_kind);
    let active =
        s.db.active_sessions_of_agent(&auth.wallet.to_uuid_string(), auth.index)
            .await?;
    // Rows' accounts are compared through their text form, whatever the row's field type.
    let grant: Option<SessionGrant> = active
        .iter()
        .find(|r| r.account.to_string().parse::<Address>().ok() == Some(account))
        .and_then(|r| r.grant_json.as_deref())
        .and_then(|g| serde_json::from_str(g).ok());
    // One probe per (target, selector) of the grant (selector zero: the target itself), and one
    // per token.
    let mut probes: Vec<Call> = Vec::new();
    let mut tokens: Vec<Address> = Vec::new();
    if let Some(g) = &grant {
        for t in &g.targets {
            probes.push(Call::new(t.target, U256::ZERO, Bytes::new()));
            for sel in &t.selectors {
                probes.push(Call::new(
                    t.target,
                    U256::ZERO,
                    Bytes::copy_from_slice(sel.as_slice()),
                ));
            }
        }
        for t in &g.tokens {
            probes.push(Call::new(t.token, U256::ZERO, Bytes::new()));
            tokens.push(t.token);
        }
    }
    let now = u64::try_from(kms_db::now_secs()).unwrap_or(0);
    let (snap, path) = chain
        .client
        .read_session_for_calls_on(kind, account, auth.agent_address, &probes, now)
        .await
        .map_err(|e| crate::chain::chain_error(e, Some(account)))?;
    let on = &snap.session;
    let ts = snap.block_timestamp;
    let module = match path {
        ValidatorPath::Erc7579(m) => Some(m),
        ValidatorPath::AgentAccount => None,
    };
    // On the module path a session is ended by the module's uninstallation too.
    let ended = module.is_some_and(|m| !m.admits(on));
    let status = if on.epoch == 0 {
        "never_granted"
    } else if !on.active || ended {
        "revoked"
    } else if ts < on.valid_after {
        "not_yet_valid"
    } else if on.valid_until != 0 && ts > on.valid_until {
        "expired"
    } else {
        "active"
    };
    let targets = grant
        .iter()
        .flat_map(|g| g.targets.iter())
        .map(|t| {
            let state = snap.permissions.get(&t.target);
            SessionTargetView {
                target: t.target.to_string(),
                allowed: snap
                    .allowed_targets
                    .get(&t.target)
                    .copied()
                    .unwrap_or(false),
                any_selector: state.is_some_and(|p| p.any_selector),
                selectors: t
                    .selectors
                    .iter()
                    .filter(|sel| snap.listed_selectors.contains(&(t.target, **sel)))
                    .map(|sel| sel.to_string())
                    .collect(),
            }
        })
        .collect();
    let tokens = tokens
        .iter()
        .filter_map(|t| {
            let p = snap.permissions.get(t)?;
            let remaining = if on.active {
                p.token_cap.saturating_sub(p.token_spent)
            } else {
                0
            };
            Some(SessionTokenView {
                token: t.to_string(),
                cap: p.token_cap.to_string(),
                spent: p.token_spent.to_string(),
                remaining: remaining.to_string(),
            })
        })
        .collect();
    let nonzero = |a: Address| (a != Address::ZERO).then(|| a.to_string());
    let accounts = active
        .iter()
        .filter_map(|r| r.account.to_string().parse::<Address>().ok())
        .map(|a| a.to_string())
        .collect();
    Ok(Json(AgentSessionResponse {
        key_id: auth.key_id.clone(),
        agent_address: auth.agent_address.to_string(),
        account: account.to_string(),
        account_kind: kind.as_str().to_owned(),
        lane: match kind {
            AccountKind::Erc7579 => session.lane.or(on_chain_lane(on.lane)),
            AccountKind::AgentAccount => None,
        },
        module_installed: module.map(|m| m.installed),
        accounts,
        validator: snap.validator.to_string(),
        block_number: snap.block_number,
        block_timestamp: ts,
        status: status.to_owned(),
        valid_after: on.valid_after,
        valid_until: on.valid_until,
        targets,
        tokens,
        spend_cap: on.spend_cap.to_string(),
        spent: on.spent.to_string(),
        remaining_value: on.remaining_value().to_string(),
        gas_cap: on.gas_cap.to_string(),
        gas_spent: on.gas_spent.to_string(),
        remaining_gas: on.remaining_gas().to_string(),
        max_ops: on.max_ops,
        ops_used: on.ops_used,
        period: on.period,
        period_cap: on.period_cap.to_string(),
        period_index: snap.period_index,
        period_spent: snap.period_spent.to_string(),
        period_remaining: (on.period != 0).then(|| {
            if on.active {
                on.period_cap.saturating_sub(snap.period_spent).to_string()
            } else {
                "0".to_owned()
            }
        }),
        paymaster: nonzero(on.paymaster),
        revoker: nonzero(on.revoker),
    }))
}

/// A lane read on chain: 0 is never given (no grant yet).
fn on_chain_lane(lane: u16) -> Option<u16> {
    (lane != 0).then_some(lane)
}
