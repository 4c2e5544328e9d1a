//! Processes under test: `ta-sim` and `companion`, started from built
//! binaries, each in its own data directory, on free loopback ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kms_test_bins::ta_sim::{self, TaSimProcess};

/// Which cargo profile the binaries come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `target/debug`.
    Debug,
    /// `target/release`.
    Release,
}

/// The cargo target directory (`CARGO_TARGET_DIR`, else `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

/// Build `ta-sim` and `companion` in `profile` (with `--locked`, under the tests' build lock;
/// see [`kms_test_bins::build_into`]) and return the profile's output directory.
pub fn build_bins(profile: Profile) -> Result<PathBuf, String> {
    let dir = target_dir().join(match profile {
        Profile::Debug => "debug",
        Profile::Release => "release",
    });
    for (package, bin) in [("kms-ta-sim", "ta-sim"), ("kms-companion", "companion")] {
        kms_test_bins::build_into(&dir, package, bin).map_err(|e| e.to_string())?;
    }
    Ok(dir)
}

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it
/// right after).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().unwrap().port()
}

/// Peak resident set size (`VmHWM`) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Current resident set size (`VmRSS`) of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Clock ticks per second of [`cpu_ticks`] (Linux's `USER_HZ`, 100 on every architecture it
/// exports to user space).
pub const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU time of a process so far (from `/proc/<pid>/stat`,
/// in clock ticks of 10 ms on Linux).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// A child process we started; SIGKILLed and reaped on drop.
pub struct Proc {
    child: Option<Child>,
    /// Its pid.
    pub pid: u32,
}

impl Proc {
    /// SIGKILL the process (ours, by pid) and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(_))) => {
                self.child = None;
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Wait for it to exit on its own (up to `limit`), then kill it.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.exited() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill9();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Start `ta-sim` over `dir` (state in `dir/ta`, socket `dir/ta.sock`) and
/// wait until it says it is ready. `env` is added to its environment (e.g.
/// the crash hook of a `fault-injection` build).
pub fn start_sim(bin: &Path, dir: &Path, env: &[(&str, &str)]) -> Result<Proc, String> {
    let socket = dir.join("ta.sock");
    let mut cmd = ta_sim::command(bin, &dir.join("ta"), &socket);
    cmd.arg("--log").arg("warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = TaSimProcess::start(cmd, &socket, ta_sim::READY_TIMEOUT)
        .map_err(|e| e.to_string())?
        .into_child();
    let pid = child.id();
    Ok(Proc {
        child: Some(child),
        pid,
    })
}

/// Settings of a companion process.
#[derive(Clone, Debug)]
pub struct CompanionOpts {
    /// Extra command-line flags.
    pub args: Vec<String>,
}

/// Create an API key in the companion's database at `dir` (runs
/// `companion --create-api-key`) and return it.
pub fn create_api_key(bin: &Path, dir: &Path) -> Result<String, String> {
    let out = Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .arg("--create-api-key")
        .arg("loadgen")
        .arg("--log")
        .arg("warn")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "companion --create-api-key failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if key.is_empty() {
        return Err("companion --create-api-key printed no key".into());
    }
    Ok(key)
}

/// Start the companion over `dir` (database `dir/kms.db`, TA socket
/// `dir/ta.sock`) on `port`, and wait until `/health` answers.
pub fn start_companion(
    bin: &Path,
    dir: &Path,
    port: u16,
    opts: &CompanionOpts,
) -> Result<Proc, String> {
    let mut child = Command::new(bin)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir)
        .arg("--tee")
        .arg(format!("sim:{}", dir.join("ta.sock").display()))
        .arg("--rp-id")
        .arg("localhost")
        .arg("--log")
        .arg("warn")
        .args(&opts.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("companion exited during start-up: {st}"));
        }
        if health_ok(port) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("companion did not answer /health within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Proc {
        child: Some(child),
        pid,
    })
}

fn health_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && &buf[9..12] == b"200"
}

/// Pins every thread of process `pid` (and those it starts later) to the CPUs `cpus` (a
/// `taskset` list such as `0` or `0-1`), with util-linux's `taskset -a -p -c`.
pub fn pin(pid: u32, cpus: &str) -> Result<(), String> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .map_err(|e| format!("taskset: {e} (util-linux's taskset is needed for --cpus)"))?;
    if !out.status.success() {
        return Err(format!(
            "taskset -c {cpus} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}
