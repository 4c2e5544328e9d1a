//! A `ta-sim` process for a test: its own temporary data directory and socket, test seeding
//! enabled, stopped (SIGTERM, then SIGKILL) when dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kms_tee_client::{SimConfig, SimTransport, TeeClient};

use kms_test_bins::ta_sim::{self, TaSimProcess};
use kms_test_bins::{workspace_bin, BinError};

/// How long [`TaSim::start`] waits for the ready line.
pub const READY_TIMEOUT: Duration = ta_sim::READY_TIMEOUT;

/// Why `ta-sim` could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TaSimError {
    /// The binary could not be found or built.
    #[error(transparent)]
    Bin(#[from] BinError),
    /// I/O (temporary directory).
    #[error("ta-sim: {0}")]
    Io(#[from] std::io::Error),
    /// It could not be spawned, or exited or stayed silent.
    #[error(transparent)]
    Start(#[from] ta_sim::TaSimError),
}

/// A running `ta-sim`.
#[derive(Debug)]
pub struct TaSim {
    process: TaSimProcess,
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
        let socket = dir.path().join("ta.sock");
        let mut cmd = ta_sim::command(&bin, &dir.path().join("data"), &socket);
        cmd.arg("--enable-test-seed").arg("--log").arg("warn");
        let process = TaSimProcess::start(cmd, &socket, READY_TIMEOUT)?;
        Ok(TaSim { process, dir })
    }

    /// The socket path (`sim:<path>` for the companion's TEE backend setting).
    pub fn socket(&self) -> &Path {
        self.process.socket()
    }

    /// The temporary directory holding the data directory and the socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client with its own session pool.
    pub fn client(&self) -> TeeClient {
        TeeClient::new(SimTransport::with_config(
            self.process.socket(),
            SimConfig {
                call_timeout: Some(Duration::from_secs(60)),
                ..SimConfig::default()
            },
        ))
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    /// Stops it: SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        self.process.terminate(Duration::from_secs(10));
    }
}

impl Drop for TaSim {
    fn drop(&mut self) {
        self.stop();
    }
}
