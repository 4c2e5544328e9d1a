//! Runs the local chain stack (`anvil/stack.sh`) for a test.
//!
//! ```text
//! let stack = kms_e2e::stack::Stack::start()?;
//! println!("anvil at {}, Alto at {}", stack.info().rpc_url, stack.info().bundler_url);
//! ```
//!
//! [`Stack::start_with_env`] adds variables to the script's environment (e.g. Alto's
//! `ALTO_ENABLE_DEBUG_ENDPOINTS`, which the script passes no flag for).
//!
//! Nothing is skipped: when node, npm or anything else the script needs is missing, [`Stack::start`]
//! fails with the script's own message. The first start on a fresh checkout runs `npm ci` (about a
//! minute), hence the generous default timeout.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use serde::Deserialize;

/// How long [`Stack::start`] waits for the stack by default (covers a first `npm ci`).
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(300);

/// The JSON file `anvil/stack.sh --out FILE` writes once everything answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StackInfo {
    /// anvil's JSON-RPC URL (127.0.0.1).
    pub rpc_url: String,
    /// Alto's JSON-RPC URL, serving EntryPoint v0.7 (and v0.8: one instance serves both).
    pub bundler_url: String,
    /// The bundler URL for EntryPoint v0.8, or `None` if no bundler serves it.
    pub bundler_url_v08: Option<String>,
    /// Chain id of the anvil chain.
    pub chain_id: u64,
    /// EntryPoint v0.7 (canonical address).
    #[serde(rename = "entryPointV07")]
    pub entry_point_v07: Address,
    /// EntryPoint v0.8 (canonical address).
    #[serde(rename = "entryPointV08")]
    pub entry_point_v08: Address,
    /// The SessionKeyValidator.
    pub session_key_validator: Address,
    /// The AgentAccountFactory for EntryPoint v0.7.
    #[serde(rename = "accountFactoryV07")]
    pub account_factory_v07: Address,
    /// The AgentAccountFactory for EntryPoint v0.8.
    #[serde(rename = "accountFactoryV08")]
    pub account_factory_v08: Address,
    /// `Eip7702Account`: the account implementation EOAs delegate to with EIP-7702 (EntryPoint
    /// v0.8; the EOA's key is its owner, `SessionKeyValidator` installed as an ERC-7579 module).
    #[serde(rename = "eip7702Account")]
    pub eip7702_account: Address,
    /// `TestToken`: an ERC-20 anyone can mint, for token-cap tests and the demo.
    pub test_token: Address,
    /// anvil's first dev key, funded, for deploying and funding in tests.
    pub deployer_private_key: B256,
    /// PID of anvil.
    pub anvil_pid: u32,
    /// PID of Alto.
    pub bundler_pid: u32,
}

