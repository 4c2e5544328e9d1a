//! ERC-7715 permission requests: a dapp asks for an agent key the standard way
//! (`wallet_grantPermissions` on `POST /rpc`), the owner decides on `/ui`.
//!
//! [`map_request`] turns the request's permissions into the session the validator enforces (the
//! `/kms/agent-sessions` fields), and refuses by name what it cannot enforce. [`open`] records
//! the request (`permission_requests`, `pending`) and [`wait`] waits for the owner's decision,
//! bounded by `--permission-request-timeout-secs`. The owner approves with the existing passkey
//! ceremonies, through the existing routes: `CreateAgentKey` (`/kms/create-agent-key`), then
//! `GrantSession` over the request's session (`/kms/agent-sessions`); [`approve`] then checks that
//! the agent holds exactly that session, records the answer and hands it to the waiting call
//! (with the agent credential only when the owner chose so). [`reject`] answers 4001.
//!
//! | Request | Session |
//! |---|---|
//! | `native-token-transfer` / `native-token-limit` + `token-allowance` (or `data.allowance`) | `spendCap`; recipients of plain transfers from `data.recipients` (a companion extension) |
//! | `erc20-token-transfer` / `erc20-token-limit` `{address}` + `token-allowance` | `tokens[{token, cap}]` |
//! | `contract-call` `{address, calls}` | `targets[{target, selectors}]` (signatures → selectors) |
//! | `gas-limit` `{limit}` (wei, as viem's type says) | `gasCap` (the smallest, when several) |
//! | `expiry` (unix seconds) | `validUntil`; `validAfter` = when asked (the chain's latest block time) |
//!
//! Refused by name (`-32010`, `data.unsupported`): `rate-limit` (the validator counts operations
//! over the whole session and value per period, not operations per interval), any other policy
//! or permission type, `token-allowance` on a `contract-call`, a native permission with no
//! allowance or no way to spend it, a `signer` other than the wallet (the agent key is made in
//! the TEE: an outside key cannot be the signer). A `required: false` permission that cannot be
//! granted is dropped (listed in the request's `dropped`, absent from `grantedPermissions`); a
//! required one refuses the request.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use subtle::ConstantTimeEq;

use alloy::primitives::{Address, U256};
use alloy::sol_types::SolValue;
use kms_chain::session::parse_selector;
use kms_db::{AgentStatus, NewPermissionRequest, PermissionRequest, PermissionRequestStatus};
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use crate::error::{ApiError, ErrorCode};
use crate::extract::checksummed;
use crate::ops::{agent_key_id, AgentSessionRequest};
use crate::service::credentials::credential_hash;
use crate::state::AppState;

/// JSON-RPC: invalid params (malformed permission data, unknown wallet, wrong chain).
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC: the request asks for something the validator cannot enforce (`data.unsupported`).
pub const UNSUPPORTED: i64 = -32010;
/// JSON-RPC: nobody decided within `--permission-request-timeout-secs` (`data.requestId`,
/// `data.status: "expired"`).
pub const EXPIRED: i64 = -32011;
/// EIP-1193: the owner cancelled.
pub const USER_REJECTED: i64 = 4001;
/// JSON-RPC: internal error.
pub const INTERNAL: i64 = -32603;

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    /// The code.
    pub code: i64,
    /// In words.
    pub message: String,
    /// Details.
    pub data: Option<Value>,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>, data: Option<Value>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data,
        }
    }

    /// `-32602` about `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message, Some(json!({ "field": field })))
    }

    /// `-32603`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(INTERNAL, message, None)
    }

    /// As answered: `{code, message, data?}`.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.data {
            v["data"] = d.clone();
        }
        v
    }
}

/// What cannot be granted, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    /// The name refused: a permission type, a policy type, `signer:<type>`.
    pub name: String,
    /// Where in the request (`permissions[1].policies[0]`).
    pub path: String,
    /// Why the validator cannot enforce it.
    pub reason: String,
}

impl Unsupported {
    fn new(name: &str, path: String, reason: &str) -> Self {
        Unsupported {
            name: name.to_owned(),
            path,
            reason: reason.to_owned(),
        }
    }

    fn to_json(&self) -> Value {
        json!({"name": self.name, "path": self.path, "reason": self.reason})
    }
}

/// A request mapped onto a session.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapped {
    /// The `/kms/agent-sessions` fields, without `keyId`.
    pub session: Value,
    /// The permissions granted, as the request gave them.
    pub granted: Vec<Value>,
    /// The optional permissions dropped: `{index, type, unsupported: [...]}`.
    pub dropped: Vec<Value>,
    /// The request's expiry (unix seconds).
    pub expiry: u64,
}

/// Largest expiry read as seconds (year 5138): a larger one is milliseconds, refused.
const MAX_EXPIRY: u64 = 100_000_000_000;
/// Least validity a grant must have left when asked.
const MIN_VALIDITY_SECS: u64 = 60;

/// What one permission adds to the session.
#[derive(Default)]
struct Contribution {
    native: Option<u128>,
    recipients: Vec<Address>,
    token: Option<(Address, u128)>,
    call: Option<(Address, Vec<String>)>,
    gas: Option<u128>,
}

fn amount(path: &str, v: &Value) -> Result<u128, RpcError> {
    let parsed = match v {
        Value::String(s) => {
            let s = s.trim();
            if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                U256::from_str_radix(h, 16).ok()
            } else {
                U256::from_str_radix(s, 10).ok()
            }
        }
        Value::Number(n) => n.as_u64().map(U256::from),
        _ => None,
    };
    let n = parsed.ok_or_else(|| {
        RpcError::invalid(
            path,
            format!("{path} must be an amount (0x hex or decimal string)"),
        )
    })?;
    u128::try_from(n).map_err(|_| RpcError::invalid(path, format!("{path} is over 2^128 - 1")))
}

