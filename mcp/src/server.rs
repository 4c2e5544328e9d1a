//! The MCP server: the tools and the session resource over one [`CompanionClient`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::utils::parse_units;
use alloy::primitives::{hex, Address, U256};
use rmcp::handler::server::common::schema_for_input;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, JsonObject, ListResourcesResult,
    PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData as McpError, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::companion::{CompanionClient, Failure};

/// The session resource's URI.
pub const SESSION_URI: &str = "kms://session";

/// Longest `wait_for_intent` timeout, in seconds.
pub const MAX_WAIT_SECS: u64 = 600;

/// `get_session` arguments.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetSessionArgs {
    /// The smart account whose session to read: required when the agent has sessions on
    /// several accounts (default: its one session).
    #[schemars(example = "0x5FbDB2315678afecb367f032d93F642f64180aa3")]
    #[serde(default)]
    pub account: Option<String>,
}

/// One call of an intent.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallArg {
    /// The address called: a target the session allows (see get_session).
    #[schemars(example = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8")]
    pub to: String,
    /// Native value in wei, as a decimal string (default "0").
    #[schemars(example = "10000000000000000")]
    #[serde(default)]
    pub value: Option<String>,
    /// Call data, 0x hex (default empty: a plain transfer). Its first 4 bytes must be a function
    /// the session allows on `to`.
    #[schemars(
        example = "0xa9059cbb00000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c80000000000000000000000000000000000000000000000000de0b6b3a7640000"
    )]
    #[serde(default)]
    pub data: Option<String>,
}

/// `submit_intent` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitIntentArgs {
    /// The calls, in order (1 to 16), executed atomically from the session's account.
    #[schemars(example = serde_json::json!([{"to": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "value": "10000000000000000"}]))]
    pub calls: Vec<CallArg>,
    /// Makes a retried submission return the first result instead of paying twice (1 to 128
    /// visible ASCII characters).
    #[schemars(example = "invoice-2026-001")]
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The smart account to act from: required when the agent has sessions on several accounts
    /// (default: the agent's one session).
    #[schemars(example = "0x5FbDB2315678afecb367f032d93F642f64180aa3")]
    #[serde(default)]
    pub account: Option<String>,
}

/// `transfer_native` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferNativeArgs {
    /// The recipient: a target the session allows.
    #[schemars(example = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8")]
    pub to: String,
    /// The amount in ETH (the chain's native currency), as a decimal string, up to 18 decimals.
    #[schemars(example = "0.05")]
    pub amount: String,
    /// Makes a retried transfer return the first result instead of paying twice.
    #[schemars(example = "rent-2026-11")]
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The smart account to pay from: required when the agent has sessions on several accounts
    /// (default: the agent's one session).
    #[schemars(example = "0x5FbDB2315678afecb367f032d93F642f64180aa3")]
    #[serde(default)]
    pub account: Option<String>,
}

/// `transfer_token` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferTokenArgs {
    /// The ERC-20 token contract (a token the session allows).
    #[schemars(example = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512")]
    pub token: String,
    /// The recipient.
    #[schemars(example = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8")]
    pub to: String,
    /// The amount in whole token units as a decimal string (e.g. "12.5" of a 6-decimals token
    /// is 12500000 base units); the token's decimals are read on chain.
    #[schemars(example = "12.5")]
    pub amount: String,
    /// Makes a retried transfer return the first result instead of paying twice.
    #[schemars(example = "payout-42")]
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The smart account to pay from: required when the agent has sessions on several accounts
    /// (default: the agent's one session).
    #[schemars(example = "0x5FbDB2315678afecb367f032d93F642f64180aa3")]
    #[serde(default)]
    pub account: Option<String>,
}

/// `get_intent` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetIntentArgs {
    /// The intent's userOpHash, as returned by submit_intent or a transfer tool.
    #[schemars(example = "0x8f3e7f0d9c1b4a2e6d5c3b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e")]
    pub user_op_hash: String,
}

