//! `companion --dev`: a temporary data directory and a `ta-sim` child
//! process, stopped with the companion.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running simulator started by the companion.
pub struct DevSim {
    /// The child process (killed on drop).
    pub child: Child,
    /// Its socket.
    pub socket: PathBuf,
}

impl DevSim {
    /// Stop the simulator (SIGKILL of the child we started) and reap it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Where the `ta-sim` binary is: the explicit path, else next to this
/// executable, else `ta-sim` on PATH.
pub fn find_ta_sim(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            for cand in [dir.join("ta-sim"), dir.join("..").join("ta-sim")] {
                if cand.is_file() {
                    return cand;
                }
            }
        }
    }
    PathBuf::from("ta-sim")
}

/// Start `ta-sim` with its state in `data_dir` and wait until it says it is
/// ready (its stderr line `ta-sim ready on <socket>`).
pub async fn start_sim(
    bin: &Path,
    data_dir: &Path,
) -> Result<DevSim, Box<dyn std::error::Error + Send + Sync>> {
    let socket = data_dir.join("ta.sock");
    let mut child = Command::new(bin)
        .arg("--data-dir")
        .arg(data_dir.join("ta"))
        .arg("--socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {}: {e} (set --ta-sim-bin or KMS_TA_SIM_BIN)",
                bin.display()
            )
        })?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[ta-sim] {line}");
            if line.starts_with(kms_proto::wire::READY_LINE) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    if !ready {
        let _ = child.kill().await;
        return Err("ta-sim did not become ready".into());
    }
    // Keep forwarding its log.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[ta-sim] {line}");
        }
    });
    Ok(DevSim { child, socket })
}