fn address(path: &str, v: &Value) -> Result<Address, RpcError> {
    v.as_str()
        .and_then(|s| s.parse::<Address>().ok())
        .ok_or_else(|| RpcError::invalid(path, format!("{path} must be a 20-byte 0x address")))
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// One permission's contribution, or what in it cannot be enforced.
fn permission(i: usize, p: &Value) -> Result<Result<Contribution, Vec<Unsupported>>, RpcError> {
    let path = format!("permissions[{i}]");
    let Some(kind) = str_field(p, "type") else {
        return Err(RpcError::invalid(
            &format!("{path}.type"),
            format!("{path}.type must be a string"),
        ));
    };
    let data = p.get("data").cloned().unwrap_or(Value::Null);
    let policies = match p.get("policies") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            return Err(RpcError::invalid(
                &format!("{path}.policies"),
                format!("{path}.policies must be an array"),
            ))
        }
    };
    let mut unsupported = Vec::new();
    let mut c = Contribution::default();
    let mut allowance: Option<u128> = None;
    for (j, pol) in policies.iter().enumerate() {
        let ppath = format!("{path}.policies[{j}]");
        let Some(ptype) = str_field(pol, "type") else {
            return Err(RpcError::invalid(
                &format!("{ppath}.type"),
                format!("{ppath}.type must be a string"),
            ));
        };
        let pdata = pol.get("data").cloned().unwrap_or(Value::Null);
        match ptype {
            "token-allowance" if kind == "contract-call" => unsupported.push(Unsupported::new(
                "token-allowance",
                ppath,
                "a contract-call's value is bounded by the native-token permission's allowance \
                 (one spend cap for the session), not per contract",
            )),
            "token-allowance" => {
                allowance = Some(amount(
                    &format!("{ppath}.data.allowance"),
                    pdata.get("allowance").unwrap_or(&Value::Null),
                )?)
            }
            "gas-limit" => {
                let limit = amount(
                    &format!("{ppath}.data.limit"),
                    pdata.get("limit").unwrap_or(&Value::Null),
                )?;
                c.gas = Some(c.gas.map_or(limit, |g| g.min(limit)));
            }
            "rate-limit" => unsupported.push(Unsupported::new(
                "rate-limit",
                ppath,
                "the validator limits the number of operations over the whole session (maxOps) \
                 and the native value per period, not the number of operations per interval",
            )),
            other => unsupported.push(Unsupported::new(
                other,
                ppath,
                "unknown policy type: the validator cannot enforce it",
            )),
        }
    }
    match kind {
        "native-token-transfer" | "native-token-limit" => {
            if let Some(a) = data.get("allowance") {
                allowance = Some(amount(&format!("{path}.data.allowance"), a)?);
            }
            match allowance {
                Some(a) => c.native = Some(a),
                None => unsupported.push(Unsupported::new(
                    kind,
                    path.clone(),
                    "no token-allowance: the session caps the native value the agent may move",
                )),
            }
            if let Some(r) = data.get("recipients") {
                let list = r.as_array().ok_or_else(|| {
                    RpcError::invalid(
                        &format!("{path}.data.recipients"),
                        "recipients must be an array of addresses",
                    )
                })?;
                for (k, a) in list.iter().enumerate() {
                    c.recipients
                        .push(address(&format!("{path}.data.recipients[{k}]"), a)?);
                }
            }
        }
        "erc20-token-transfer" | "erc20-token-limit" => {
            let token = address(
                &format!("{path}.data.address"),
                data.get("address").unwrap_or(&Value::Null),
            )?;
            if let Some(a) = data.get("allowance") {
                allowance = Some(amount(&format!("{path}.data.allowance"), a)?);
            }
            match allowance {
                Some(0) => {
                    return Err(RpcError::invalid(
                        &format!("{path}.policies"),
                        "an ERC-20 allowance must be above 0",
                    ))
                }
                Some(a) => c.token = Some((token, a)),
                None => unsupported.push(Unsupported::new(
                    kind,
                    path.clone(),
                    "no token-allowance: the session caps each ERC-20 it may move",
                )),
            }
        }
        "contract-call" => {
            let target = address(
                &format!("{path}.data.address"),
                data.get("address").unwrap_or(&Value::Null),
            )?;
            let calls = data
                .get("calls")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| {
                    RpcError::invalid(
                        &format!("{path}.data.calls"),
                        "calls must list the functions allowed (signatures such as \
                         \"transfer(address,uint256)\" or 4-byte selectors)",
                    )
                })?;
            let mut selectors = Vec::new();
            for (k, call) in calls.iter().enumerate() {
                let cpath = format!("{path}.data.calls[{k}]");
                let s = call.as_str().ok_or_else(|| {
                    RpcError::invalid(&cpath, format!("{cpath} must be a string"))
                })?;
                let s = s.trim();
                let s = s.strip_prefix("function ").unwrap_or(s).trim();
                let selector = parse_selector(s).map_err(|e| RpcError::invalid(&cpath, e))?;
                selectors.push(selector.to_string());
            }
            c.call = Some((target, selectors));
        }
        other => unsupported.push(Unsupported::new(
            other,
            path,
            "unknown permission type: the validator cannot enforce it",
        )),
    }
    Ok(if unsupported.is_empty() {
        Ok(c)
    } else {
        Err(unsupported)
    })
}

