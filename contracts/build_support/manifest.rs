//! Checks that the committed artifacts under `contracts/artifacts` were built from the current
//! Solidity sources of the product, which sit at the top of `contracts/`
//! (`SessionKeyValidator.sol`, `AgentAccount.sol`, ..., `interfaces/`, `testing/`).
//!
//! `anvil/build-contracts.sh` (the `build-contracts` binary of `contracts/builder`) records the
//! SHA-256 of every product source in `artifacts/sources.sha256` (`sha256sum` format:
//! `<hex>  <path>.sol`, one per line, paths relative to `contracts/`) when it writes the
//! artifacts. This module recomputes the hashes and lists every difference, so that `build.rs` can
//! refuse to build with stale bytecode. It is shared by `build.rs`, the crate's unit tests and the
//! builder (included with `#[path]`), so it only uses `std` and `sha2`.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Name of the manifest file inside `artifacts/`.
pub const MANIFEST: &str = "sources.sha256";

/// One way in which the artifacts do not match the sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staleness {
    /// `artifacts/sources.sha256` does not exist.
    MissingManifest,
    /// A manifest line is not `<64 hex>  <path>`.
    Malformed(String),
    /// The source's hash differs from the one recorded.
    Changed(String),
    /// A source exists that the manifest does not list.
    Added(String),
    /// The manifest lists a source that no longer exists.
    Removed(String),
}

impl fmt::Display for Staleness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FIX: &str = "run anvil/build-contracts.sh";
        match self {
            Staleness::MissingManifest => {
                write!(f, "contracts/artifacts/{MANIFEST} is missing; {FIX}")
            }
            Staleness::Malformed(line) => {
                write!(
                    f,
                    "contracts/artifacts/{MANIFEST} has a malformed line {line:?}; {FIX}"
                )
            }
            Staleness::Changed(path) => {
                write!(f, "contracts/{path} changed after its artifact; {FIX}")
            }
            Staleness::Added(path) => {
                write!(f, "contracts/{path} is new and has no artifact; {FIX}")
            }
            Staleness::Removed(path) => {
                write!(
                    f,
                    "contracts/{path} was removed after the artifacts were built; {FIX}"
                )
            }
        }
    }
}

/// Top-level directories of `contracts/` that hold no product Solidity: the forge tests, the npm
/// packages, forge's and the builder's output, the Rust crate and its build support.
pub const NOT_SOURCES: &[&str] = &[
    "artifacts",
    "build_support",
    "builder",
    "cache",
    "node_modules",
    "out",
    "src",
    "target",
    "test",
];

/// Lists every product `.sol` file of `contracts_dir`: every `.sol` below it except under the
/// top-level directories of [`NOT_SOURCES`], hidden entries and symbolic links. Paths are relative
/// to `contracts_dir`, with `/` separators, sorted.
pub fn solidity_sources(contracts_dir: &Path) -> io::Result<Vec<String>> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if dir == base && NOT_SOURCES.contains(&name.as_ref()) {
                    continue;
                }
                walk(&path, base, out)?;
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "sol") {
                let rel = path.strip_prefix(base).expect("walked under base");
                let parts: Vec<_> = rel
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(contracts_dir, contracts_dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// SHA-256 of a file, lower-case hex.
pub fn sha256_hex(path: &Path) -> io::Result<String> {
    let digest = Sha256::digest(fs::read(path)?);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares the product sources of `contracts_dir` with `<contracts_dir>/artifacts/sources.sha256`.
///
/// Returns the source files (for `cargo:rerun-if-changed`) when everything matches, or every
/// difference found. I/O errors other than a missing manifest are returned as `Err` too.
pub fn check(contracts_dir: &Path) -> Result<Vec<PathBuf>, Vec<Staleness>> {
    let io_err = |e: io::Error| vec![Staleness::Malformed(format!("I/O error: {e}"))];
    let manifest_path = contracts_dir.join("artifacts").join(MANIFEST);
    let manifest = match fs::read_to_string(&manifest_path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(vec![Staleness::MissingManifest])
        }
        Err(e) => return Err(io_err(e)),
    };

    let mut problems = Vec::new();
    let mut recorded = Vec::new();
    for line in manifest.lines().filter(|l| !l.trim().is_empty()) {
        match line.split_once("  ") {
            Some((hash, path))
                if hash.len() == 64
                    && hash.bytes().all(|b| b.is_ascii_hexdigit())
                    && !path.is_empty() =>
            {
                recorded.push((hash.to_ascii_lowercase(), path.to_string()));
            }
            _ => problems.push(Staleness::Malformed(line.to_string())),
        }
    }

    let sources = solidity_sources(contracts_dir).map_err(io_err)?;
    for (hash, path) in &recorded {
        if !sources.contains(path) {
            problems.push(Staleness::Removed(path.clone()));
            continue;
        }
        if sha256_hex(&contracts_dir.join(path)).map_err(io_err)? != *hash {
            problems.push(Staleness::Changed(path.clone()));
        }
    }
    for path in &sources {
        if !recorded.iter().any(|(_, p)| p == path) {
            problems.push(Staleness::Added(path.clone()));
        }
    }

    if problems.is_empty() {
        Ok(sources.iter().map(|p| contracts_dir.join(p)).collect())
    } else {
        Err(problems)
    }
}
