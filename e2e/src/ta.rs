//! A `ta-sim` process for a test: its own temporary data directory and socket, test seeding
//! enabled, stopped (SIGTERM, then SIGKILL) when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kms_tee_client::{SimConfig, SimTransport, TeeClient};

use kms_test_bins::{workspace_bin, BinError};

/// How long [`TaSim::start`] waits for the ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why `ta-sim` could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TaSimError {
    /// The binary could not be found or built.
    #[error(transparent)]
    Bin(#[from] BinError),
    /// I/O (temporary directory, spawning).
    #[error("ta-sim: {0}")]
    Io(#[from] std::io::Error),
    /// It exited or stayed silent.
    #[error("ta-sim did not become ready within {waited:?}; its stderr:\n{stderr}")]
    NotReady {
        /// How long it waited.
        waited: Duration,
        /// What it printed.
        stderr: String,
    },
}

/// A running `ta-sim`.
#[derive(Debug)]
pub struct TaSim {
    child: Option<Child>,
    socket: PathBuf,
    stderr: Arc<Mutex<String>>,
    dir: tempfile::TempDir,
}

/// The `ta-sim` binary of this workspace (built if needed; `KMS_TA_SIM_BIN` overrides).
pub fn ta_sim_bin() -> Result<PathBuf, BinError> {
    workspace_bin("kms-ta-sim", "ta-sim", "KMS_TA_SIM_BIN")
}

impl TaSim {
    /// Starts `ta-sim --enable-test-seed` on a fresh temporary data directory and waits for its
    /// ready line.
    pub fn start() -> Result<Self, TaSimError> {
        let bin = ta_sim_bin()?;
        let dir = tempfile::Builder::new().prefix("kms-ta-sim-").tempdir()?;
        let data_dir = dir.path().join("data");
        let socket = dir.path().join("ta.sock");
        let mut child = Command::new(bin)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--socket")
            .arg(&socket)
            .arg("--enable-test-seed")
            .arg("--log")
            .arg("warn")
            .env_remove("TA_SIM_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr_pipe = child.stderr.take().expect("piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let log = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut l) = log.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        let mut sim = TaSim {
            child: Some(child),
            socket,
            stderr,
            dir,
        };
        let want = format!("ta-sim ready on {}", sim.socket.display());
        let start = Instant::now();
        loop {
            let left = READY_TIMEOUT.saturating_sub(start.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) if line == want => return Ok(sim),
                Ok(_) => continue,
                Err(_) => {
                    sim.stop();
                    return Err(TaSimError::NotReady {
                        waited: start.elapsed(),
                        stderr: sim.stderr(),
                    });
                }
            }
        }
    }

    /// The socket path (`sim:<path>` for the companion's TEE backend setting).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The temporary directory holding the data directory and the socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client with its own session pool.
    pub fn client(&self) -> TeeClient {
        TeeClient::new(SimTransport::with_config(
            &self.socket,
            SimConfig {
                call_timeout: Some(Duration::from_secs(60)),
                ..SimConfig::default()
            },
        ))
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops it: SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for TaSim {
    fn drop(&mut self) {
        self.stop();
    }
}
