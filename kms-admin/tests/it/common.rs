//! Running the real `kms-admin` binary beside a real companion (in-process), its `ta-sim`
//! process and its database (SQLite in its data directory, or a PostgreSQL test database when
//! `KMS_TEST_POSTGRES_URL` names a server).

use std::path::Path;

use kms_test_support::{Env, Soft};
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

/// [`admin_in`] over the companion's data directory, and its database (`--database-url` when
/// the companion runs on a PostgreSQL test database).
pub async fn admin(env: &Env, args: &[&str]) -> Out {
    match env.database_url() {
        Some(url) => {
            let mut all = vec!["--database-url", url];
            all.extend_from_slice(args);
            admin_in(env.dir.path(), &all).await
        }
        None => admin_in(env.dir.path(), args).await,
    }
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
        let wallet = env.wallet(&mut passkey).await;
        Owner { passkey, wallet }
    }

    /// Creates an agent key through the companion: (keyId, JWT, address).
    pub async fn agent(&mut self, env: &Env) -> (String, String, String) {
        let a = env
            .agent(&mut self.passkey, &self.wallet, json!({"label": "bot"}))
            .await;
        (a.key_id, a.jwt, a.address)
    }
}

/// `POST /kms/sign-agent` with `jwt` ([`Env::sign_agent`]): (status, body).
pub async fn sign_agent(env: &Env, jwt: &str, key_id: &str) -> (u16, Value) {
    let (s, v, _) = env.sign_agent(jwt, key_id).await;
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
