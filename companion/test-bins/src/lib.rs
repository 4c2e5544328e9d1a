//! Finding (and building) the workspace's binaries that tests spawn, such as `ta-sim`.
//!
//! A test of one package cannot name another package's binary with `CARGO_BIN_EXE_*`, so
//! [`workspace_bin`] builds it with the same cargo, target directory and profile as the running
//! executable (`cargo build --locked -p <package> --bin <name>`, a no-op when it is up to date)
//! and returns its path. An environment variable can point at a prebuilt binary instead (e.g.
//! `KMS_TA_SIM_BIN`).
//!
//! [`workspace_bin_with_features`] builds a feature variant (e.g. `ta-sim` with
//! `fault-injection`) in the same target directory, so only the crates the features change are
//! recompiled (the `workspace-hack` crate keeps the dependencies' features the same), copies it
//! aside as `<bin>-<features>`, and puts the default binary back. Every build in every test
//! process holds one file lock in the profile directory, so no test ever finds a feature
//! variant where the default binary belongs.
//!
//! [`ta_sim`] starts a `ta-sim` and waits for its ready line: the one launcher of the tests,
//! the harnesses and the load drivers.

pub mod ta_sim;

use std::collections::HashMap;
use std::env;
use std::fs::{File, OpenOptions};
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
    #[error("`cargo build -p {package} --bin {bin}{features}` failed ({status}):\n{stderr}")]
    Build {
        /// The package.
        package: String,
        /// The binary.
        bin: String,
        /// ` --features …`, or empty.
        features: String,
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
    /// The build lock or the copy of a feature variant failed.
    #[error("{what} {path}: {error}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        error: String,
    },
    /// The running executable's location is unknown.
    #[error("cannot locate the running executable: {0}")]
    CurrentExe(String),
}

/// The profile directory of the running executable (`<target>/<profile>`), whether it is a test
/// (in `<target>/<profile>/deps`), an example or a binary.
pub fn profile_dir() -> Result<PathBuf, BinError> {
    let exe = env::current_exe().map_err(|e| BinError::CurrentExe(e.to_string()))?;
    Ok(profile_dir_of(&exe))
}

fn profile_dir_of(exe: &Path) -> PathBuf {
    let mut dir = exe.parent().unwrap_or(exe).to_path_buf();
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir.pop();
    }
    dir
}

/// The path of workspace binary `bin` of `package`, built on first use in this process (see
/// the crate docs); `override_var` names an environment variable holding a prebuilt path.
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
    once(&format!("{package}/{bin}"), || {
        build_into(&profile_dir()?, package, bin)
    })
}

/// Build binary `bin` of `package` into `profile_dir` (`<target>/<profile>`, e.g. a load
/// driver's choice of `target/release`) under the build lock, and return its path.
pub fn build_into(profile_dir: &Path, package: &str, bin: &str) -> Result<PathBuf, BinError> {
    let _lock = BuildLock::take(profile_dir)?;
    cargo_build(profile_dir, package, bin, None)
}

/// Binary `bin` of `package` built with `features` (comma-separated cargo features), once per
/// process, as a copy at `<target>/<profile>/<bin>-<features>` (see the crate docs).
pub fn workspace_bin_with_features(
    package: &str,
    bin: &str,
    features: &str,
) -> Result<PathBuf, BinError> {
    once(&format!("{package}/{bin}/{features}"), || {
        let dir = profile_dir()?;
        let variant = dir.join(format!("{bin}-{}", features.replace(',', "-")));
        let _lock = BuildLock::take(&dir)?;
        let built = cargo_build(&dir, package, bin, Some(features))?;
        // Copy, then rename over: a process still running an older copy keeps its inode.
        let tmp = variant.with_extension("tmp");
        std::fs::copy(&built, &tmp).map_err(io("copying the feature build to", &tmp))?;
        std::fs::rename(&tmp, &variant).map_err(io("moving the feature build to", &variant))?;
        cargo_build(&dir, package, bin, None)?;
        Ok(variant)
    })
}

