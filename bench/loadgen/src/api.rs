//! The companion's HTTP API as a client sees it, with real WebAuthn
//! ceremonies answered by a software passkey.

use kms_proto::session_signature::SESSION_SIGNATURE_LEN;
use serde_json::{json, Value};
use url::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs_proto::{CreationChallengeResponse, RequestChallengeResponse};

/// An HTTP answer: status and JSON body (or the text as a JSON string).
pub type Answer = (u16, Value);

/// A client of one companion.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The WebAuthn origin (`http://localhost:<port>`).
    pub origin: Url,
    /// The API key (sent as `x-api-key` on API-key routes).
    pub api_key: String,
    /// The HTTP client (keep-alive pool).
    pub http: reqwest::Client,
}

/// A wallet owner: the wallet's key id and the passkey bound to it.
pub struct Owner {
    /// Wallet UUID (`KeyId`).
    pub wallet: String,
    /// The software passkey (UV set).
    pub passkey: SoftPasskey,
}

/// A transport-level failure (connection refused or reset: the companion
/// may be down).
#[derive(Debug)]
pub struct Down(pub String);

impl Api {
    /// A client for the companion on `port`.
    pub fn new(port: u16, api_key: &str) -> Self {
        Api {
            base: format!("http://127.0.0.1:{port}"),
            origin: Url::parse(&format!("http://localhost:{port}")).expect("origin"),
            api_key: api_key.to_owned(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(120))
                .build()
                .expect("http client"),
        }
    }