/// Why the stack could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The script could not be spawned.
    #[error("could not run {script}: {source}")]
    Spawn {
        /// The script path.
        script: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The script exited before writing its JSON file.
    #[error("anvil/stack.sh exited with {status} before the stack was ready.\n--- its output ({output_path}) ---\n{output}")]
    Exited {
        /// The exit status.
        status: std::process::ExitStatus,
        /// Where its output is.
        output_path: PathBuf,
        /// The end of its output (it names the anvil and Alto logs).
        output: String,
    },
    /// The JSON file did not appear in time.
    #[error("anvil/stack.sh was not ready within {waited:?}.\n--- its output ({output_path}) ---\n{output}")]
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// Where its output is.
        output_path: PathBuf,
        /// The end of its output (it names the anvil and Alto logs).
        output: String,
    },
    /// The JSON file was not what the harness expects.
    #[error("cannot parse {path}: {source}")]
    Parse {
        /// The JSON file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// Temporary files could not be made.
    #[error("I/O error preparing the stack: {0}")]
    Io(#[from] io::Error),
}

/// A running stack; stopped (anvil and Alto too) when dropped.
#[derive(Debug)]
pub struct Stack {
    child: Child,
    info: StackInfo,
    output_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// Path of `anvil/stack.sh` in this checkout.
pub fn stack_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../anvil/stack.sh")
}

impl Stack {
    /// Starts a stack of its own and waits up to [`DEFAULT_START_TIMEOUT`] for it.
    pub fn start() -> Result<Self, StackError> {
        Self::start_with_timeout(DEFAULT_START_TIMEOUT)
    }

    /// A stack shared by every test of this test binary, started on first use. It is never
    /// dropped: `stack.sh` stops anvil and Alto itself when the test process (its parent) exits.
    /// Panics with the start error.
    pub fn shared() -> &'static Stack {
        static SHARED: OnceLock<Stack> = OnceLock::new();
        SHARED.get_or_init(|| Stack::start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// Starts a stack of its own and waits up to `timeout` for it.
    pub fn start_with_timeout(timeout: Duration) -> Result<Self, StackError> {
        Self::start_with_env(&[], timeout)
    }

    /// Starts a stack of its own with `env` added to `anvil/stack.sh`'s environment (e.g.
    /// `[("ALTO_ENABLE_DEBUG_ENDPOINTS", "true")]`: Alto reads its options from `ALTO_*`
    /// variables too, so a variable the script passes no flag for decides that option) and waits
    /// up to `timeout` for it. Stopped like any other [`Stack`].
    pub fn start_with_env(env: &[(&str, &str)], timeout: Duration) -> Result<Self, StackError> {
        let dir = tempfile::Builder::new().prefix("kms-stack-").tempdir()?;
        let json_path = dir.path().join("stack.json");
        let output_path = dir.path().join("stack.sh.log");
        let output = fs::File::create(&output_path)?;
        let script = stack_script();
        let child = Command::new("bash")
            .arg(&script)
            .arg("--out")
            .arg(&json_path)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .map_err(|source| StackError::Spawn {
                script: script.clone(),
                source,
            })?;
        // From here on, dropping `starting` stops the script whatever happens.
        let mut starting = Starting { child: Some(child) };

        let start = Instant::now();
        loop {
            if json_path.exists() {
                let text = fs::read_to_string(&json_path)?;
                let info: StackInfo =
                    serde_json::from_str(&text).map_err(|source| StackError::Parse {
                        path: json_path.clone(),
                        source,
                    })?;
                let child = starting.child.take().expect("still there");
                return Ok(Stack {
                    child,
                    info,
                    output_path,
                    _dir: dir,
                });
            }
            let child = starting.child.as_mut().expect("still there");
            if let Some(status) = child.try_wait()? {
                let output = tail(&output_path);
                // Keep the output for the error message after the temp dir goes away.
                let kept = keep(&output_path);
                return Err(StackError::Exited {
                    status,
                    output_path: kept,
                    output,
                });
            }
            if start.elapsed() >= timeout {
                let output = tail(&output_path);
                let kept = keep(&output_path);
                return Err(StackError::Timeout {
                    waited: start.elapsed(),
                    output_path: kept,
                    output,
                });
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The addresses and URLs of the stack.
    pub fn info(&self) -> &StackInfo {
        &self.info
    }

    /// The file holding `stack.sh`'s output (it names the anvil and Alto log files).
    pub fn output_path(&self) -> &Path {
        &self.output_path
    }

    /// The last lines of `stack.sh`'s output, for failure messages.
    pub fn output_tail(&self) -> String {
        tail(&self.output_path)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        stop(
            &mut self.child,
            Some((self.info.anvil_pid, self.info.bundler_pid)),
        );
    }
}

/// Owns the script while it starts, so that an early return or a panic stops it.
struct Starting {
    child: Option<Child>,
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            stop(child, None);
        }
    }
}

/// Stops the script with SIGTERM (it then stops anvil and Alto and removes its JSON file); after
/// 15 s, SIGKILL for the script and the PIDs it reported.
fn stop(child: &mut Child, pids: Option<(u32, u32)>) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    if let Some((anvil, bundler)) = pids {
        for pid in [anvil, bundler] {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    }
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Copies the script's output out of the temp dir so the path in an error stays valid.
fn keep(path: &Path) -> PathBuf {
    let kept = std::env::temp_dir().join(format!("kms-stack-{}.log", std::process::id()));
    match fs::copy(path, &kept) {
        Ok(_) => kept,
        Err(_) => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_keys_only() {
        let json = r#"{"rpcUrl":"http://127.0.0.1:1","bundlerUrl":"http://127.0.0.1:2","bundlerUrlV08":null,
            "chainId":31337,"entryPointV07":"0x0000000071727De22E5E9d8BAf0edAc6f37da032",
            "entryPointV08":"0x4337084D9E255Ff0702461CF8895CE9E3b5Ff108",
            "sessionKeyValidator":"0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0",
            "accountFactoryV07":"0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9",
            "accountFactoryV08":"0xDc64a140Aa3E981100a9becA4E685f962f0cF6C9",
            "eip7702Account":"0x0165878A594ca255338adfa4d48449f69242Eb8F",
            "testToken":"0x5FC8d32690cc91D4c39d9d3abcBD16989F875707",
            "deployerPrivateKey":"0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
            "anvilPid":10,"bundlerPid":11}"#;
        let info: StackInfo = serde_json::from_str(json).unwrap();
        assert_eq!(info.chain_id, 31337);
        assert_eq!(info.bundler_url_v08, None);
        assert_eq!(info.entry_point_v07, kms_contracts::ENTRY_POINT_V07);
        assert_eq!(
            info.eip7702_account,
            "0x0165878A594ca255338adfa4d48449f69242Eb8F"
                .parse::<Address>()
                .unwrap()
        );
        let missing = json.replace(
            "\"eip7702Account\":\"0x0165878A594ca255338adfa4d48449f69242Eb8F\",",
            "",
        );
        assert_ne!(missing, json);
        assert!(serde_json::from_str::<StackInfo>(&missing).is_err());
        let extra = json.replace("\"anvilPid\"", "\"surprise\":1,\"anvilPid\"");
        assert!(serde_json::from_str::<StackInfo>(&extra).is_err());
    }

    #[test]
    fn script_exists() {
        assert!(stack_script().is_file());
    }
}