/// `wait_for_intent` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitForIntentArgs {
    /// The intent's userOpHash.
    #[schemars(example = "0x8f3e7f0d9c1b4a2e6d5c3b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e")]
    pub user_op_hash: String,
    /// How long to wait for a final status, in seconds (1 to 600, default 60). Progress is
    /// reported every second to a client that asked for it.
    #[schemars(example = 60)]
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// The MCP server of one agent: its tools act through the companion at the agent's credential.
#[derive(Clone)]
pub struct KmsMcp {
    companion: Arc<CompanionClient>,
    tool_router: ToolRouter<KmsMcp>,
}

impl std::fmt::Debug for KmsMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsMcp")
            .field("companion", &self.companion.base())
            .finish_non_exhaustive()
    }
}

/// The arguments of a tool call as `T`, or a tool error saying what to change.
fn args<T: DeserializeOwned>(tool: &str, raw: JsonObject) -> Result<T, Box<CallToolResult>> {
    serde_json::from_value(Value::Object(raw)).map_err(|e| {
        Box::new(failure(&Failure::invalid(
            "invalid_argument",
            format!(
                "the arguments of {tool} do not fit its input schema: {e}. Send only the \
                 fields of the schema, with the types it gives"
            ),
        )))
    })
}

/// Unwraps a `Result<T, Box<CallToolResult>>` or returns its tool error.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return Ok(*r),
        }
    };
}

fn address(field: &str, s: &str) -> Result<Address, Box<CallToolResult>> {
    s.trim().parse::<Address>().map_err(|_| {
        Box::new(failure(&Failure::invalid(
            "invalid_address",
            format!("{field} {s:?} is not an address: give 0x followed by 40 hex digits"),
        )))
    })
}

/// `amount` in units of 10^-`decimals`, or a tool error.
fn amount(s: &str, decimals: u8, unit: &str) -> Result<U256, Box<CallToolResult>> {
    let bad = |why: &str| {
        Box::new(failure(&Failure::invalid(
            "invalid_amount",
            format!(
                "amount {s:?} {why}: give a non-negative decimal number of {unit} with at most \
                 {decimals} decimals, such as \"0.05\""
            ),
        )))
    };
    let t = s.trim();
    if t.is_empty() || t.starts_with('-') || t.starts_with('+') {
        return Err(bad("does not parse"));
    }
    if let Some((_, frac)) = t.split_once('.') {
        if frac.len() > usize::from(decimals) {
            return Err(bad("has too many decimals"));
        }
    }
    parse_units(t, decimals)
        .map(|u| u.get_absolute())
        .map_err(|_| bad("does not parse"))
}

/// What a model should do about a refusal with `code`.
pub fn hint(code: &str) -> &'static str {
    match code {
        "target_not_allowed" => "The session does not allow calling this address. Call get_session for the allowed targets and pay or call only those; the owner must grant a new session to add one.",
        "selector_not_allowed" => "The session does not allow this function on this target. get_session lists the functions (selectors) allowed per target; plain transfers (no data) are allowed on every listed target.",
        "over_budget" | "period_over_budget" => "The value exceeds what is left of the session's native-value budget (details.available, in wei). Send at most what is available, or ask the owner for a larger budget.",
        "gas_over_budget" | "gas_budget_exhausted" => "The session's gas budget is too low for this operation (details say what is left). Fewer or smaller operations, or a new grant from the owner, are needed.",
        "token_over_budget" => "The token amount exceeds what is left of the session's cap for this token (details.available, in the token's smallest units). Send at most what is available.",
        "malformed_token_call" => "The token call could not be read as transfer/approve/transferFrom with well-formed arguments. Use transfer_token, or encode the ERC-20 call correctly.",
        "usage_exhausted" => "The session has used all the operations it may make. Ask the owner for a new session.",
        "session_expired" => "The session's validity window has ended. Ask the owner for a new session; retrying will not help.",
        "session_not_yet_valid" => "The session's validity window has not started yet (get_session shows validAfter). Wait until then.",
        "session_revoked" | "no_session" => "The agent has no active session (on this account). Call get_session; the owner must grant a session before the agent can act.",
        "credential_revoked" | "credential_expired" | "credential_invalid" | "credential_superseded" | "credential_missing" | "unauthorized" => "The companion refused the agent's credential: it was revoked, expired or replaced. Nothing this agent sends will be accepted until the owner issues a new credential and kms-mcp is restarted with it; do not retry.",
        "rate_limited" => "Too many requests: wait a few seconds, then retry.",
        "bundler_unavailable" => "The operation was signed and is kept by the companion (details.userOpHash). Follow it with wait_for_intent; do not submit the same calls again.",
        "idempotency_key_reused" => "This idempotency key was used for different calls. Use a new key for a new payment.",
        "intent_not_found" => "No intent of this agent has this userOpHash. Use the hash returned by submit_intent or a transfer tool.",
        "companion_unreachable" => "The companion could not be reached. Check that it runs and that KMS_URL points at it, then retry.",
        "invalid_argument" | "invalid_address" | "invalid_amount" => "Fix the argument as the message says, then call again.",
        "token_has_no_decimals" => "Check the token address: it must be an ERC-20 contract on this chain.",
        "no_rpc_url" => "Configure --rpc-url, or use submit_intent with encoded call data.",
        _ => "Read the message and details; change the call accordingly.",
    }
}

