//! The one launcher of a `ta-sim` process for tests and the load drivers: spawn it, wait for
//! its ready line ([`READY_LINE`], exported by the `kms-ta-sim` crate), keep what it prints on
//! stderr, stop it.
//!
//! [`command`] presets the data directory, the socket and the standard streams; the caller adds
//! its own flags and environment, then [`TaSimProcess::start`] spawns it and waits.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use kms_ta_sim::READY_LINE;

/// How long [`TaSimProcess::start`] waits for the ready line by default.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why `ta-sim` could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TaSimError {
    /// Spawning it failed.
    #[error("spawn {bin}: {error}")]
    Spawn {
        /// The binary.
        bin: String,
        /// The error.
        error: std::io::Error,
    },
    /// It exited or stayed silent.
    #[error("ta-sim did not become ready within {waited:?}; its stderr:\n{stderr}")]
    NotReady {
        /// How long it waited.
        waited: Duration,
        /// What it printed.
        stderr: String,
    },
}

/// The exact line ta-sim prints once it listens on `socket`.
pub fn ready_line(socket: &Path) -> String {
    format!("{READY_LINE} {}", socket.display())
}

/// `bin --data-dir <data_dir> --socket <socket>`, stdin and stdout null, stderr piped, without
/// `TA_SIM_LOG` from the test's environment. Add flags and environment, then
/// [`TaSimProcess::start`].
pub fn command(bin: &Path, data_dir: &Path, socket: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .arg("--socket")
        .arg(socket)
        .env_remove("TA_SIM_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// A running `ta-sim`; killed (SIGKILL) when dropped unless stopped or handed over before.
#[derive(Debug)]
pub struct TaSimProcess {
    child: Option<Child>,
    socket: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl TaSimProcess {
    /// Spawns `cmd` (from [`command`], with the same `socket`) and waits up to `timeout` for its
    /// ready line; its stderr is read to the end in the background (see [`Self::stderr`]).
    pub fn start(mut cmd: Command, socket: &Path, timeout: Duration) -> Result<Self, TaSimError> {
        let mut child = cmd.spawn().map_err(|error| TaSimError::Spawn {
            bin: cmd.get_program().to_string_lossy().into_owned(),
            error,
        })?;
        let pipe = child
            .stderr
            .take()
            .expect("stderr is piped (see `command`)");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let log = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut l) = log.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        let mut sim = TaSimProcess {
            child: Some(child),
            socket: socket.to_owned(),
            stderr,
        };
        let want = ready_line(socket);
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) if line == want => return Ok(sim),
                Ok(_) => continue,
                Err(_) => {
                    sim.kill();
                    return Err(TaSimError::NotReady {
                        waited: start.elapsed(),
                        stderr: sim.stderr(),
                    });
                }
            }
        }
    }

    /// The socket it listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (it finishes the calls in flight and removes its socket), then SIGKILL if it
    /// has not exited after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The child process, for a caller that manages it itself (its stderr is still drained).
    pub fn into_child(mut self) -> Child {
        self.child.take().expect("running")
    }
}

impl Drop for TaSimProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