/// Maps `wallet_grantPermissions`' params (`params[0]`) onto a session, at time `now` (see the
/// module docs for the mapping and the refusals).
pub fn map_request(params: &Value, now: u64) -> Result<Mapped, RpcError> {
    let obj = params
        .as_object()
        .ok_or_else(|| RpcError::invalid("params[0]", "params[0] must be an object"))?;
    for k in obj.keys() {
        if !matches!(
            k.as_str(),
            "expiry" | "permissions" | "signer" | "address" | "chainId"
        ) {
            return Err(RpcError::invalid(
                k,
                format!(
                    "unknown field {k:?} (expected expiry, permissions, signer, address, chainId)"
                ),
            ));
        }
    }
    let expiry = obj
        .get("expiry")
        .and_then(Value::as_u64)
        .ok_or_else(|| RpcError::invalid("expiry", "expiry must be a unix time in seconds"))?;
    if expiry >= MAX_EXPIRY {
        return Err(RpcError::invalid(
            "expiry",
            "expiry must be in seconds (this looks like milliseconds)",
        ));
    }
    if expiry < now + MIN_VALIDITY_SECS {
        return Err(RpcError::invalid(
            "expiry",
            format!("expiry must be at least {MIN_VALIDITY_SECS} s in the future"),
        ));
    }
    let mut refused = Vec::new();
    match obj.get("signer") {
        None | Some(Value::Null) => {}
        Some(s) => match str_field(s, "type") {
            Some("wallet") => {}
            Some(t) => refused.push(Unsupported::new(
                &format!("signer:{t}"),
                "signer".into(),
                "the agent key is made in the TEE and its credential handed over: an outside \
                 key cannot be the session's signer (omit signer, or use {\"type\": \"wallet\"})",
            )),
            None => return Err(RpcError::invalid("signer", "signer.type must be a string")),
        },
    }
    let perms = obj
        .get("permissions")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| RpcError::invalid("permissions", "permissions must be a non-empty array"))?;
    let mut granted = Vec::new();
    let mut dropped = Vec::new();
    let mut parts = Vec::new();
    for (i, p) in perms.iter().enumerate() {
        match permission(i, p)? {
            Ok(c) => {
                granted.push(p.clone());
                parts.push((i, c));
            }
            Err(u) => {
                let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
                if required {
                    refused.extend(u);
                } else {
                    dropped.push(json!({
                        "index": i,
                        "type": p.get("type"),
                        "unsupported": u.iter().map(Unsupported::to_json).collect::<Vec<_>>(),
                    }));
                }
            }
        }
    }
    if !refused.is_empty() {
        return Err(unsupported_error(&refused, &dropped));
    }
    if parts.is_empty() {
        return Err(RpcError::new(
            UNSUPPORTED,
            "none of the permissions asked can be granted",
            Some(json!({
                "unsupported": dropped.iter().flat_map(|d| d["unsupported"].as_array().cloned().unwrap_or_default()).map(|u| u["name"].clone()).collect::<Vec<_>>(),
                "dropped": dropped,
            })),
        ));
    }
    let mut spend_cap: Option<u128> = None;
    let mut gas_cap: Option<u128> = None;
    let mut calls: Vec<(Address, Vec<String>)> = Vec::new();
    let mut recipients: Vec<Address> = Vec::new();
    let mut tokens: Vec<(Address, u128)> = Vec::new();
    let mut native_at = None;
    for (i, c) in parts {
        if let Some(a) = c.native {
            if spend_cap.is_some() {
                return Err(RpcError::invalid(
                    &format!("permissions[{i}]"),
                    "one native-token permission at most (the session has one spend cap)",
                ));
            }
            spend_cap = Some(a);
            native_at = Some(i);
        }
        if let Some(g) = c.gas {
            gas_cap = Some(gas_cap.map_or(g, |x| x.min(g)));
        }
        for r in c.recipients {
            if !recipients.contains(&r) {
                recipients.push(r);
            }
        }
        if let Some((token, cap)) = c.token {
            if tokens.iter().any(|(t, _)| *t == token) {
                return Err(RpcError::invalid(
                    &format!("permissions[{i}]"),
                    format!("two ERC-20 permissions for {token}"),
                ));
            }
            tokens.push((token, cap));
        }
        if let Some((target, selectors)) = c.call {
            match calls.iter_mut().find(|(t, _)| *t == target) {
                Some((_, s)) => {
                    for sel in selectors {
                        if !s.contains(&sel) {
                            s.push(sel);
                        }
                    }
                }
                None => calls.push((target, selectors)),
            }
        }
    }
    let Some(gas_cap) = gas_cap else {
        return Err(RpcError::new(
            INVALID_PARAMS,
            "a gas-limit policy is required: the account pays the agent's gas, and the validator \
             charges each operation's maximum cost (wei) against the session's gas budget",
            Some(json!({"field": "policies", "missing": ["gas-limit"]})),
        ));
    };
    if let Some(i) = native_at {
        if recipients.is_empty() && calls.is_empty() {
            let u = Unsupported::new(
                "native-token-transfer",
                format!("permissions[{i}]"),
                "transfers to any recipient: the validator allows only listed targets (name them \
                 in data.recipients, or ask for contract-call permissions to attach value to)",
            );
            return Err(unsupported_error(&[u], &dropped));
        }
    }
    let mut targets: Vec<Value> = calls
        .iter()
        .map(|(t, s)| json!({"target": t, "selectors": s}))
        .collect();
    for r in recipients {
        if !calls.iter().any(|(t, _)| *t == r) {
            targets.push(json!(r));
        }
    }
    let session = json!({
        "targets": targets,
        "spendCap": spend_cap.unwrap_or(0).to_string(),
        "gasCap": gas_cap.to_string(),
        "tokens": tokens.iter().map(|(t, c)| json!({"token": t, "cap": c.to_string()})).collect::<Vec<_>>(),
        "validAfter": now,
        "validUntil": expiry,
    });
    Ok(Mapped {
        session,
        granted,
        dropped,
        expiry,
    })
}

