//! The companion for HTTP end-to-end tests: the real server (in-process, on a free port of
//! 127.0.0.1) over its own `ta-sim` process and SQLite file, with the chain settings of a running
//! [`Stack`](crate::stack::Stack), and the tests' HTTP client ([`kms_test_support::Client`])
//! doing real WebAuthn ceremonies with a software passkey ([`kms_test_support::Soft`]).

use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use kms_chain::userop::EntryPointVersion;
/// The ceremonies' software passkey, and what answers them.
pub use kms_test_support::{Authenticator, Soft};
use kms_test_support::{Client, ClientError};
use serde_json::{json, Value};
use webauthn_rs::prelude::Url;

use crate::stack::StackInfo;
use crate::ta::{TaSim, TaSimError};

/// How long [`Companion::wait_intent`] waits for an intent to settle.
pub const INTENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A harness step failed.
#[derive(Debug, thiserror::Error)]
pub enum CompanionError {
    /// `ta-sim`.
    #[error(transparent)]
    TaSim(#[from] TaSimError),
    /// The server did not start.
    #[error("companion: {0}")]
    Start(String),
    /// An HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// A step of the HTTP client failed (the exchange, or an answer other than 200).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An answer was not what the step needs.
    #[error("{0}")]
    Unexpected(String),
}

/// The gas cap of [`day_session`]: 0.1 ETH, hundreds of operations at a local chain's fees.
pub const DAY_SESSION_GAS_CAP: u128 = 100_000_000_000_000_000;

/// A `/kms/agent-sessions` session (without keyId) allowing plain transfers to `targets` with
/// spend cap `cap` wei and gas cap [`DAY_SESSION_GAS_CAP`], valid from a minute before `now`
/// (chain seconds) for 24 hours; the operator is the revoker.
pub fn day_session(targets: &[Address], cap: U256, now: u64) -> Value {
    json!({
        "targets": targets,
        "spendCap": cap.to_string(),
        "gasCap": DAY_SESSION_GAS_CAP.to_string(),
        "validAfter": now - 60,
        "validUntil": now + 24 * 3600,
    })
}

/// A `Server-Timing` header (`name;dur=<ms>, ...`) as (name, milliseconds) in order; `None`
/// when an entry is not of that form.
pub fn server_timing(header: &str) -> Option<Vec<(String, f64)>> {
    header
        .split(", ")
        .map(|p| {
            let (name, dur) = p.split_once(";dur=")?;
            Some((name.to_owned(), dur.parse().ok()?))
        })
        .collect()
}

/// The companion's command-line arguments for the chain of `info` and `version`.
pub fn chain_args(info: &StackInfo, version: EntryPointVersion) -> Vec<String> {
    let (entry_point, factory, bundler) = match version {
        EntryPointVersion::V07 => (
            info.entry_point_v07,
            info.account_factory_v07,
            info.bundler_url.clone(),
        ),
        EntryPointVersion::V08 => (
            info.entry_point_v08,
            info.account_factory_v08,
            info.bundler_url_v08
                .clone()
                .unwrap_or_else(|| info.bundler_url.clone()),
        ),
    };
    vec![
        "--rpc-url".into(),
        info.rpc_url.clone(),
        "--bundler-url".into(),
        bundler,
        "--validator-address".into(),
        info.session_key_validator.to_string(),
        "--account-factory".into(),
        factory.to_string(),
        "--entry-point-version".into(),
        version.to_string(),
        "--entry-point".into(),
        entry_point.to_string(),
        "--chain-id".into(),
        info.chain_id.to_string(),
        "--eip7702-account".into(),
        info.eip7702_account.to_string(),
    ]
}

/// A running companion (stopped, with its `ta-sim`, when dropped or shut down).
pub struct Companion {
    server: Option<kms_companion::Running>,
    /// Its `ta-sim`.
    pub sim: TaSim,
    _dir: tempfile::TempDir,
    api_key: String,
    client: Client,
}

impl std::fmt::Debug for Companion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Companion")
            .field("url", &self.url(""))
            .finish_non_exhaustive()
    }
}