/// Run `f` once per `key` in this process and remember its result. The lock is held while `f`
/// runs, so concurrent tests wait for one build.
fn once(key: &str, f: impl FnOnce() -> Result<PathBuf, BinError>) -> Result<PathBuf, BinError> {
    static BUILT: OnceLock<Mutex<HashMap<String, Result<PathBuf, BinError>>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(r) = built.get(key) {
        return r.clone();
    }
    let r = f();
    built.insert(key.to_owned(), r.clone());
    r
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BinError {
    let path = path.to_owned();
    move |e| BinError::Io {
        what,
        path,
        error: e.to_string(),
    }
}

/// Held while a process builds into the shared profile directory (an exclusive `flock`).
struct BuildLock(File);

impl BuildLock {
    fn take(profile_dir: &Path) -> Result<BuildLock, BinError> {
        std::fs::create_dir_all(profile_dir)
            .map_err(io("creating the profile directory", profile_dir))?;
        let path = profile_dir.join(".kms-test-bins.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("opening the build lock", &path))?;
        f.lock().map_err(io("taking the build lock", &path))?;
        Ok(BuildLock(f))
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// `cargo build --locked -p <package> --bin <bin> [--features …]` with the running executable's
/// target directory and profile; the path of the built binary.
fn cargo_build(
    profile_dir: &Path,
    package: &str,
    bin: &str,
    features: Option<&str>,
) -> Result<PathBuf, BinError> {
    let target_dir = profile_dir.parent().unwrap_or(profile_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--locked", "--manifest-path"])
        .arg(&manifest)
        .args(["-p", package, "--bin", bin])
        .env("CARGO_TARGET_DIR", target_dir);
    if let Some(f) = features {
        cmd.args(["--features", f]);
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let failed = |status: String, stderr: String| BinError::Build {
        package: package.to_owned(),
        bin: bin.to_owned(),
        features: features
            .map(|f| format!(" --features {f}"))
            .unwrap_or_default(),
        status,
        stderr,
    };
    let out = cmd
        .output()
        .map_err(|e| failed("not started".into(), e.to_string()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        return Err(failed(out.status.to_string(), tail));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_dir_of_tests_examples_and_binaries() {
        for (exe, dir) in [
            ("/t/debug/deps/sim-0123", "/t/debug"),
            ("/t/release/examples/x", "/t/release"),
            ("/t/debug/ta-sim", "/t/debug"),
        ] {
            assert_eq!(profile_dir_of(Path::new(exe)), Path::new(dir), "{exe}");
        }
    }

    #[test]
    fn a_missing_override_is_refused_and_an_existing_one_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let there = dir.path().join("bin");
        std::fs::write(&there, b"").unwrap();
        // Each variable is set once, by this test only.
        env::set_var("KMS_TEST_BINS_OVERRIDE_OK", &there);
        env::set_var("KMS_TEST_BINS_OVERRIDE_MISSING", dir.path().join("nope"));
        assert_eq!(
            workspace_bin("no-such-package", "x", "KMS_TEST_BINS_OVERRIDE_OK").unwrap(),
            there
        );
        let e = workspace_bin("no-such-package", "x", "KMS_TEST_BINS_OVERRIDE_MISSING");
        assert!(
            matches!(&e, Err(BinError::MissingOverride { var, .. }) if var == "KMS_TEST_BINS_OVERRIDE_MISSING"),
            "{e:?}"
        );
    }

    #[test]
    fn a_failed_build_says_which_package_and_why() {
        let e = workspace_bin("kms-no-such-package", "nothing", "KMS_TEST_BINS_UNSET").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, BinError::Build { .. }), "{msg}");
        assert!(
            msg.contains("-p kms-no-such-package --bin nothing"),
            "{msg}"
        );
        // cargo's own reason, not just its exit status.
        assert!(msg.contains("did not match any packages"), "{msg}");
    }
}