fn unsupported_error(refused: &[Unsupported], dropped: &[Value]) -> RpcError {
    let names: Vec<&str> = refused.iter().map(|u| u.name.as_str()).collect();
    RpcError::new(
        UNSUPPORTED,
        format!(
            "the session validator cannot enforce: {} (required)",
            names.join(", ")
        ),
        Some(json!({
            "unsupported": names,
            "reasons": refused.iter().map(Unsupported::to_json).collect::<Vec<_>>(),
            "dropped": dropped,
        })),
    )
}

/// `permissionsContext`: `0x` ABI encoding of `(address account, address agentKey, string
/// keyId)`, what an agent needs to act on the grant.
pub fn permissions_context(account: Address, agent: Address, key_id: &str) -> String {
    format!(
        "0x{}",
        alloy::hex::encode((account, agent, key_id.to_owned()).abi_encode_params())
    )
}

/// What the waiting call is answered with.
type Answer = Result<Value, RpcError>;

/// The calls of this process waiting for a decision, by request id.
fn waiters() -> &'static Mutex<HashMap<String, oneshot::Sender<Answer>>> {
    static W: OnceLock<Mutex<HashMap<String, oneshot::Sender<Answer>>>> = OnceLock::new();
    W.get_or_init(Default::default)
}

fn take_waiter(id: &str) -> Option<oneshot::Sender<Answer>> {
    waiters().lock().ok().and_then(|mut w| w.remove(id))
}

/// A recorded request and the call's end of its answer.
pub struct Opened {
    /// The request id.
    pub id: String,
    rx: oneshot::Receiver<Answer>,
}

/// Resolves the wallet `params` names (`address`, else `fallback`: the `?address=` of the URL) by
/// its owner address, checks `chainId` (when given), maps the request and records it `pending`,
/// answerable for `timeout`.
pub async fn open(
    s: &AppState,
    requester: &str,
    params: &Value,
    fallback: Option<&str>,
    timeout: Duration,
) -> Result<Opened, RpcError> {
    // "Now" is the chain's: the latest block's time (or the companion's clock, if earlier), so
    // that a session valid from it is valid for the bundler's simulation at once.
    let wall = u64::try_from(kms_db::now_secs()).unwrap_or(0);
    let chain_now = match s.chain.as_ref() {
        Some(c) => {
            use alloy::providers::Provider;
            c.client
                .provider()
                .get_block_by_number(alloy::rpc::types::BlockNumberOrTag::Latest)
                .await
                .ok()
                .flatten()
                .map(|b| b.header.timestamp)
        }
        None => None,
    };
    let now = chain_now.map_or(wall, |c| c.min(wall));
    let named = params
        .get("address")
        .and_then(Value::as_str)
        .or(fallback)
        .ok_or_else(|| {
            RpcError::invalid(
                "address",
                "name the wallet: params[0].address (or ?address= on the URL) = its owner address",
            )
        })?;
    let owner: Address = named
        .parse()
        .map_err(|_| RpcError::invalid("address", "address must be a 20-byte 0x address"))?;
    if let Some(c) = params.get("chainId") {
        let asked = match c {
            Value::String(h) => h
                .strip_prefix("0x")
                .and_then(|h| u64::from_str_radix(h, 16).ok()),
            Value::Number(n) => n.as_u64(),
            _ => None,
        };
        let ours = s.chain.as_ref().map(|c| c.client.chain_id());
        if asked.is_none() || asked != ours {
            return Err(RpcError::invalid(
                "chainId",
                format!("this companion's chain is {ours:?}, not {c}"),
            ));
        }
    }
    let wallet =
        s.db.wallet_by_owner_address(owner)
            .await
            .map_err(|e| RpcError::internal(e.to_string()))?
            .ok_or_else(|| {
                RpcError::invalid(
                    "address",
                    format!("no wallet here has owner address {owner}"),
                )
            })?;
    let mapped = map_request(params, now)?;
    let str_of =
        |v: &Value| serde_json::to_string(v).map_err(|e| RpcError::internal(e.to_string()));
    let now_i = kms_db::now_secs();
    let secs = i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX);
    let id =
        s.db.insert_permission_request(&NewPermissionRequest {
            wallet_id: &wallet,
            requester,
            request_json: &str_of(params)?,
            session_json: &str_of(&mapped.session)?,
            granted_json: &str_of(&Value::Array(mapped.granted.clone()))?,
            dropped_json: &str_of(&Value::Array(mapped.dropped.clone()))?,
            now: now_i,
            expires_at: now_i.saturating_add(secs),
        })
        .await
        .map_err(|e| RpcError::internal(e.to_string()))?;
    let (tx, rx) = oneshot::channel();
    if let Ok(mut w) = waiters().lock() {
        w.insert(id.clone(), tx);
    }
    tracing::info!(request_id = %id, wallet = %wallet, requester, "ERC-7715 permission request waiting for the owner");
    Ok(Opened { id, rx })
}

/// How often a waiting call looks at its request's row, for a decision taken through another
/// companion sharing the database (which cannot hand this call its answer).
pub const DECIDED_ELSEWHERE_POLL: Duration = Duration::from_millis(250);

