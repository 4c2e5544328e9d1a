//! The companion's agent API over HTTP (`GET /agent/session`, `POST /agent/intents`,
//! `GET /agent/intents/{userOpHash}`), with the agent's Bearer credential, and the one chain read
//! the tools need (an ERC-20's `decimals()`, through `--rpc-url`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use serde_json::{json, Value};

use crate::credential::Credential;

/// A call failed: what a tool reports (never with the credential in it).
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The companion (or the node) could not be reached.
    Unreachable {
        /// What was being reached.
        what: String,
        /// Why (the transport's error).
        reason: String,
    },
    /// The companion answered with an error: its HTTP status, `code`, `message` and `details`.
    Refused {
        /// HTTP status.
        status: u16,
        /// The companion's error code (`target_not_allowed`, `over_budget`, …).
        code: String,
        /// Its message.
        message: String,
        /// Its details (what remains, what is allowed, …), or null.
        details: Value,
    },
    /// Bad input to the tool, found before anything was sent.
    Invalid {
        /// A code (`invalid_argument`, `invalid_amount`, `token_has_no_decimals`, …).
        code: String,
        /// What to change.
        message: String,
    },
}

impl Failure {
    /// A [`Failure::Invalid`].
    pub fn invalid(code: &str, message: impl Into<String>) -> Self {
        Failure::Invalid {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// The error code.
    pub fn code(&self) -> &str {
        match self {
            Failure::Unreachable { .. } => "companion_unreachable",
            Failure::Refused { code, .. } | Failure::Invalid { code, .. } => code,
        }
    }
}

/// The companion's HTTP API for one agent.
#[derive(Debug)]
pub struct CompanionClient {
    http: reqwest::Client,
    base: String,
    credential: Credential,
    rpc_url: Option<String>,
    decimals: Mutex<HashMap<Address, u8>>,
}

impl CompanionClient {
    /// A client of the companion at `base` (e.g. `http://127.0.0.1:3000`) with `credential`;
    /// `rpc_url` is the node read for ERC-20 `decimals()` (none: `transfer_token` refuses).
    pub fn new(base: &str, credential: Credential, rpc_url: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            credential,
            rpc_url,
            decimals: Mutex::new(HashMap::new()),
        }
    }

    /// The companion's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /agent/session` (`account`: one of the agent's sessions; default the latest).
    pub async fn session(&self, account: Option<&str>) -> Result<Value, Failure> {
        let mut path = "/agent/session".to_owned();
        if let Some(a) = account {
            path.push_str(&format!("?account={a}"));
        }
        self.send(self.http.get(self.url(&path))).await
    }

    /// `POST /agent/intents` with `calls` (`[{to, value, data}]`), an optional
    /// `Idempotency-Key` and account.
    pub async fn submit(
        &self,
        calls: Value,
        idempotency_key: Option<&str>,
        account: Option<&str>,
    ) -> Result<Value, Failure> {
        let mut body = json!({ "calls": calls });
        if let Some(a) = account {
            body["account"] = json!(a);
        }
        let mut req = self.http.post(self.url("/agent/intents")).json(&body);
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        self.send(req).await
    }

    /// `GET /agent/intents/{userOpHash}`.
    pub async fn intent(&self, user_op_hash: &str) -> Result<Value, Failure> {
        self.send(
            self.http
                .get(self.url(&format!("/agent/intents/{user_op_hash}"))),
        )
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let resp = req
            .bearer_auth(self.credential.expose())
            .send()
            .await
            .map_err(|e| Failure::Unreachable {
                what: format!("the companion at {}", self.base),
                reason: self.credential.redact(&transport_error(&e)),
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| Failure::Unreachable {
            what: format!("the companion at {}", self.base),
            reason: self.credential.redact(&transport_error(&e)),
        })?;
        let text = self.credential.redact(&text);
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        Err(Failure::Refused {
            status,
            code: field("code").unwrap_or_else(|| format!("http_{status}")),
            message: field("message")
                .or_else(|| field("error"))
                .unwrap_or_else(|| body.to_string()),
            details: body.get("details").cloned().unwrap_or(Value::Null),
        })
    }

    /// The `decimals()` of ERC-20 `token`, read on chain through `--rpc-url` (cached).
    pub async fn decimals(&self, token: Address) -> Result<u8, Failure> {
        if let Some(d) = self
            .decimals
            .lock()
            .ok()
            .and_then(|m| m.get(&token).copied())
        {
            return Ok(d);
        }
        let Some(rpc) = &self.rpc_url else {
            return Err(Failure::invalid(
                "no_rpc_url",
                "transfer_token reads the token's decimals on chain, and this server has no \
                 node to read from: start kms-mcp with --rpc-url (KMS_RPC_URL), or use \
                 submit_intent with the ERC-20 transfer call data and the amount in the \
                 token's smallest units",
            ));
        };
        let req = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
            "params": [{"to": token, "data": "0x313ce567"}, "latest"]});
        let unreachable = |e: reqwest::Error| Failure::Unreachable {
            what: "the node (--rpc-url)".to_owned(),
            reason: transport_error(&e),
        };
        let answer: Value = self
            .http
            .post(rpc)
            .json(&req)
            .send()
            .await
            .map_err(unreachable)?
            .json()
            .await
            .map_err(unreachable)?;
        let no_decimals = || {
            Failure::invalid(
                "token_has_no_decimals",
                format!(
                    "{token} answers no decimals(): it is not an ERC-20 token on this chain \
                     (or not deployed here). Check the token address (get_session lists the \
                     session's tokens)"
                ),
            )
        };
        let hex = answer["result"].as_str().ok_or_else(no_decimals)?;
        let raw = hex.strip_prefix("0x").unwrap_or(hex);
        if raw.is_empty() {
            return Err(no_decimals());
        }
        let v = U256::from_str_radix(raw, 16).map_err(|_| no_decimals())?;
        let d = u8::try_from(v)
            .ok()
            .filter(|d| *d <= 77)
            .ok_or_else(no_decimals)?;
        if let Ok(mut m) = self.decimals.lock() {
            m.insert(token, d);
        }
        Ok(d)
    }
}

/// A transport error in words, with its sources (reqwest's top line alone says little).
fn transport_error(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