impl Companion {
    /// Starts `ta-sim` and the companion with the chain settings of `info` for `version`, in
    /// API-key mode with one key provisioned for the harness.
    pub async fn start(
        info: &StackInfo,
        version: EntryPointVersion,
    ) -> Result<Self, CompanionError> {
        Self::start_with(info, version, &[]).await
    }

    /// [`Companion::start`] with extra companion flags (e.g. `--agent-rate-limit=1000`); a chain
    /// flag among them (e.g. `--bundler-url` of a [`crate::proxy::Proxy`]) replaces the
    /// stack's.
    pub async fn start_with(
        info: &StackInfo,
        version: EntryPointVersion,
        extra_args: &[&str],
    ) -> Result<Self, CompanionError> {
        let sim = TaSim::start()?;
        let dir = tempfile::Builder::new()
            .prefix("kms-companion-")
            .tempdir()
            .map_err(|e| CompanionError::Start(e.to_string()))?;
        let mut args: Vec<String> = vec![
            "companion".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            dir.path().display().to_string(),
            "--tee".into(),
            format!("sim:{}", sim.socket().display()),
            "--rp-id".into(),
            "localhost".into(),
            "--log".into(),
            "warn".into(),
        ];
        // A chain flag among the extra ones (e.g. `--bundler-url` of a fault proxy) replaces
        // the stack's; so do the harness's waits (e.g. `--receipt-wait-secs=0`).
        let overridden = |flag: &str| {
            extra_args
                .iter()
                .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
        };
        for (flag, value) in [("--receipt-wait-secs", "60"), ("--intent-poll-secs", "1")] {
            if !overridden(flag) {
                args.extend([flag.to_owned(), value.to_owned()]);
            }
        }
        for pair in chain_args(info, version).chunks(2) {
            if !overridden(&pair[0]) {
                args.extend(pair.iter().cloned());
            }
        }
        args.extend(extra_args.iter().map(|a| (*a).to_owned()));
        let config = <kms_companion::Config as clap::Parser>::try_parse_from(args)
            .map_err(|e| CompanionError::Start(e.to_string()))?;
        let server = kms_companion::start(config)
            .await
            .map_err(|e| CompanionError::Start(e.to_string()))?;
        let api_key = server
            .state
            .db
            .create_api_key("e2e", kms_db::now_secs())
            .await
            .map_err(|e| CompanionError::Start(e.to_string()))?
            .key;
        let client = Client::new(
            reqwest::Client::new(),
            server.addr.port(),
            Some(api_key.clone()),
        );
        Ok(Self {
            server: Some(server),
            sim,
            _dir: dir,
            api_key,
            client,
        })
    }

    /// The API key provisioned for the harness (send it as `x-api-key`).
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The running server.
    pub fn server(&self) -> &kms_companion::Running {
        self.server.as_ref().expect("running")
    }