    /// POST `body` to `path` with the API key and, when given, a Bearer
    /// credential.
    pub async fn post(
        &self,
        path: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> Result<Answer, Down> {
        let mut rb = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-api-key", &self.api_key)
            .json(body);
        if let Some(jwt) = bearer {
            rb = rb.header("authorization", format!("Bearer {jwt}"));
        }
        let resp = rb.send().await.map_err(|e| Down(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| Down(e.to_string()))?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }

    /// Register a new wallet with a fresh software passkey.
    pub async fn register(&self) -> Result<Owner, String> {
        let mut passkey = SoftPasskey::new(true);
        let (s, begin) = self
            .post(
                "/BeginRegistration",
                None,
                &json!({"Description": "loadgen"}),
            )
            .await
            .map_err(|e| e.0)?;
        if s != 200 {
            return Err(format!("BeginRegistration: {s} {begin}"));
        }
        let ccr: CreationChallengeResponse =
            serde_json::from_value(begin["Options"].clone()).map_err(|e| e.to_string())?;
        let cred = passkey
            .do_registration(self.origin.clone(), ccr)
            .map_err(|e| format!("soft registration: {e:?}"))?;
        let (s, done) = self
            .post(
                "/CompleteRegistration",
                None,
                &json!({"ChallengeId": begin["ChallengeId"], "Credential": cred}),
            )
            .await
            .map_err(|e| e.0)?;
        if s != 200 {
            return Err(format!("CompleteRegistration: {s} {done}"));
        }
        let wallet = done["KeyId"]
            .as_str()
            .ok_or_else(|| format!("no KeyId in {done}"))?
            .to_owned();
        Ok(Owner { wallet, passkey })
    }

    /// Run an authentication ceremony bound to (`key_id`, `purpose`,
    /// `payload`); returns the `webAuthnAssertion` object.
    pub async fn ceremony(
        &self,
        owner: &mut Owner,
        key_id: &str,
        purpose: &str,
        payload: Value,
    ) -> Result<Value, String> {
        let (s, begin) = self
            .post(
                "/BeginAuthentication",
                None,
                &json!({"KeyId": key_id, "Purpose": purpose, "Payload": payload}),
            )
            .await
            .map_err(|e| e.0)?;
        if s != 200 {
            return Err(format!("BeginAuthentication {purpose}: {s} {begin}"));
        }
        let rcr: RequestChallengeResponse =
            serde_json::from_value(begin["Options"].clone()).map_err(|e| e.to_string())?;
        let cred = owner
            .passkey
            .do_authentication(self.origin.clone(), rcr)
            .map_err(|e| format!("soft authentication: {e:?}"))?;
        Ok(json!({"ChallengeId": begin["ChallengeId"], "Credential": cred}))
    }

    /// `/kms/create-agent-key` after its ceremony; returns the raw answer.
    pub async fn create_agent(&self, owner: &mut Owner, label: &str) -> Result<Answer, String> {
        let extra = json!({"label": label});
        let wallet = owner.wallet.clone();
        let w = self
            .ceremony(owner, &wallet, "CreateAgentKey", extra.clone())
            .await?;
        let mut body = extra;
        body["humanKeyId"] = json!(wallet);
        body["webAuthnAssertion"] = w;
        self.post("/kms/create-agent-key", None, &body)
            .await
            .map_err(|e| e.0)
    }

    /// `/kms/refresh-agent-credential` (Bearer `jwt`) after its ceremony.
    pub async fn refresh(
        &self,
        owner: &mut Owner,
        key_id: &str,
        jwt: &str,
    ) -> Result<Answer, String> {
        let w = self
            .ceremony(owner, key_id, "RefreshAgentCredential", json!({}))
            .await?;
        self.post(
            "/kms/refresh-agent-credential",
            Some(jwt),
            &json!({"keyId": key_id, "webAuthnAssertion": w}),
        )
        .await
        .map_err(|e| e.0)
    }

    /// `/kms/revoke-agent-credential` after its ceremony.
    pub async fn revoke(&self, owner: &mut Owner, key_id: &str) -> Result<Answer, String> {
        let w = self
            .ceremony(owner, key_id, "RevokeAgentCredential", json!({}))
            .await?;
        self.post(
            "/kms/revoke-agent-credential",
            None,
            &json!({"keyId": key_id, "webAuthnAssertion": w}),
        )
        .await
        .map_err(|e| e.0)
    }

    /// `/kms/sign-agent` with `jwt` over `hash` for `account`.
    pub async fn sign(
        &self,
        key_id: &str,
        jwt: &str,
        hash: &[u8; 32],
        account: &[u8; 20],
    ) -> Result<Answer, Down> {
        self.post(
            "/kms/sign-agent",
            Some(jwt),
            &sign_body(key_id, hash, account),
        )
        .await
    }
}

/// The JSON body of `/kms/sign-agent`.
pub fn sign_body(key_id: &str, hash: &[u8; 32], account: &[u8; 20]) -> Value {
    json!({
        "keyId": key_id,
        "payload": format!("0x{}", hex::encode(hash)),
        "accountAddress": format!("0x{}", hex::encode(account)),
    })
}

/// Whether a `/kms/sign-agent` answer body carries a session signature
/// (`"signature":"0x` followed by 2 × [`SESSION_SIGNATURE_LEN`] hex digits and the closing quote).
pub fn has_session_signature(body: &[u8]) -> bool {
    const FIELD: &[u8] = b"\"signature\":\"0x";
    const HEX: usize = 2 * SESSION_SIGNATURE_LEN;
    body.windows(FIELD.len())
        .position(|w| w == FIELD)
        .and_then(|at| body.get(at + FIELD.len()..at + FIELD.len() + HEX + 1))
        .is_some_and(|sig| sig[..HEX].iter().all(u8::is_ascii_hexdigit) && sig[HEX] == b'"')
}

/// An agent as the load driver holds it.
#[derive(Clone, Debug)]
pub struct Agent {
    /// `"{wallet}:{index}"`.
    pub key_id: String,
    /// Its current credential.
    pub jwt: String,
    /// Its address (`0x`, EIP-55 checksummed as the companion answers it).
    pub address: String,
}

impl Agent {
    /// From a create or refresh answer.
    pub fn from_answer(v: &Value) -> Option<Agent> {
        Some(Agent {
            key_id: v["keyId"].as_str()?.to_owned(),
            jwt: v["agentCredential"].as_str()?.to_owned(),
            address: v["agentAddress"].as_str()?.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::has_session_signature;

    #[test]
    fn a_session_signature_is_recognised_and_nothing_else() {
        let sig = format!("08{}", "ab".repeat(105));
        let good = format!(r#"{{"keyId":"w:1","agentAddress":"0x01","signature":"0x{sig}"}}"#);
        assert!(has_session_signature(good.as_bytes()));
        let short = format!(r#"{{"signature":"0x{}"}}"#, &sig[..210]);
        assert!(!has_session_signature(short.as_bytes()));
        let not_hex = format!(r#"{{"signature":"0x{}zz"}}"#, &sig[..210]);
        assert!(!has_session_signature(not_hex.as_bytes()));
        assert!(!has_session_signature(br#"{"code":"credential_revoked"}"#));
    }
}
