//! Helpers for the ta-sim process tests: spawn the real binary, wait for its
//! ready line, stop it with a signal, and a software passkey that makes real
//! WebAuthn assertions for the TA.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kms_proto::authz::{self, AuthorizedBody};
use kms_proto::{CreateWallet, CreateWalletOutput, GetChallenge, PasskeyAssertion, WalletId};
use kms_tee_client::{SimConfig, SimTransport, TeeClient};
use p256::ecdsa::signature::Signer;
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_ta-sim");
pub const RP_ID: &str = "localhost";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A running ta-sim.
pub struct Sim {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    stderr: Arc<Mutex<String>>,
}

/// How a ta-sim run ended.
pub struct Exit {
    pub status: ExitStatus,
    pub stderr: String,
}

fn spawn(
    data_dir: &Path,
    socket: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, Arc<Mutex<String>>, mpsc::Receiver<String>) {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("TA_SIM_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn ta-sim");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let log2 = Arc::clone(&log);
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            log2.lock().unwrap().push_str(&line);
            log2.lock().unwrap().push('\n');
            let _ = tx.send(line);
        }
    });
    (child, log, rx)
}

impl Sim {
    /// Start ta-sim on `data_dir` with the socket `<data_dir>/../<name>.sock`
    /// and wait for its ready line.
    pub fn start(data_dir: &Path, args: &[&str]) -> Sim {
        Self::start_with(data_dir, &default_socket(data_dir), args, &[])
    }

    pub fn start_with(data_dir: &Path, socket: &Path, args: &[&str], env: &[(&str, &str)]) -> Sim {
        let (mut child, stderr, rx) = spawn(data_dir, socket, args, env);
        let want = format!("{} {}", kms_ta_sim::READY_LINE, socket.display());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line == want => break,
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "ta-sim did not become ready; stderr:\n{}",
                        stderr.lock().unwrap()
                    );
                }
            }
        }
        Sim {
            child: Some(child),
            socket: socket.to_owned(),
            data_dir: data_dir.to_owned(),
            stderr,
        }
    }

    /// A client with its own session pool (so its calls use their own
    /// session(s)).
    pub fn client(&self) -> TeeClient {
        TeeClient::new(SimTransport::with_config(
            &self.socket,
            SimConfig {
                call_timeout: Some(Duration::from_secs(60)),
                ..SimConfig::default()
            },
        ))
    }

    pub fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_child(self.child.as_ref().expect("running"))
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        rustix::process::kill_process(self.pid(), sig).expect("signal ta-sim");
    }

    /// Wait for the process to exit by itself.
    pub fn wait(mut self) -> Exit {
        let mut child = self.child.take().expect("running");
        let status = wait_timeout(&mut child);
        // Let the reader thread drain the pipe.
        thread::sleep(Duration::from_millis(50));
        let stderr = self.stderr.lock().unwrap().clone();
        Exit { status, stderr }
    }

    /// SIGTERM and wait.
    pub fn stop(self) -> Exit {
        self.signal(rustix::process::Signal::TERM);
        self.wait()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_timeout(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ta-sim did not exit in time");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn default_socket(data_dir: &Path) -> PathBuf {
    data_dir.with_extension("sock")
}

/// Run ta-sim expecting it to fail at start.
pub fn start_fails(data_dir: &Path, args: &[&str]) -> Exit {
    let (mut child, stderr, _rx) = spawn(data_dir, &default_socket(data_dir), args, &[]);
    let status = wait_timeout(&mut child);
    thread::sleep(Duration::from_millis(50));
    let stderr = stderr.lock().unwrap().clone();
    Exit { status, stderr }
}

/// A software passkey.
pub struct SoftPasskey {
    key: p256::ecdsa::SigningKey,
    counter: u32,
}

impl SoftPasskey {
    pub fn new(seed: u8) -> Self {
        let mut bytes = [seed; 32];
        bytes[0] = 1;
        SoftPasskey {
            key: p256::ecdsa::SigningKey::from_slice(&bytes).unwrap(),
            counter: 0,
        }
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// An assertion over `challenge` (UP and UV set, rp id `localhost`).
    pub fn assert_challenge(&mut self, challenge: &[u8; 32]) -> PasskeyAssertion {
        self.counter += 1;
        let mut ad = Sha256::digest(RP_ID.as_bytes()).to_vec();
        ad.push(0x05);
        ad.extend_from_slice(&self.counter.to_be_bytes());
        let cdj = format!(
            r#"{{"type":"webauthn.get","challenge":"{}","origin":"http://localhost:3000","crossOrigin":false}}"#,
            URL_SAFE_NO_PAD.encode(challenge)
        )
        .into_bytes();
        let mut signed = ad.clone();
        signed.extend_from_slice(&Sha256::digest(&cdj));
        let sig: p256::ecdsa::Signature = self.key.sign(&signed);
        PasskeyAssertion {
            authenticator_data: ad,
            client_data_json: cdj,
            signature: sig.to_der().as_bytes().to_vec(),
        }
    }

    /// An assertion for `body` over a nonce the TA issued.
    pub fn authorize<B: AuthorizedBody>(&mut self, nonce: &[u8; 32], body: &B) -> PasskeyAssertion {
        self.assert_challenge(&authz::challenge(nonce, &body.payload_digest()))
    }
}

pub fn create_wallet(client: &TeeClient, pk: &SoftPasskey) -> CreateWalletOutput {
    client
        .call(&CreateWallet {
            passkey_public_key: pk.public_key(),
            rp_id: RP_ID.into(),
        })
        .expect("create wallet")
}

pub fn nonce(client: &TeeClient, wallet: WalletId) -> [u8; 32] {
    client
        .call(&GetChallenge { wallet_id: wallet })
        .expect("challenge")
        .nonce
}