    /// The HTTP client (with the harness's API key).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        self.client.url(path)
    }

    /// The WebAuthn origin (`http://localhost:<port>`).
    pub fn origin(&self) -> Url {
        self.client.origin()
    }

    /// Stops the server gracefully (then `ta-sim` when dropped).
    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// POST JSON with the harness's API key.
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), CompanionError> {
        Ok(self.client.post(path, body).await?)
    }

    /// POST JSON with a Bearer agent credential and extra headers.
    pub async fn post_bearer(
        &self,
        path: &str,
        jwt: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Value), CompanionError> {
        let (status, body, _) = self.client.post_bearer(path, jwt, body, headers).await?;
        Ok((status, body))
    }

    /// GET with a Bearer agent credential.
    pub async fn get_bearer(&self, path: &str, jwt: &str) -> Result<(u16, Value), CompanionError> {
        Ok(self.client.get(path, Some(jwt)).await?)
    }

    /// GET without credentials.
    pub async fn get(&self, path: &str) -> Result<(u16, Value), CompanionError> {
        Ok(self.client.get(path, None).await?)
    }

    fn expect(
        what: &str,
        (status, body): (u16, Value),
        want: u16,
    ) -> Result<Value, CompanionError> {
        if status == want {
            Ok(body)
        } else {
            Err(CompanionError::Unexpected(format!(
                "{what}: HTTP {status} (expected {want}): {body}"
            )))
        }
    }

    /// Registers a wallet for `user`: `/BeginRegistration` + `/CompleteRegistration`.
    pub async fn register(&self, user: &mut dyn Authenticator) -> Result<Wallet, CompanionError> {
        let done = self.client.register(user, "e2e wallet").await?;
        let key_id = done["KeyId"].as_str().unwrap_or_default().to_owned();
        let address = done["Address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| CompanionError::Unexpected(format!("no Address in {done}")))?;
        Ok(Wallet { key_id, address })
    }

    /// Starts an authentication ceremony and answers it with `user`: returns the `WebAuthn`
    /// object for the operation, and `/BeginAuthentication`'s answer.
    pub async fn ceremony(
        &self,
        user: &mut dyn Authenticator,
        key_id: &str,
        purpose: &str,
        payload: Value,
    ) -> Result<(Value, Value), CompanionError> {
        Ok(self.client.ceremony(user, key_id, purpose, payload).await?)
    }

    /// Creates an agent key for `wallet` (ceremony `CreateAgentKey`).
    pub async fn create_agent(
        &self,
        user: &mut dyn Authenticator,
        wallet: &Wallet,
        label: &str,
    ) -> Result<AgentKey, CompanionError> {
        let v = self
            .client
            .create_agent(user, &wallet.key_id, json!({"label": label}))
            .await?;
        AgentKey::from_json(&v)
    }

    /// Registers `session` (the `/kms/agent-sessions` fields without keyId) for `agent`
    /// (ceremony `GrantSession`). Returns the status and body of `/kms/agent-sessions`.
    pub async fn grant_session(
        &self,
        user: &mut dyn Authenticator,
        agent: &AgentKey,
        session: Value,
    ) -> Result<(u16, Value), CompanionError> {
        let (web_authn, _) = self
            .ceremony(user, &agent.key_id, "GrantSession", session.clone())
            .await?;
        let mut body = session;
        body["keyId"] = json!(agent.key_id);
        body["webAuthnAssertion"] = web_authn;
        self.post("/kms/agent-sessions", &body).await
    }

    /// Revokes `agent` (ceremony `RevokeAgentCredential`); returns the answer.
    pub async fn revoke_agent(
        &self,
        user: &mut dyn Authenticator,
        agent: &AgentKey,
    ) -> Result<Value, CompanionError> {
        let (web_authn, _) = self
            .ceremony(user, &agent.key_id, "RevokeAgentCredential", json!({}))
            .await?;
        Self::expect(
            "revoke-agent-credential",
            self.post(
                "/kms/revoke-agent-credential",
                &json!({"keyId": agent.key_id, "webAuthnAssertion": web_authn}),
            )
            .await?,
            200,
        )
    }

    /// Refreshes `agent`'s credential (ceremony `RefreshAgentCredential`, Bearer the current
    /// JWT); returns the agent with its new credential.
    pub async fn refresh_agent(
        &self,
        user: &mut dyn Authenticator,
        agent: &AgentKey,
    ) -> Result<AgentKey, CompanionError> {
        let (web_authn, _) = self
            .ceremony(user, &agent.key_id, "RefreshAgentCredential", json!({}))
            .await?;
        let v = Self::expect(
            "refresh-agent-credential",
            self.post_bearer(
                "/kms/refresh-agent-credential",
                &agent.jwt,
                &json!({"keyId": agent.key_id, "webAuthnAssertion": web_authn}),
                &[],
            )
            .await?,
            200,
        )?;
        AgentKey::from_json(&v)
    }

    /// The operator key's address (`/kms/operator`).
    pub async fn operator_address(&self) -> Result<Address, CompanionError> {
        let v = Self::expect("operator", self.get("/kms/operator").await?, 200)?;
        v["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| CompanionError::Unexpected(format!("no address in {v}")))
    }

    /// Submits an intent for `agent` with `calls`; returns status and body.
    pub async fn intent(
        &self,
        agent: &AgentKey,
        calls: Value,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, Value), CompanionError> {
        let headers: Vec<(&str, &str)> = idempotency_key
            .map(|k| vec![("idempotency-key", k)])
            .unwrap_or_default();
        self.post_bearer(
            "/agent/intents",
            &agent.jwt,
            &json!({"calls": calls}),
            &headers,
        )
        .await
    }

    /// [`Companion::intent`] without an idempotency key, also returning the response's
    /// `Server-Timing` header (the companion's time per phase).
    pub async fn intent_timed(
        &self,
        agent: &AgentKey,
        calls: Value,
    ) -> Result<(u16, Value, Option<String>), CompanionError> {
        let (status, body, headers) = self
            .client
            .post_bearer("/agent/intents", &agent.jwt, &json!({"calls": calls}), &[])
            .await?;
        let timing = headers
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((status, body, timing))
    }

    /// Polls `GET /agent/intents/{hash}` until the intent has a final status (anything but
    /// `signed` and `pending`: `included`, `failed`, `replaced`, `dropped`, `cancelled`).
    pub async fn wait_intent(&self, agent: &AgentKey, hash: &str) -> Result<Value, CompanionError> {
        let start = Instant::now();
        loop {
            let (status, v) = self
                .get_bearer(&format!("/agent/intents/{hash}"), &agent.jwt)
                .await?;
            if status != 200 {
                return Err(CompanionError::Unexpected(format!(
                    "GET intent: HTTP {status}: {v}"
                )));
            }
            if !matches!(v["status"].as_str(), Some("signed" | "pending")) {
                return Ok(v);
            }
            if start.elapsed() > INTENT_TIMEOUT {
                return Err(CompanionError::Unexpected(format!(
                    "intent {hash} not settled in {INTENT_TIMEOUT:?}: {v}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `/kms/sign-agent`: the agent's raw signature of `hash` for `account` (106 bytes).
    pub async fn sign_agent(
        &self,
        agent: &AgentKey,
        hash: B256,
        account: Address,
    ) -> Result<(u16, Value), CompanionError> {
        self.post_bearer(
            "/kms/sign-agent",
            &agent.jwt,
            &json!({"keyId": agent.key_id, "payload": hash, "accountAddress": account}),
            &[],
        )
        .await
    }
}

/// A wallet registered through the companion.
#[derive(Debug, Clone)]
pub struct Wallet {
    /// Its id.
    pub key_id: String,
    /// The owner address.
    pub address: Address,
}

/// An agent key created through the companion, with its current credential.
#[derive(Clone)]
pub struct AgentKey {
    /// `"{wallet}:{index}"`.
    pub key_id: String,
    /// The agent key address.
    pub address: Address,
    /// The JWT.
    pub jwt: String,
}

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKey")
            .field("key_id", &self.key_id)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl AgentKey {
    fn from_json(v: &Value) -> Result<Self, CompanionError> {
        let bad = || CompanionError::Unexpected(format!("not an agent credential: {v}"));
        Ok(Self {
            key_id: v["keyId"].as_str().ok_or_else(bad)?.to_owned(),
            address: v["agentAddress"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .ok_or_else(bad)?,
            jwt: v["agentCredential"].as_str().ok_or_else(bad)?.to_owned(),
        })
    }
}
