//! Test harness shared by the companion's tests, `kms-admin`'s and the end-to-end harness
//! (`kms-e2e`): the real `ta-sim` process (started by [`kms_test_bins::ta_sim`]), the real
//! companion server (in-process on an ephemeral 127.0.0.1 port), a SQLite file, the tests' one
//! HTTP client ([`Client`]), and real WebAuthn ceremonies with `webauthn-authenticator-rs`'s
//! SoftPasskey ([`Soft`]) plus a hand-rolled P-256 authenticator ([`Manual`]) for the assertions
//! SoftPasskey cannot make, and for the TA-level assertions of the e2e harness.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kms_companion::{Config, Running};
use kms_test_bins::ta_sim::{self, TaSimProcess};
use p256::ecdsa::signature::Signer;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

/// The ta-sim binary, built once per test process with the same cargo, target directory and
/// profile (`KMS_TA_SIM_BIN` may name a prebuilt one); see [`kms_test_bins`].
pub fn ta_sim_bin() -> PathBuf {
    kms_test_bins::workspace_bin("kms-ta-sim", "ta-sim", "KMS_TA_SIM_BIN")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The ta-sim binary built with `features` (comma-separated cargo features of `kms-ta-sim`,
/// e.g. `export-secrets`), as its own copy; see
/// [`kms_test_bins::workspace_bin_with_features`].
pub fn ta_sim_bin_with_features(features: &str) -> PathBuf {
    kms_test_bins::workspace_bin_with_features("kms-ta-sim", "ta-sim", features)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A ta-sim process over a data directory (state in `<dir>/ta`, socket `<dir>/ta.sock`),
/// started by the one launcher, [`kms_test_bins::ta_sim`].
pub struct Sim {
    process: Option<TaSimProcess>,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

impl Sim {
    /// Start (or restart) the simulator over `dir`, returning once it
    /// reports ready.
    pub fn start(dir: &Path) -> Sim {
        Self::start_with(dir, &ta_sim_bin())
    }

    /// [`Sim::start`] with another ta-sim binary (e.g. from
    /// [`ta_sim_bin_with_features`]).
    pub fn start_with(dir: &Path, bin: &Path) -> Sim {
        let socket = dir.join("ta.sock");
        let cmd = ta_sim::command(bin, &dir.join("ta"), &socket);
        let process = TaSimProcess::start(cmd, &socket, ta_sim::READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        Sim {
            process: Some(process),
            dir: dir.to_owned(),
            socket,
        }
    }

    /// Kill the simulator (the child we started) and reap it.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }
}

/// A step of [`Client`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP exchange itself.
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// An answer other than 200.
    #[error("{what}: HTTP {status} (expected 200): {body}")]
    Status {
        /// The step.
        what: String,
        /// The status.
        status: u16,
        /// The answer.
        body: Value,
    },
}

/// The tests' HTTP client of a companion on `127.0.0.1:<port>`: the API key it sends (when it
/// has one), the WebAuthn origin of that port, and answers as JSON (a body that is not JSON
/// comes back as a string). [`Env`] and the end-to-end harness (`kms_e2e::companion`) both
/// talk through it.
#[derive(Clone, Debug)]
pub struct Client {
    /// The underlying client (for requests of a shape of their own).
    pub http: reqwest::Client,
    /// The companion's port.
    pub port: u16,
    /// Sent as `x-api-key` by [`Client::post`] and [`Client::request`].
    pub api_key: Option<String>,
}

impl Client {
    /// A client of the companion on `127.0.0.1:port`.
    pub fn new(http: reqwest::Client, port: u16, api_key: Option<String>) -> Client {
        Client {
            http,
            port,
            api_key,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The WebAuthn origin (`http://localhost:<port>`).
    pub fn origin(&self) -> Url {
        Url::parse(&format!("http://localhost:{}", self.port)).unwrap()
    }

    /// Sends `rb`: (status, body as JSON or else as a string, headers).
    pub async fn send(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> reqwest::Result<(u16, Value, reqwest::header::HeaderMap)> {
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v, headers))
    }

    /// A POST of `body` (JSON bytes, sent as they are) with the API key, `x-amz-target`
    /// (`TrentService.<target>`) when given, and `headers`.
    pub async fn request(
        &self,
        path: &str,
        target: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> reqwest::Result<(u16, Value, reqwest::header::HeaderMap)> {
        let mut rb = self
            .http
            .post(self.url(path))
            .body(body)
            .header("content-type", "application/json");
        if let Some(k) = &self.api_key {
            rb = rb.header("x-api-key", k);
        }
        if let Some(t) = target {
            rb = rb.header("x-amz-target", format!("TrentService.{t}"));
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        self.send(rb).await
    }

    /// POST JSON with the API key.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Result<(u16, Value)> {
        let (s, v, _) = self
            .request(path, None, &[], serde_json::to_vec(body).unwrap())
            .await?;
        Ok((s, v))
    }

    /// POST JSON with a Bearer agent credential (no API key) and `headers`.
    pub async fn post_bearer(
        &self,
        path: &str,
        jwt: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Result<(u16, Value, reqwest::header::HeaderMap)> {
        let mut rb = self.http.post(self.url(path)).bearer_auth(jwt).json(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        self.send(rb).await
    }

    fn ok(what: &str, (status, body): (u16, Value)) -> Result<Value, ClientError> {
        if status == 200 {
            Ok(body)
        } else {
            Err(ClientError::Status {
                what: what.to_owned(),
                status,
                body,
            })
        }
    }

    /// Registers a wallet with `user` (`/BeginRegistration`, `/CompleteRegistration`); returns
    /// the `/CompleteRegistration` answer.
    pub async fn register(
        &self,
        user: &mut dyn Authenticator,
        description: &str,
    ) -> Result<Value, ClientError> {
        let begin = Self::ok(
            "BeginRegistration",
            self.post("/BeginRegistration", &json!({"Description": description}))
                .await?,
        )?;
        let cred = user.register(&self.origin(), &begin["Options"]);
        Self::ok(
            "CompleteRegistration",
            self.post(
                "/CompleteRegistration",
                &json!({"ChallengeId": begin["ChallengeId"], "Credential": cred}),
            )
            .await?,
        )
    }

    /// Starts an authentication ceremony and answers it with `user`: returns the `WebAuthn`
    /// object for the operation, and `/BeginAuthentication`'s answer.
    pub async fn ceremony(
        &self,
        user: &mut dyn Authenticator,
        key_id: &str,
        purpose: &str,
        payload: Value,
    ) -> Result<(Value, Value), ClientError> {
        let begin = Self::ok(
            &format!("BeginAuthentication {purpose}"),
            self.post(
                "/BeginAuthentication",
                &json!({"KeyId": key_id, "Purpose": purpose, "Payload": payload}),
            )
            .await?,
        )?;
        let cred = user.authenticate(&self.origin(), &begin["Options"]);
        Ok((
            json!({"ChallengeId": begin["ChallengeId"], "Credential": cred}),
            begin,
        ))
    }

    /// An owner operation of the AWS-style API (`/<op>`, target `TrentService.<op>`): a
    /// ceremony over `fields`, then `fields` with `KeyId` and the `WebAuthn` object; returns
    /// the answer, whatever its status.
    pub async fn signed_op(
        &self,
        user: &mut dyn Authenticator,
        key_id: &str,
        op: &str,
        fields: Value,
    ) -> Result<(u16, Value), ClientError> {
        let (web_authn, _) = self.ceremony(user, key_id, op, fields.clone()).await?;
        let mut body = fields;
        body["KeyId"] = json!(key_id);
        body["WebAuthn"] = web_authn;
        let (s, v, _) = self
            .request(
                &format!("/{op}"),
                Some(op),
                &[],
                serde_json::to_vec(&body).unwrap(),
            )
            .await?;
        Ok((s, v))
    }

    /// Creates an agent key for `wallet` with the fields `extra` (ceremony `CreateAgentKey`);
    /// returns the answer.
    pub async fn create_agent(
        &self,
        user: &mut dyn Authenticator,
        wallet: &str,
        extra: Value,
    ) -> Result<Value, ClientError> {
        let (web_authn, _) = self
            .ceremony(user, wallet, "CreateAgentKey", extra.clone())
            .await?;
        let mut body = extra;
        body["humanKeyId"] = json!(wallet);
        body["webAuthnAssertion"] = web_authn;
        Self::ok(
            "create-agent-key",
            self.post("/kms/create-agent-key", &body).await?,
        )
    }

    /// GET, with a Bearer agent credential when given.
    pub async fn get(&self, path: &str, jwt: Option<&str>) -> reqwest::Result<(u16, Value)> {
        let mut rb = self.http.get(self.url(path));
        if let Some(jwt) = jwt {
            rb = rb.bearer_auth(jwt);
        }
        let (s, v, _) = self.send(rb).await?;
        Ok((s, v))
    }
}

/// Extra settings of a test server.
#[derive(Clone, Default)]
pub struct Opts {
    pub args: Vec<String>,
    /// The ta-sim binary to run [default: [`ta_sim_bin`]].
    pub ta_sim_bin: Option<PathBuf>,
}

/// A test environment: temp dir, simulator, companion, an API key.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub sim: Sim,
    pub server: Option<Running>,
    pub api_key: Option<String>,
    pub http: reqwest::Client,
    pub opts: Opts,
}

pub fn config(dir: &Path, socket: &Path, extra: &[String]) -> Config {
    let mut args: Vec<String> = vec![
        "companion".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--tee".into(),
        format!("sim:{}", socket.display()),
        "--rp-id".into(),
        "localhost".into(),
        "--log".into(),
        "warn".into(),
    ];
    args.extend(extra.iter().cloned());
    <Config as clap::Parser>::parse_from(args)
}

impl Env {
    pub async fn start() -> Env {
        Self::with(Opts::default()).await
    }

    pub async fn with(mut opts: Opts) -> Env {
        let dir = tempfile::tempdir().unwrap();
        // With KMS_TEST_POSTGRES_URL set, the companion runs on a fresh PostgreSQL database of
        // its own (kept across restarts: it is in the arguments); else on SQLite in `dir`.
        if kms_db::testing::postgres_server().is_some()
            && !opts.args.iter().any(|a| a == "--database-url")
        {
            let url = kms_db::testing::test_database_url(dir.path()).await;
            opts.args.extend(["--database-url".to_owned(), url]);
        }
        let sim = match &opts.ta_sim_bin {
            Some(bin) => Sim::start_with(dir.path(), bin),
            None => Sim::start(dir.path()),
        };
        let server = kms_companion::start(config(dir.path(), &sim.socket, &opts.args))
            .await
            .unwrap();
        let api_key = if server.state.api_key_mode == kms_companion::config::ApiKeyMode::Required {
            Some(server.state.db.create_api_key("test", 1).await.unwrap().key)
        } else {
            None
        };
        Env {
            dir,
            sim,
            server: Some(server),
            api_key,
            http: reqwest::Client::new(),
            opts,
        }
    }

    /// The `--database-url` the companion was given (a PostgreSQL test database), if any: tools
    /// run beside it (kms-admin) need it too.
    pub fn database_url(&self) -> Option<&str> {
        let args = &self.opts.args;
        args.iter()
            .position(|a| a == "--database-url")
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    }

    pub fn server(&self) -> &Running {
        self.server.as_ref().unwrap()
    }

    pub fn port(&self) -> u16 {
        self.server().addr.port()
    }

    /// The HTTP client of the running companion (with the API key, if any).
    pub fn client(&self) -> Client {
        Client::new(self.http.clone(), self.port(), self.api_key.clone())
    }

    pub fn origin(&self) -> Url {
        self.client().origin()
    }

    pub fn url(&self, path: &str) -> String {
        self.client().url(path)
    }

    /// Stop the companion (graceful).
    pub async fn stop_server(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// Start the companion again over the same data directory and port-less
    /// listen address (a new port: tests re-derive the origin).
    pub async fn restart_server(&mut self) {
        self.stop_server().await;
        let s = kms_companion::start(config(self.dir.path(), &self.sim.socket, &self.opts.args))
            .await
            .unwrap();
        self.server = Some(s);
    }

    /// A raw request ([`Client::request`]).
    pub async fn request(
        &self,
        path: &str,
        target: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        self.client()
            .request(path, target, headers, body)
            .await
            .unwrap()
    }

    /// POST JSON with the API key (and `x-amz-target` when given).
    pub async fn post(&self, path: &str, target: Option<&str>, body: &Value) -> (u16, Value) {
        let (s, v, _) = self
            .request(path, target, &[], serde_json::to_vec(body).unwrap())
            .await;
        (s, v)
    }

    /// POST JSON with a Bearer credential (no API key needed).
    pub async fn post_bearer(
        &self,
        path: &str,
        jwt: &str,
        body: &Value,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let auth = format!("Bearer {jwt}");
        self.request(
            path,
            None,
            &[("authorization", &auth)],
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Register a wallet with `user`; returns the CompleteRegistration answer.
    pub async fn register(&self, user: &mut dyn Authenticator) -> Value {
        self.client()
            .register(user, "test wallet")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Run an authentication ceremony; returns the `WebAuthn` object.
    pub async fn ceremony(
        &self,
        user: &mut dyn Authenticator,
        key_id: &str,
        purpose: &str,
        payload: Value,
    ) -> Value {
        self.client()
            .ceremony(user, key_id, purpose, payload)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .0
    }

    /// Register a wallet with `user`; returns its id (`KeyId`).
    pub async fn wallet(&self, user: &mut dyn Authenticator) -> String {
        self.register(user).await["KeyId"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Create an agent key for `wallet` ([`Env::create_agent`]), its answer picked apart.
    pub async fn agent(&self, user: &mut dyn Authenticator, wallet: &str, extra: Value) -> Agent {
        Agent::from_answer(self.create_agent(user, wallet, extra).await)
    }

    /// `POST /kms/sign-agent` with `jwt` and [`sign_body`]`(key_id)`.
    pub async fn sign_agent(
        &self,
        jwt: &str,
        key_id: &str,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        self.post_bearer("/kms/sign-agent", jwt, &sign_body(key_id))
            .await
    }

    /// An owner operation of the AWS-style API (`/<op>`, target `TrentService.<op>`): a
    /// ceremony over `fields`, then `fields` with `KeyId` and the `WebAuthn` object.
    pub async fn signed_op(
        &self,
        user: &mut dyn Authenticator,
        key_id: &str,
        op: &str,
        fields: Value,
    ) -> (u16, Value) {
        self.client()
            .signed_op(user, key_id, op, fields)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Create an agent key for `wallet`; returns the answer.
    pub async fn create_agent(
        &self,
        user: &mut dyn Authenticator,
        wallet: &str,
        extra: Value,
    ) -> Value {
        self.client()
            .create_agent(user, wallet, extra)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// An agent key as `/kms/create-agent-key` answers it.
#[derive(Clone, Debug)]
pub struct Agent {
    /// `<wallet>:<index>`.
    pub key_id: String,
    /// The agent credential (JWT).
    pub jwt: String,
    /// The agent's address.
    pub address: String,
    /// The whole answer.
    pub answer: Value,
}

impl Agent {
    /// Picks apart a `/kms/create-agent-key` answer.
    pub fn from_answer(answer: Value) -> Agent {
        let field = |k: &str| {
            answer[k]
                .as_str()
                .unwrap_or_else(|| panic!("no {k} in {answer}"))
                .to_owned()
        };
        Agent {
            key_id: field("keyId"),
            jwt: field("agentCredential"),
            address: field("agentAddress"),
            answer: answer.clone(),
        }
    }
}

/// The userOpHash of the tests' `/kms/sign-agent` bodies ([`sign_body`]).
pub const USER_OP_HASH: &str = "0x2222222222222222222222222222222222222222222222222222222222222222";
/// The account address of the tests' `/kms/sign-agent` bodies ([`sign_body`]).
pub const ACCOUNT: &str = "0x00000000000000000000000000000000000a11ce";

/// A `/kms/sign-agent` body: [`USER_OP_HASH`] for [`ACCOUNT`] with agent `key_id`.
pub fn sign_body(key_id: &str) -> Value {
    json!({"keyId": key_id, "payload": USER_OP_HASH, "accountAddress": ACCOUNT})
}

/// Something that answers WebAuthn ceremonies.
pub trait Authenticator: Send {
    fn register(&mut self, origin: &Url, options: &Value) -> Value;
    fn authenticate(&mut self, origin: &Url, options: &Value) -> Value;
}

/// webauthn-authenticator-rs's SoftPasskey (UV set).
pub struct Soft(pub SoftPasskey);

impl Default for Soft {
    fn default() -> Self {
        Self::new()
    }
}

impl Soft {
    pub fn new() -> Self {
        Soft(SoftPasskey::new(true))
    }
}

impl Authenticator for Soft {
    fn register(&mut self, origin: &Url, options: &Value) -> Value {
        let ccr: CreationChallengeResponse = serde_json::from_value(options.clone()).unwrap();
        let r = self
            .0
            .do_registration(origin.clone(), ccr)
            .expect("soft registration");
        serde_json::to_value(r).unwrap()
    }
    fn authenticate(&mut self, origin: &Url, options: &Value) -> Value {
        let rcr: RequestChallengeResponse = serde_json::from_value(options.clone()).unwrap();
        let r = self
            .0
            .do_authentication(origin.clone(), rcr)
            .expect("soft authentication");
        serde_json::to_value(r).unwrap()
    }
}

/// A P-256 authenticator written for the tests: real signatures, with the
/// flags and counter under the test's control (SoftPasskey always sets UV
/// and always advances its counter).
pub struct Manual {
    pub key: p256::ecdsa::SigningKey,
    pub cred_id: Vec<u8>,
    pub rp_id: String,
    pub flags: u8,
    pub counter: u32,
    /// When set, the next assertion uses this counter value.
    pub next_counter: Option<u32>,
    /// Whether the counter advances (synced passkeys always report 0).
    pub counting: bool,
}

const UP: u8 = 0x01;
const UV: u8 = 0x04;
const AT: u8 = 0x40;

fn cbor_bytes_header(out: &mut Vec<u8>, major: u8, len: usize) {
    if len < 24 {
        out.push(major << 5 | len as u8);
    } else if len < 256 {
        out.extend([major << 5 | 24, len as u8]);
    } else {
        out.extend([major << 5 | 25, (len >> 8) as u8, len as u8]);
    }
}

fn cbor_text(out: &mut Vec<u8>, s: &str) {
    cbor_bytes_header(out, 3, s.len());
    out.extend(s.as_bytes());
}

fn cbor_bstr(out: &mut Vec<u8>, b: &[u8]) {
    cbor_bytes_header(out, 2, b.len());
    out.extend(b);
}

impl Default for Manual {
    fn default() -> Self {
        Self::new()
    }
}

/// The parts of a WebAuthn assertion, as [`Manual::assertion`] makes them.
pub struct Assertion {
    /// `rpIdHash ‖ flags ‖ signCount`.
    pub authenticator_data: Vec<u8>,
    /// The client data JSON.
    pub client_data_json: Vec<u8>,
    /// P-256 over `authenticatorData ‖ SHA-256(clientDataJSON)`, DER.
    pub signature: Vec<u8>,
}

impl Manual {
    pub fn new() -> Self {
        Self::with_key(p256::ecdsa::SigningKey::random(
            &mut p256::elliptic_curve::rand_core::OsRng,
        ))
    }

    /// An authenticator with the key `key` (UP and UV set, counting, rp id `localhost`).
    pub fn with_key(key: p256::ecdsa::SigningKey) -> Self {
        let cred_id =
            Sha256::digest(key.verifying_key().to_encoded_point(false).as_bytes())[..16].to_vec();
        Manual {
            key,
            cred_id,
            rp_id: "localhost".into(),
            flags: UP | UV,
            counter: 0,
            next_counter: None,
            counting: true,
        }
    }

    /// The public key, SEC1 uncompressed (65 bytes).
    pub fn public_key(&self) -> Vec<u8> {
        self.key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// An assertion over `challenge` (base64url, as it stands in the client data) for
    /// `origin`, with this authenticator's flags and the next counter value.
    pub fn assertion(&mut self, origin: &str, challenge: &str) -> Assertion {
        let cdj = Self::client_data("webauthn.get", origin, challenge);
        let counter = match self.next_counter.take() {
            Some(c) => c,
            None if self.counting => {
                self.counter += 1;
                self.counter
            }
            None => self.counter,
        };
        let mut auth_data = Sha256::digest(self.rp_id.as_bytes()).to_vec();
        auth_data.push(self.flags);
        auth_data.extend(counter.to_be_bytes());
        let mut signed = auth_data.clone();
        signed.extend(Sha256::digest(&cdj));
        let sig: p256::ecdsa::Signature = self.key.sign(&signed);
        Assertion {
            authenticator_data: auth_data,
            client_data_json: cdj,
            signature: sig.to_der().as_bytes().to_vec(),
        }
    }

    /// Clear the UV flag of the next assertions.
    pub fn without_uv(&mut self) {
        self.flags = UP;
    }

    fn client_data(typ: &str, origin: &str, challenge: &str) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"type": typ, "challenge": challenge, "origin": origin, "crossOrigin": false}),
        )
        .unwrap()
    }
}

impl Authenticator for Manual {
    fn register(&mut self, origin: &Url, options: &Value) -> Value {
        let challenge = options["publicKey"]["challenge"].as_str().unwrap();
        let cdj = Self::client_data(
            "webauthn.create",
            origin.as_str().trim_end_matches('/'),
            challenge,
        );
        let point = self.key.verifying_key().to_encoded_point(false);
        let mut cose = vec![0xA5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21];
        cbor_bstr(&mut cose, point.x().unwrap());
        cose.push(0x22);
        cbor_bstr(&mut cose, point.y().unwrap());
        let mut auth_data = Sha256::digest(self.rp_id.as_bytes()).to_vec();
        auth_data.push(UP | UV | AT);
        auth_data.extend(self.counter.to_be_bytes());
        auth_data.extend([0u8; 16]);
        auth_data.extend((self.cred_id.len() as u16).to_be_bytes());
        auth_data.extend(&self.cred_id);
        auth_data.extend(cose);
        let mut att = vec![0xA3];
        cbor_text(&mut att, "fmt");
        cbor_text(&mut att, "none");
        cbor_text(&mut att, "attStmt");
        att.push(0xA0);
        cbor_text(&mut att, "authData");
        cbor_bstr(&mut att, &auth_data);
        let id = URL_SAFE_NO_PAD.encode(&self.cred_id);
        json!({
            "id": id, "rawId": id, "type": "public-key",
            "response": {"attestationObject": URL_SAFE_NO_PAD.encode(att), "clientDataJSON": URL_SAFE_NO_PAD.encode(cdj)},
        })
    }

    fn authenticate(&mut self, origin: &Url, options: &Value) -> Value {
        let challenge = options["publicKey"]["challenge"].as_str().unwrap();
        let a = self.assertion(origin.as_str().trim_end_matches('/'), challenge);
        let id = URL_SAFE_NO_PAD.encode(&self.cred_id);
        json!({
            "id": id, "rawId": id, "type": "public-key",
            "response": {
                "authenticatorData": URL_SAFE_NO_PAD.encode(a.authenticator_data),
                "clientDataJSON": URL_SAFE_NO_PAD.encode(a.client_data_json),
                "signature": URL_SAFE_NO_PAD.encode(a.signature),
                "userHandle": null
            },
        })
    }
}

/// A mutex-wrapped authenticator shared by concurrent tasks.
pub type Shared<A> = std::sync::Arc<Mutex<A>>;

/// Recover the Ethereum address that made `rsv` over `digest`.
pub fn recover(digest: &[u8; 32], rsv: &[u8]) -> String {
    use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
    let sig = Signature::from_slice(&rsv[..64]).unwrap();
    let rid = RecoveryId::from_byte(rsv[64] - 27).unwrap();
    let vk = VerifyingKey::recover_from_prehash(digest, &sig, rid).unwrap();
    let point = vk.to_encoded_point(false);
    let h = <sha3::Keccak256 as Digest>::digest(&point.as_bytes()[1..]);
    format!("0x{}", hex::encode(&h[12..]))
}

/// keccak256("\x19Ethereum Signed Message:\n32" ‖ h).
pub fn eip191_32(h: &[u8; 32]) -> [u8; 32] {
    let mut k = <sha3::Keccak256 as Digest>::new();
    Digest::update(&mut k, b"\x19Ethereum Signed Message:\n32");
    Digest::update(&mut k, h);
    k.finalize().into()
}

/// keccak256("\x19Ethereum Signed Message:\n" ‖ len ‖ m).
pub fn eip191(m: &[u8]) -> [u8; 32] {
    let mut k = <sha3::Keccak256 as Digest>::new();
    Digest::update(
        &mut k,
        format!("\x19Ethereum Signed Message:\n{}", m.len()).as_bytes(),
    );
    Digest::update(&mut k, m);
    k.finalize().into()
}

pub fn hexs(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap().trim_start_matches("0x")).unwrap()
}