/// Waits for the owner's decision on `opened`, at most `timeout`: the answer (approved), 4001
/// (cancelled), or -32011 once expired (the row then says `expired`). A decision taken on this
/// companion hands the call its answer; one taken on another companion sharing the database is
/// read from the request's row (looked at every [`DECIDED_ELSEWHERE_POLL`]): the answer recorded
/// there, without the credential (which then stays with the owner).
pub async fn wait(s: &AppState, opened: Opened, timeout: Duration) -> Answer {
    let Opened { id, mut rx } = opened;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            if take_waiter(&id).is_some() {
                match s
                    .db
                    .expire_permission_request(&id, kms_db::now_secs())
                    .await
                {
                    Ok(true) => return Err(expired(&id, timeout)),
                    Ok(false) => {}
                    Err(e) => return Err(RpcError::internal(e.to_string())),
                }
            } else if let Ok(Ok(answer)) = tokio::time::timeout(Duration::from_secs(5), rx).await {
                // Decided just now: the decision holds the answer.
                return answer;
            }
            break;
        }
        match tokio::time::timeout(DECIDED_ELSEWHERE_POLL.min(deadline - now), &mut rx).await {
            Ok(Ok(answer)) => return answer,
            Ok(Err(_)) => break,
            Err(_) => {
                let decided = matches!(
                    s.db.get_permission_request(&id).await,
                    Ok(Some(row)) if row.status != PermissionRequestStatus::Pending
                );
                if !decided {
                    continue;
                }
                if take_waiter(&id).is_none() {
                    // Decided here, at this moment: that decision holds the answer.
                    if let Ok(Ok(answer)) =
                        tokio::time::timeout(Duration::from_secs(5), &mut rx).await
                    {
                        return answer;
                    }
                }
                // Decided on another companion: the row says what.
                break;
            }
        }
    }
    // Decided without handing this call its answer: the row says what.
    let row =
        s.db.get_permission_request(&id)
            .await
            .map_err(|e| RpcError::internal(e.to_string()))?
            .ok_or_else(|| RpcError::internal("the permission request vanished"))?;
    match row.status {
        PermissionRequestStatus::Approved => row
            .result_json
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .ok_or_else(|| RpcError::internal("approved without an answer")),
        PermissionRequestStatus::Rejected => Err(rejected(&id)),
        PermissionRequestStatus::Expired => Err(expired(&id, timeout)),
        PermissionRequestStatus::Pending => {
            // An approval took the call's end but could not record itself (the request ran out
            // of time meanwhile): the request ends here.
            let _ =
                s.db.expire_permission_request(&id, kms_db::now_secs())
                    .await;
            Err(expired(&id, timeout))
        }
    }
}

fn expired(id: &str, timeout: Duration) -> RpcError {
    RpcError::new(
        EXPIRED,
        format!(
            "the owner did not decide within {} s: the request expired (ask again)",
            timeout.as_secs()
        ),
        Some(json!({"requestId": id, "status": "expired"})),
    )
}

fn rejected(id: &str) -> RpcError {
    RpcError::new(
        USER_REJECTED,
        "the owner rejected the request",
        Some(json!({"requestId": id, "status": "rejected"})),
    )
}

/// A request as the owner's page shows it.
pub fn describe(r: &PermissionRequest, jwt_ttl_secs: u64) -> Value {
    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
    let request = parse(&r.request_json);
    let expiry = request["expiry"].as_u64().unwrap_or(0);
    let now = u64::try_from(kms_db::now_secs()).unwrap_or(0);
    // The credential lives at most as long as the grant, and at most the companion's TTL.
    let ttl = expiry.saturating_sub(now).clamp(1, jwt_ttl_secs.max(1));
    let mut v = json!({
        "requestId": r.id,
        "walletId": r.wallet_id,
        "requester": r.requester,
        "status": r.status.as_str(),
        "createdAt": r.created_at,
        "expiresAt": r.expires_at,
        "expiry": expiry,
        "permissions": parse(&r.granted_json),
        "dropped": parse(&r.dropped_json),
        "session": checksummed(parse(&r.session_json)),
        "createAgent": {"label": format!("erc7715 {}", &r.id[..8.min(r.id.len())]), "ttlSecs": ttl},
    });
    if let Some(k) = &r.key_id {
        v["keyId"] = json!(k);
    }
    if let Some(a) = r.account {
        v["account"] = json!(a.to_checksum(None));
    }
    if let Some(c) = &r.credential_to {
        v["credentialTo"] = json!(c);
    }
    v
}

/// What the owner's approval did.
#[derive(Debug)]
pub struct Approved {
    /// The answer as recorded (without the credential).
    pub result: Value,
    /// Whether a waiting call received it.
    pub delivered: bool,
    /// Who has the credential: `requester` (delivered with it) or `owner`.
    pub credential_to: &'static str,
}

fn load(row: Option<PermissionRequest>) -> Result<PermissionRequest, ApiError> {
    let row = row.ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::PermissionRequestNotFound,
            "no such permission request",
        )
    })?;
    if row.status != PermissionRequestStatus::Pending || row.expires_at <= kms_db::now_secs() {
        let status = if row.status == PermissionRequestStatus::Pending {
            "expired"
        } else {
            row.status.as_str()
        };
        return Err(ApiError::detailed(
            axum::http::StatusCode::CONFLICT,
            ErrorCode::PermissionRequestClosed,
            format!("the permission request is {status}"),
            json!({"status": status}),
        ));
    }
    Ok(row)
}

