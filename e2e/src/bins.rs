//! Finding (and building) the workspace's binaries that the tests spawn, such as `ta-sim`.
//!
//! A test binary of this package cannot name another package's binary with
//! `CARGO_BIN_EXE_*`, so [`workspace_bin`] builds it with the same cargo, target directory and
//! profile as the running executable (`cargo build -p <package> --bin <name>`, a no-op when it
//! is up to date) and returns its path. An environment variable can point at a prebuilt binary
//! instead (e.g. `KMS_TA_SIM_BIN`).

use std::collections::HashMap;
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// A binary could not be found or built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BinError {
    /// The path in the override variable does not exist.
    #[error("{var} points at {path}, which does not exist")]
    MissingOverride {
        /// The variable.
        var: String,
        /// Its value.
        path: PathBuf,
    },
    /// `cargo build` failed.
    #[error("`cargo build -p {package} --bin {bin}` failed ({status}):\n{stderr}")]
    Build {
        /// The package.
        package: String,
        /// The binary.
        bin: String,
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// The build succeeded but the binary is not where it should be.
    #[error("built {bin} but found no binary at {path}")]
    NotFound {
        /// The binary.
        bin: String,
        /// Where it was expected.
        path: PathBuf,
    },
    /// The running executable's location is unknown.
    #[error("cannot locate the running executable: {0}")]
    CurrentExe(String),
}

/// The profile directory of the running executable (`<target>/<profile>`), whether it is a test
/// (in `<target>/<profile>/deps`) or a binary.
pub fn profile_dir() -> Result<PathBuf, BinError> {
    let exe = env::current_exe().map_err(|e| BinError::CurrentExe(e.to_string()))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| BinError::CurrentExe(exe.display().to_string()))?
        .to_path_buf();
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir.pop();
    }
    Ok(dir)
}

/// The path of workspace binary `bin` of `package`, built on first use in this process (see the
/// module docs); `override_var` names an environment variable holding a prebuilt path.
pub fn workspace_bin(package: &str, bin: &str, override_var: &str) -> Result<PathBuf, BinError> {
    if let Some(path) = env::var_os(override_var) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(BinError::MissingOverride {
                var: override_var.to_owned(),
                path,
            });
        }
        return Ok(path);
    }
    static BUILT: OnceLock<Mutex<HashMap<String, Result<PathBuf, BinError>>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    // Held during the build: concurrent tests wait for one build.
    let mut built = built.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = built.get(bin) {
        return r.clone();
    }
    let r = build(package, bin);
    built.insert(bin.to_owned(), r.clone());
    r
}

fn build(package: &str, bin: &str) -> Result<PathBuf, BinError> {
    let profile_dir = profile_dir()?;
    let target_dir = profile_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| profile_dir.clone());
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["-p", package, "--bin", bin])
        .env("CARGO_TARGET_DIR", &target_dir);
    if release {
        cmd.arg("--release");
    }
    let out = cmd.output().map_err(|e| BinError::Build {
        package: package.to_owned(),
        bin: bin.to_owned(),
        status: "not started".into(),
        stderr: e.to_string(),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        return Err(BinError::Build {
            package: package.to_owned(),
            bin: bin.to_owned(),
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    let path = profile_dir.join(bin);
    if !path.is_file() {
        return Err(BinError::NotFound {
            bin: bin.to_owned(),
            path,
        });
    }
    Ok(path)
}
