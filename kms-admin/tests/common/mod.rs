//! Running the real `kms-admin` binary beside a real companion (in-process), its `ta-sim`
//! process and its SQLite file.
#![allow(dead_code)]

use std::path::Path;

use kms_test_support::{Authenticator, Env, Soft};
use serde_json::{json, Value};

/// What one `kms-admin` run produced.
#[derive(Debug)]
pub struct Out {
    /// The exit code.
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Out {
    /// stdout as JSON (the run must have used `--json`).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// stderr as the JSON error object of `--json` mode.
    pub fn json_err(&self) -> Value {
        serde_json::from_str(self.stderr.trim())
            .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {self:?}"))
    }
}

/// Every environment variable kms-admin reads, removed so the tests see only their flags.
const VARS: &[&str] = &[
    "KMS_DATA_DIR",
    "KMS_DATABASE_URL",
    "KMS_TEE_BACKEND",
    "KMS_RPC_URL",
    "KMS_VALIDATOR_ADDRESS",
    "KMS_CHAIN_ID",
    "KMS_ADMIN_TX_TIMEOUT_SECS",
];

/// Runs `kms-admin --data-dir <dir> <args>` (the database and the TA socket at their
/// defaults under `dir`).
pub async fn admin_in(dir: &Path, args: &[&str]) -> Out {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kms-admin"));
    for v in VARS {
        cmd.env_remove(v);
    }
    cmd.arg("--data-dir").arg(dir).args(args);
    let out = cmd.output().await.expect("run kms-admin");
    Out {
        code: out.status.code().expect("kms-admin exited by a signal"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// [`admin_in`] over the companion's data directory.
pub async fn admin(env: &Env, args: &[&str]) -> Out {
    admin_in(env.dir.path(), args).await
}

/// A wallet registered through the companion, and its passkey.
pub struct Owner {
    /// The passkey.
    pub passkey: Soft,
    /// The wallet id (UUID).
    pub wallet: String,
}

impl Owner {
    /// Registers a wallet.
    pub async fn register(env: &Env) -> Owner {
        let mut passkey = Soft::new();
        let wallet = env.register(&mut passkey).await["KeyId"]
            .as_str()
            .unwrap()
            .to_owned();
        Owner { passkey, wallet }
    }

    /// Creates an agent key through the companion: (keyId, JWT, address).
    pub async fn agent(&mut self, env: &Env) -> (String, String, String) {
        let a = env
            .create_agent(
                &mut self.passkey as &mut dyn Authenticator,
                &self.wallet,
                json!({"label": "bot"}),
            )
            .await;
        (
            a["keyId"].as_str().unwrap().to_owned(),
            a["agentCredential"].as_str().unwrap().to_owned(),
            a["agentAddress"].as_str().unwrap().to_owned(),
        )
    }
}

/// An account address for `sign-agent` requests.
pub const ACCOUNT: &str = "0x1111111111111111111111111111111111111111";

/// `POST /kms/sign-agent` with `jwt`: (status, body).
pub async fn sign_agent(env: &Env, jwt: &str, key_id: &str) -> (u16, Value) {
    let body = json!({
        "keyId": key_id,
        "payload": format!("0x{}", "ab".repeat(32)),
        "accountAddress": ACCOUNT,
    });
    let (s, v, _) = env.post_bearer("/kms/sign-agent", jwt, &body).await;
    (s, v)
}

/// The kid in a JWT's header.
pub fn kid(jwt: &str) -> String {
    kms_proto::jwt::parse(jwt).unwrap().header.kid
}

/// A TA session of the test's own to the companion's `ta-sim`.
pub fn tee(env: &Env) -> kms_tee_client::TeeClient {
    kms_tee_client::TeeBackend::Simulator {
        socket: env.sim.socket.clone(),
    }
    .connect()
    .unwrap()
}