/// The owner granted request `id` to agent `key_id`: checks that the agent is of the request's
/// wallet and holds (active) exactly the session the request maps onto, records the answer and
/// hands it to the waiting call, with `credential` when `to_requester` (it must be the agent's
/// current credential).
pub async fn approve(
    s: &AppState,
    id: &str,
    key_id: &str,
    credential: Option<&str>,
    to_requester: bool,
) -> Result<Approved, ApiError> {
    let row = load(s.db.get_permission_request(id).await?)?;
    let (wallet, index) = agent_key_id(key_id)?;
    let wallet_str = wallet.to_uuid_string();
    if wallet_str != row.wallet_id {
        return Err(ApiError::forbidden(
            ErrorCode::KeyIdMismatch,
            "the agent is not of the wallet the request names",
        ));
    }
    let agent =
        s.db.get_agent(&wallet_str, index)
            .await?
            .filter(|a| a.status == AgentStatus::Active)
            .ok_or_else(|| ApiError::not_found(ErrorCode::AgentNotFound, "unknown agent key"))?;
    let agent_address = agent
        .agent_address
        .ok_or_else(|| ApiError::internal("active agent without an address"))?;
    // The session the request maps onto, for this agent, exactly as the grant would send it.
    let mut session: Value = serde_json::from_str(&row.session_json)
        .map_err(|e| ApiError::internal(format!("stored session: {e}")))?;
    session["keyId"] = json!(kms_proto::jwt::key_id(&wallet, index));
    let request: AgentSessionRequest = serde_json::from_value(session)
        .map_err(|e| ApiError::internal(format!("stored session: {e}")))?;
    let plan = crate::service::sessions::plan(s, &request).await?;
    let want = serde_json::to_value(&plan.grant).map_err(|e| ApiError::internal(e.to_string()))?;
    let sessions = s.db.active_sessions_of_agent(&wallet_str, index).await?;
    let session = sessions
        .iter()
        .find(|x| {
            x.grant_json
                .as_deref()
                .and_then(|g| serde_json::from_str::<Value>(g).ok())
                .is_some_and(|g| g == want)
        })
        .ok_or_else(|| {
            ApiError::detailed(
                axum::http::StatusCode::CONFLICT,
                ErrorCode::PermissionNotGranted,
                "the agent holds no active session matching the request: grant it the request's \
                 session first (GrantSession with the listing's `session`), and wait for its \
                 inclusion",
                json!({"keyId": key_id}),
            )
        })?;
    let credential = match (to_requester, credential) {
        (false, _) => None,
        (true, None) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                "credential is required to hand it to the requester",
            ))
        }
        (true, Some(c)) => {
            let stored = agent.credential_hash.as_deref().unwrap_or("");
            // Compared in constant time, like every credential check.
            if !bool::from(credential_hash(c).as_bytes().ct_eq(stored.as_bytes())) {
                return Err(ApiError::unprocessable(
                    ErrorCode::CredentialInvalid,
                    "credential is not the agent's current credential",
                ));
            }
            Some(c)
        }
    };
    let account = session.account;
    let key_id = kms_proto::jwt::key_id(&wallet, index);
    let request: Value = serde_json::from_str(&row.request_json).unwrap_or(Value::Null);
    let granted: Value = serde_json::from_str(&row.granted_json).unwrap_or(Value::Null);
    let mut signer_data = Map::new();
    signer_data.insert("submitToAddress".into(), json!(account));
    signer_data.insert("agentAddress".into(), json!(agent_address));
    signer_data.insert("keyId".into(), json!(key_id));
    let result = json!({
        "expiry": request["expiry"],
        "grantedPermissions": granted,
        "permissionsContext": permissions_context(account, agent_address, &key_id),
        "signerData": checksummed(Value::Object(signer_data)),
    });
    // The waiting call, taken first so that its own timeout cannot race the answer away.
    let waiter = take_waiter(id);
    let credential_to = if credential.is_some() && waiter.is_some() {
        "requester"
    } else {
        "owner"
    };
    let recorded = serde_json::to_string(&result).map_err(|e| ApiError::internal(e.to_string()))?;
    if !s
        .db
        .approve_permission_request(
            id,
            &key_id,
            account,
            credential_to,
            &recorded,
            kms_db::now_secs(),
        )
        .await?
    {
        // Decided or expired meanwhile: the call (if any) reads the row.
        return Err(load(s.db.get_permission_request(id).await?).unwrap_err());
    }
    let mut answer = result.clone();
    if credential_to == "requester" {
        if let Some(c) = credential {
            answer["signerData"]["credential"] = json!(c);
        }
    }
    let delivered = waiter.is_some_and(|w| w.send(Ok(answer)).is_ok());
    Ok(Approved {
        result,
        delivered,
        credential_to: if delivered { credential_to } else { "owner" },
    })
}