/// A failure as a tool error: `{error, httpStatus, message, details, hint}`, with a one-line
/// summary as its text.
pub fn failure(f: &Failure) -> CallToolResult {
    let code = f.code().to_owned();
    let (status, message, details) = match f {
        Failure::Unreachable { what, reason } => {
            (None, format!("cannot reach {what}: {reason}"), Value::Null)
        }
        Failure::Refused {
            status,
            message,
            details,
            ..
        } => (Some(*status), message.clone(), details.clone()),
        Failure::Invalid { message, .. } => (None, message.clone(), Value::Null),
    };
    let hint = hint(&code);
    let v = json!({
        "error": code,
        "httpStatus": status,
        "message": message,
        "details": details,
        "hint": hint,
    });
    let mut text = format!("refused: {code}: {message}");
    if !details.is_null() {
        text.push_str(&format!(" (details: {details})"));
    }
    text.push_str(&format!(". {hint}"));
    let mut r = CallToolResult::structured_error(v);
    r.content = vec![ContentBlock::text(text)];
    r
}

/// A successful result: `value` as structured content, `summary` then the JSON as text.
fn success(summary: String, value: Value) -> CallToolResult {
    let mut r = CallToolResult::structured(value.clone());
    r.content = vec![ContentBlock::text(format!("{summary}\n{value}"))];
    r
}

fn from<T>(r: Result<T, Failure>) -> Result<T, Box<CallToolResult>> {
    r.map_err(|f| Box::new(failure(&f)))
}

/// Whether an intent status is final.
fn settled(v: &Value) -> bool {
    !matches!(v["status"].as_str(), Some("signed" | "pending"))
}

fn intent_summary(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    match v["status"].as_str() {
        Some("included") => format!(
            "intent {} included in block {} (transaction {}, success {}, gas paid {} wei)",
            s("userOpHash"),
            s("blockNumber"),
            s("transactionHash"),
            v["success"],
            s("actualGasCost")
        ),
        Some(st @ ("signed" | "pending")) => format!(
            "intent {} is {st}: not on chain yet; call wait_for_intent",
            s("userOpHash")
        ),
        Some(st) => format!(
            "intent {} is {st} ({}): nothing moved{}",
            s("userOpHash"),
            s("statusReason"),
            v["error"]
                .as_str()
                .map(|e| format!("; {e}"))
                .unwrap_or_default()
        ),
        None => format!("intent: {v}"),
    }
}

#[tool_router]
impl KmsMcp {
    /// A server over `companion`.
    pub fn new(companion: CompanionClient) -> Self {
        Self {
            companion: Arc::new(companion),
            tool_router: Self::tool_router(),
        }
    }

    async fn submit(
        &self,
        calls: Value,
        idempotency_key: Option<&str>,
        account: Option<&str>,
        what: String,
    ) -> CallToolResult {
        match self.companion.submit(calls, idempotency_key, account).await {
            Ok(v) => success(
                format!(
                    "{what}: submitted as intent {} ({}). Call wait_for_intent with this \
                     userOpHash to learn when it lands.",
                    v["userOpHash"].as_str().unwrap_or("?"),
                    v["status"].as_str().unwrap_or("?")
                ),
                v,
            ),
            Err(f) => failure(&f),
        }
    }

