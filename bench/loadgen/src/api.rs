//! The companion's HTTP API as a client sees it, with real WebAuthn
//! ceremonies answered by a software passkey: the tests' HTTP client and passkey
//! (`kms_test_support::{Client, Soft}`), with a timeout of its own and the transport failures
//! told apart ([`Down`]).

use kms_proto::session_signature::SESSION_SIGNATURE_LEN;
use kms_test_support::{Client, Soft};
use serde_json::{json, Value};

/// An HTTP answer: status and JSON body (or the text as a JSON string).
pub type Answer = (u16, Value);

/// A client of one companion.
#[derive(Clone)]
pub struct Api {
    /// The HTTP client (keep-alive pool; the API key sent as `x-api-key` on every request).
    pub client: Client,
}

/// A wallet owner: the wallet's key id and the passkey bound to it.
pub struct Owner {
    /// Wallet UUID (`KeyId`).
    pub wallet: String,
    /// The software passkey (UV set).
    pub passkey: Soft,
}

/// A transport-level failure (connection refused or reset: the companion
/// may be down).
#[derive(Debug)]
pub struct Down(pub String);

impl Api {
    /// A client for the companion on `port`.
    pub fn new(port: u16, api_key: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .expect("http client");
        Api {
            client: Client::new(http, port, Some(api_key.to_owned())),
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
        let auth = bearer.map(|jwt| format!("Bearer {jwt}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let (status, v, _) = self
            .client
            .request(path, None, &headers, serde_json::to_vec(body).unwrap())
            .await
            .map_err(|e| Down(e.to_string()))?;
        Ok((status, v))
    }

    /// Register a new wallet with a fresh software passkey.
    pub async fn register(&self) -> Result<Owner, String> {
        let mut passkey = Soft::new();
        let done = self
            .client
            .register(&mut passkey, "loadgen")
            .await
            .map_err(|e| e.to_string())?;
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
        let (web_authn, _) = self
            .client
            .ceremony(&mut owner.passkey, key_id, purpose, payload)
            .await
            .map_err(|e| e.to_string())?;
        Ok(web_authn)
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