/// The owner cancelled request `id`: the waiting call is answered 4001.
pub async fn reject(s: &AppState, id: &str) -> Result<bool, ApiError> {
    load(s.db.get_permission_request(id).await?)?;
    let waiter = take_waiter(id);
    if !s
        .db
        .reject_permission_request(id, kms_db::now_secs())
        .await?
    {
        return Err(load(s.db.get_permission_request(id).await?).unwrap_err());
    }
    Ok(waiter.is_some_and(|w| w.send(Err(rejected(id))).is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const EXP: u64 = NOW + 86_400;
    const TOKEN: &str = "0x1111111111111111111111111111111111111111";
    const DEX: &str = "0x2222222222222222222222222222222222222222";
    const PAYEE: &str = "0x3333333333333333333333333333333333333333";

    fn gas() -> Value {
        json!({"type": "gas-limit", "data": {"limit": "0x2386f26fc10000"}})
    }

    fn req(perms: Value) -> Value {
        json!({"expiry": EXP, "permissions": perms})
    }

    fn unsupported_names(e: &RpcError) -> Vec<String> {
        assert_eq!(e.code, UNSUPPORTED, "{e:?}");
        e.data.as_ref().unwrap()["unsupported"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    /// The JSON viem's `grantPermissions` sends (numbers as hex, `required` filled in).
    #[test]
    fn viem_shaped_request_maps_onto_the_session() {
        let m = map_request(
            &req(json!([
                {"type": "native-token-transfer", "data": {"ticker": "ETH", "recipients": [PAYEE]},
                 "policies": [{"type": "token-allowance", "data": {"allowance": "0xde0b6b3a7640000"}}, gas()],
                 "required": true},
                {"type": "erc20-token-transfer", "data": {"address": TOKEN, "ticker": "TEST"},
                 "policies": [{"type": "token-allowance", "data": {"allowance": "0x64"}}], "required": true},
                {"type": "contract-call", "data": {"address": DEX,
                 "calls": ["transfer(address,uint256)", "function approve(address,uint256)", "0x12345678"]},
                 "policies": [], "required": false},
            ])),
            NOW,
        )
        .unwrap();
        assert_eq!(m.expiry, EXP);
        assert_eq!(m.granted.len(), 3);
        assert!(m.dropped.is_empty());
        let s = &m.session;
        assert_eq!(s["spendCap"], "1000000000000000000");
        assert_eq!(s["gasCap"], "10000000000000000");
        assert_eq!(s["validAfter"], NOW);
        assert_eq!(s["validUntil"], EXP);
        assert_eq!(
            s["tokens"],
            json!([{"token": "0x1111111111111111111111111111111111111111", "cap": "100"}])
        );
        assert_eq!(
            s["targets"],
            json!([
                {"target": "0x2222222222222222222222222222222222222222",
                 "selectors": ["0xa9059cbb", "0x095ea7b3", "0x12345678"]},
                "0x3333333333333333333333333333333333333333",
            ])
        );
        // It deserialises as the grant request the ceremony takes.
        let mut with_key = s.clone();
        with_key["keyId"] = json!("w:0");
        serde_json::from_value::<AgentSessionRequest>(with_key).unwrap();
    }

    #[test]
    fn newer_names_carry_their_allowance_in_data() {
        let m = map_request(
            &req(json!([
                {"type": "native-token-limit", "data": {"allowance": "1000", "recipients": [PAYEE]},
                 "policies": [gas()]},
                {"type": "erc20-token-limit", "data": {"address": TOKEN, "allowance": "0x10"}},
            ])),
            NOW,
        )
        .unwrap();
        assert_eq!(m.session["spendCap"], "1000");
        assert_eq!(m.session["tokens"][0]["cap"], "16");
    }

    #[test]
    fn the_smallest_gas_limit_is_the_budget() {
        let m = map_request(
            &req(json!([
                {"type": "contract-call", "data": {"address": DEX, "calls": ["0x12345678"]},
                 "policies": [{"type": "gas-limit", "data": {"limit": "500"}}]},
                {"type": "erc20-token-transfer", "data": {"address": TOKEN},
                 "policies": [{"type": "token-allowance", "data": {"allowance": "1"}},
                              {"type": "gas-limit", "data": {"limit": "300"}}]},
            ])),
            NOW,
        )
        .unwrap();
        assert_eq!(m.session["gasCap"], "300");
        assert_eq!(m.session["spendCap"], "0");
    }

    #[test]
    fn a_required_rate_limit_is_refused_by_name() {
        let e = map_request(
            &req(json!([
                {"type": "contract-call", "data": {"address": DEX, "calls": ["0x12345678"]},
                 "policies": [gas(), {"type": "rate-limit", "data": {"count": 5, "interval": 3600}}],
                 "required": true},
            ])),
            NOW,
        )
        .unwrap_err();
        assert_eq!(unsupported_names(&e), vec!["rate-limit"]);
        assert_eq!(
            e.data.unwrap()["reasons"][0]["path"],
            "permissions[0].policies[1]"
        );
    }

    #[test]
    fn an_optional_unsupported_permission_is_dropped_and_reported() {
        let m = map_request(
            &req(json!([
                {"type": "contract-call", "data": {"address": DEX, "calls": ["0x12345678"]},
                 "policies": [gas()], "required": true},
                {"type": "erc721-token-transfer", "data": {"address": TOKEN}, "policies": [],
                 "required": false},
                {"type": "contract-call", "data": {"address": TOKEN, "calls": ["0x12345678"]},
                 "policies": [{"type": "rate-limit", "data": {"count": 1, "interval": 60}}]},
            ])),
            NOW,
        )
        .unwrap();
        assert_eq!(m.granted.len(), 1);
        assert_eq!(m.dropped.len(), 2);
        assert_eq!(m.dropped[0]["type"], "erc721-token-transfer");
        assert_eq!(
            m.dropped[0]["unsupported"][0]["name"],
            "erc721-token-transfer"
        );
        assert_eq!(m.dropped[1]["unsupported"][0]["name"], "rate-limit");
        assert_eq!(m.session["targets"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn unknown_types_and_policies_required_are_refused_by_name() {
        let e = map_request(
            &req(json!([
                {"type": "erc721-token-transfer", "data": {}, "policies": [gas()], "required": true},
                {"type": "contract-call", "data": {"address": DEX, "calls": ["0x12345678"]},
                 "policies": [{"type": "spend-per-day", "data": {}}], "required": true},
                {"type": "contract-call", "data": {"address": TOKEN, "calls": ["0x12345678"]},
                 "policies": [{"type": "token-allowance", "data": {"allowance": "1"}}], "required": true},
            ])),
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            unsupported_names(&e),
            vec!["erc721-token-transfer", "spend-per-day", "token-allowance"]
        );
    }

    #[test]
    fn nothing_grantable_is_refused() {
        let e = map_request(
            &req(json!([{"type": "custom-thing", "data": {}, "policies": []}])),
            NOW,
        )
        .unwrap_err();
        assert_eq!(unsupported_names(&e), vec!["custom-thing"]);
    }

    #[test]
    fn an_outside_signer_is_refused_by_name_the_wallet_is_fine() {
        let perms = json!([{"type": "contract-call", "data": {"address": DEX, "calls": ["0x12345678"]},
            "policies": [gas()]}]);
        let e = map_request(
            &json!({"expiry": EXP, "permissions": perms,
                "signer": {"type": "account", "data": {"id": PAYEE}}}),
            NOW,
        )
        .unwrap_err();
        assert_eq!(unsupported_names(&e), vec!["signer:account"]);
        let e = map_request(
            &json!({"expiry": EXP, "permissions": perms, "signer": {"type": "keys", "data": {"ids": []}}}),
            NOW,
        )
        .unwrap_err();
        assert_eq!(unsupported_names(&e), vec!["signer:keys"]);
        map_request(
            &json!({"expiry": EXP, "permissions": perms, "signer": {"type": "wallet"}}),
            NOW,
        )
        .unwrap();
    }

    #[test]
    fn a_native_allowance_needs_an_allowance_and_somewhere_to_go() {
        let e = map_request(
            &req(
                json!([{"type": "native-token-transfer", "data": {"ticker": "ETH"},
                "policies": [gas()], "required": true}]),
            ),
            NOW,
        )
        .unwrap_err();
        assert_eq!(unsupported_names(&e), vec!["native-token-transfer"]);
        assert!(e.data.unwrap()["reasons"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("token-allowance"));
        let e = map_request(
            &req(
                json!([{"type": "native-token-transfer", "data": {"ticker": "ETH"},
                "policies": [gas(), {"type": "token-allowance", "data": {"allowance": "0x1"}}]}]),
            ),
            NOW,
        )
        .unwrap_err();
        assert_eq!(unsupported_names(&e), vec!["native-token-transfer"]);
        assert!(e.data.unwrap()["reasons"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("recipients"));
        // With a contract-call to attach value to, it is the session's spend cap.
        let m = map_request(
            &req(json!([
                {"type": "native-token-transfer", "data": {"ticker": "ETH"},
                 "policies": [gas(), {"type": "token-allowance", "data": {"allowance": "0x1"}}]},
                {"type": "contract-call", "data": {"address": DEX, "calls": ["deposit()"]}, "policies": []},
            ])),
            NOW,
        )
        .unwrap();
        assert_eq!(m.session["spendCap"], "1");
    }

    #[test]
    fn malformed_requests_are_invalid_params() {
        let perms = json!([{"type": "contract-call", "data": {"address": DEX, "calls": ["0x12345678"]},
            "policies": [gas()]}]);
        let field = |e: RpcError| {
            assert_eq!(e.code, INVALID_PARAMS, "{e:?}");
            e.data.unwrap()["field"].as_str().unwrap().to_owned()
        };
        // Milliseconds, the past, missing.
        assert_eq!(
            field(
                map_request(&json!({"expiry": EXP * 1000, "permissions": perms}), NOW).unwrap_err()
            ),
            "expiry"
        );
        assert_eq!(
            field(map_request(&json!({"expiry": NOW + 5, "permissions": perms}), NOW).unwrap_err()),
            "expiry"
        );
        assert_eq!(
            field(map_request(&json!({"permissions": perms}), NOW).unwrap_err()),
            "expiry"
        );
        assert_eq!(
            field(map_request(&json!({"expiry": EXP, "permissions": []}), NOW).unwrap_err()),
            "permissions"
        );
        assert_eq!(
            field(
                map_request(&json!({"expiry": EXP, "permissions": perms, "ttl": 1}), NOW)
                    .unwrap_err()
            ),
            "ttl"
        );
        assert_eq!(
            field(
                map_request(
                    &req(json!([{"type": "contract-call", "data": {"address": "0x12", "calls": ["0x12345678"]},
                        "policies": [gas()]}])),
                    NOW
                )
                .unwrap_err()
            ),
            "permissions[0].data.address"
        );
        assert_eq!(
            field(
                map_request(
                    &req(json!([{"type": "contract-call", "data": {"address": DEX, "calls": ["not a function"]},
                        "policies": [gas()]}])),
                    NOW
                )
                .unwrap_err()
            ),
            "permissions[0].data.calls[0]"
        );
        assert_eq!(
            field(
                map_request(
                    &req(
                        json!([{"type": "contract-call", "data": {"address": DEX, "calls": []},
                        "policies": [gas()]}])
                    ),
                    NOW
                )
                .unwrap_err()
            ),
            "permissions[0].data.calls"
        );
        assert_eq!(
            field(
                map_request(
                    &req(json!([{"type": "erc20-token-transfer", "data": {"address": TOKEN},
                        "policies": [gas(), {"type": "token-allowance", "data": {"allowance": "lots"}}]}])),
                    NOW
                )
                .unwrap_err()
            ),
            "permissions[0].policies[1].data.allowance"
        );
        // No gas-limit anywhere: the gas budget would be 0 and the agent could not pay.
        let e = map_request(
            &req(
                json!([{"type": "contract-call", "data": {"address": DEX, "calls": ["0x12345678"]},
                "policies": []}]),
            ),
            NOW,
        )
        .unwrap_err();
        assert_eq!(e.code, INVALID_PARAMS);
        assert_eq!(e.data.unwrap()["missing"], json!(["gas-limit"]));
    }

    #[test]
    fn the_context_decodes_to_account_agent_and_key_id() {
        let account = Address::repeat_byte(0xaa);
        let agent = Address::repeat_byte(0xbb);
        let ctx = permissions_context(account, agent, "w:3");
        let bytes = alloy::hex::decode(ctx.trim_start_matches("0x")).unwrap();
        let (a, b, k) = <(Address, Address, String)>::abi_decode_params(&bytes).unwrap();
        assert_eq!((a, b, k.as_str()), (account, agent, "w:3"));
    }
}