    #[tool(
        description = "The agent's session as the chain has it: the smart account it acts from, the agent address, the allowed targets and functions, the ERC-20 caps with what is left, the remaining native-value and gas budgets (wei), the validity window (unix seconds) and the status (active, not_yet_valid, expired, revoked). Call it before paying to know what is allowed.",
        input_schema = schema_for_input::<GetSessionArgs>().expect("schema"),
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    async fn get_session(
        &self,
        Parameters(raw): Parameters<JsonObject>,
    ) -> Result<CallToolResult, McpError> {
        let a: GetSessionArgs = tri!(args("get_session", raw));
        let v = tri!(from(self.companion.session(a.account.as_deref()).await));
        let summary = format!(
            "session of agent {} on account {}: {}, {} wei of value and {} wei of gas left",
            v["agentAddress"].as_str().unwrap_or("?"),
            v["account"].as_str().unwrap_or("?"),
            v["status"].as_str().unwrap_or("?"),
            v["remainingValue"].as_str().unwrap_or("?"),
            v["remainingGas"].as_str().unwrap_or("?"),
        );
        Ok(success(summary, v))
    }

    #[tool(
        description = "Submit an intent: calls [{to, value (wei), data}] executed from the session's smart account as one ERC-4337 operation signed in the TEE. The companion checks the session first; a refusal comes back as an error with its code (target_not_allowed, selector_not_allowed, over_budget, gas_over_budget, token_over_budget, session_expired, no_session, ...) and details. Returns the userOpHash; follow it with wait_for_intent.",
        input_schema = schema_for_input::<SubmitIntentArgs>().expect("schema"),
        annotations(destructive_hint = true, open_world_hint = true)
    )]
    async fn submit_intent(
        &self,
        Parameters(raw): Parameters<JsonObject>,
    ) -> Result<CallToolResult, McpError> {
        let a: SubmitIntentArgs = tri!(args("submit_intent", raw));
        let mut calls = Vec::with_capacity(a.calls.len());
        for c in &a.calls {
            let to = tri!(address("to", &c.to));
            let mut call = json!({ "to": to });
            if let Some(v) = &c.value {
                let wei = tri!(amount(v, 0, "wei"));
                call["value"] = json!(wei.to_string());
            }
            if let Some(d) = &c.data {
                call["data"] = json!(d);
            }
            calls.push(call);
        }
        let n = calls.len();
        Ok(self
            .submit(
                Value::Array(calls),
                a.idempotency_key.as_deref(),
                a.account.as_deref(),
                format!("{n} call(s)"),
            )
            .await)
    }

    #[tool(
        description = "Pay ETH (the native currency) to an address the session allows. amount is in ETH as a decimal string (\"0.05\"). Returns the userOpHash; follow it with wait_for_intent.",
        input_schema = schema_for_input::<TransferNativeArgs>().expect("schema"),
        annotations(destructive_hint = true, open_world_hint = true)
    )]
    async fn transfer_native(
        &self,
        Parameters(raw): Parameters<JsonObject>,
    ) -> Result<CallToolResult, McpError> {
        let a: TransferNativeArgs = tri!(args("transfer_native", raw));
        let to = tri!(address("to", &a.to));
        let wei = tri!(amount(&a.amount, 18, "ETH"));
        Ok(self
            .submit(
                json!([{ "to": to, "value": wei.to_string() }]),
                a.idempotency_key.as_deref(),
                a.account.as_deref(),
                format!("pay {} ETH to {to}", a.amount.trim()),
            )
            .await)
    }

    #[tool(
        description = "Send an ERC-20 token: transfer(to, amount) on the token contract, with amount in whole token units (\"12.5\"); the token's decimals are read on chain. The session must allow the token (its cap is counted on chain). Returns the userOpHash; follow it with wait_for_intent.",
        input_schema = schema_for_input::<TransferTokenArgs>().expect("schema"),
        annotations(destructive_hint = true, open_world_hint = true)
    )]
    async fn transfer_token(
        &self,
        Parameters(raw): Parameters<JsonObject>,
    ) -> Result<CallToolResult, McpError> {
        let a: TransferTokenArgs = tri!(args("transfer_token", raw));
        let token = tri!(address("token", &a.token));
        let to = tri!(address("to", &a.to));
        let decimals = tri!(from(self.companion.decimals(token).await));
        let units = tri!(amount(&a.amount, decimals, "token units"));
        let mut data = Vec::with_capacity(68);
        data.extend_from_slice(&[0xa9, 0x05, 0x9c, 0xbb]);
        data.extend_from_slice(&[0u8; 12]);
        data.extend_from_slice(to.as_slice());
        data.extend_from_slice(&units.to_be_bytes::<32>());
        Ok(self
            .submit(
                json!([{ "to": token, "data": hex::encode_prefixed(data) }]),
                a.idempotency_key.as_deref(),
                a.account.as_deref(),
                format!(
                    "send {} of token {token} ({units} base units, {decimals} decimals) to {to}",
                    a.amount.trim()
                ),
            )
            .await)
    }

    #[tool(
        description = "An intent's status: signed or pending (not on chain yet), included (with transaction, block, success and gas paid in wei), or failed, replaced, dropped, cancelled (nothing moved; statusReason and error say why).",
        input_schema = schema_for_input::<GetIntentArgs>().expect("schema"),
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    async fn get_intent(
        &self,
        Parameters(raw): Parameters<JsonObject>,
    ) -> Result<CallToolResult, McpError> {
        let a: GetIntentArgs = tri!(args("get_intent", raw));
        let v = tri!(from(self.companion.intent(a.user_op_hash.trim()).await));
        Ok(success(intent_summary(&v), v))
    }

    #[tool(
        description = "Wait until an intent has a final status (included, failed, replaced, dropped, cancelled), at most timeout_seconds (default 60, at most 600), with progress notifications every second. Returns the intent (as get_intent) with waitTimedOut true if it was still open when the time ran out: then call again.",
        input_schema = schema_for_input::<WaitForIntentArgs>().expect("schema"),
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    async fn wait_for_intent(
        &self,
        Parameters(raw): Parameters<JsonObject>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let a: WaitForIntentArgs = tri!(args("wait_for_intent", raw));
        let timeout = a.timeout_seconds.unwrap_or(60);
        if timeout == 0 || timeout > MAX_WAIT_SECS {
            return Ok(failure(&Failure::invalid(
                "invalid_argument",
                format!("timeout_seconds {timeout} is out of range: give 1 to {MAX_WAIT_SECS}"),
            )));
        }
        let token = ctx.meta.get_progress_token();
        let start = Instant::now();
        let limit = Duration::from_secs(timeout);
        let mut step = 0u32;
        loop {
            let mut v = tri!(from(self.companion.intent(a.user_op_hash.trim()).await));
            let done = settled(&v);
            let elapsed = start.elapsed();
            // One notification per look (the last one with the final status), for a client
            // that asked for progress.
            if let Some(t) = &token {
                step += 1;
                let _ = ctx
                    .peer
                    .notify_progress(
                        ProgressNotificationParam::new(t.clone(), f64::from(step))
                            .with_total(timeout as f64)
                            .with_message(format!(
                                "intent {} after {} s",
                                v["status"].as_str().unwrap_or("?"),
                                elapsed.as_secs()
                            )),
                    )
                    .await;
            }
            if done || elapsed >= limit {
                v["waitTimedOut"] = json!(!done);
                let mut summary = intent_summary(&v);
                if !done {
                    summary = format!("still open after {timeout} s: {summary}");
                }
                return Ok(success(summary, v));
            }
            let wait = Duration::from_secs(1).min(limit.saturating_sub(elapsed));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = ctx.ct.cancelled() => {
                    return Err(McpError::internal_error("wait_for_intent cancelled", None));
                }
            }
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for KmsMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("kms-mcp", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Tools of one AI agent's on-chain session: its key stays in a TEE and its limits are \
             enforced on chain. Call get_session to see what the agent may do (targets, \
             functions, budgets, validity); pay with transfer_native or transfer_token, or \
             submit_intent for other calls; follow each userOpHash with wait_for_intent. A \
             refusal is a tool error with a code (target_not_allowed, over_budget, ...), \
             details and a hint on what to change. The session is also the resource \
             kms://session.",
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(vec![Resource::new(
            SESSION_URI,
            "session",
        )
        .with_title("The agent's on-chain session")
        .with_description(
            "What the agent may do, as the chain has it: account, agent address, allowed \
             targets and functions, token caps, remaining budgets, validity window, status",
        )
        .with_mime_type("application/json")]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        if request.uri != SESSION_URI {
            return Err(McpError::resource_not_found(
                format!(
                    "no resource {}: the one resource is {SESSION_URI}",
                    request.uri
                ),
                None,
            ));
        }
        match self.companion.session(None).await {
            Ok(v) => Ok(ReadResourceResult::new(vec![ResourceContents::text(
                serde_json::to_string_pretty(&v).unwrap_or_default(),
                SESSION_URI,
            )
            .with_mime_type("application/json")])
            .into()),
            Err(f) => {
                let r = failure(&f);
                Err(McpError::internal_error(
                    format!("cannot read the session: {}: {}", f.code(), hint(f.code())),
                    r.structured_content,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_strictly() {
        assert_eq!(
            amount("0.05", 18, "ETH").unwrap(),
            U256::from(50_000_000_000_000_000u64)
        );
        assert_eq!(amount("12.5", 6, "x").unwrap(), U256::from(12_500_000u64));
        for bad in ["", "-1", "abc", "1.2.3", "0.1234567"] {
            assert!(amount(bad, 6, "x").is_err(), "{bad}");
        }
        let e = amount("lots", 18, "ETH").unwrap_err();
        assert_eq!(e.is_error, Some(true));
        assert!(e.structured_content.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("lots"));
    }

    #[test]
    fn refusals_carry_code_details_and_hint() {
        let r = failure(&Failure::Refused {
            status: 403,
            code: "over_budget".into(),
            message: "over".into(),
            details: json!({"available": "5"}),
        });
        assert_eq!(r.is_error, Some(true));
        let v = r.structured_content.unwrap();
        assert_eq!(v["error"], "over_budget");
        assert_eq!(v["httpStatus"], 403);
        assert_eq!(v["details"]["available"], "5");
        assert!(v["hint"].as_str().unwrap().contains("available"));
    }

    #[test]
    fn unknown_arguments_are_tool_errors() {
        let mut raw = JsonObject::new();
        raw.insert("to".into(), json!("0x00"));
        raw.insert("amount".into(), json!("1"));
        raw.insert("memo".into(), json!("x"));
        let e = args::<TransferNativeArgs>("transfer_native", raw).unwrap_err();
        let v = e.structured_content.unwrap();
        assert_eq!(v["error"], "invalid_argument");
        assert!(v["message"].as_str().unwrap().contains("memo"), "{v}");
    }

    #[test]
    fn schemas_describe_every_field_with_examples() {
        let schemas = [
            schema_for_input::<GetSessionArgs>().unwrap(),
            schema_for_input::<SubmitIntentArgs>().unwrap(),
            schema_for_input::<TransferNativeArgs>().unwrap(),
            schema_for_input::<TransferTokenArgs>().unwrap(),
            schema_for_input::<GetIntentArgs>().unwrap(),
            schema_for_input::<WaitForIntentArgs>().unwrap(),
        ];
        let call = &schemas[1]["$defs"]["CallArg"]["properties"];
        let fields = schemas
            .iter()
            .flat_map(|s| s["properties"].as_object().unwrap().iter())
            .chain(call.as_object().unwrap().iter());
        for (name, p) in fields {
            assert!(p.get("description").is_some(), "{name}: {p}");
            assert!(
                p["examples"].as_array().is_some_and(|e| !e.is_empty()),
                "{name}: {p}"
            );
        }
    }
}
