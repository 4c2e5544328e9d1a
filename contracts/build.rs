//! Refuses to build when a product Solidity source (`contracts/*.sol`, `contracts/interfaces/`,
//! `contracts/testing/`) changed after the committed artifacts (`contracts/artifacts`) were made:
//! stale bytecode is never embedded silently.

#[path = "build_support/manifest.rs"]
mod manifest;

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    // A directory makes cargo rerun this script when anything below it changes. The sources sit
    // next to forge's out/ and cache/, so contracts/ itself is not watched: every source file and
    // every directory holding one is (a new file in them, or a changed one, reruns the check). A
    // new top-level .sol alone goes unnoticed until a source or the artifacts change.
    println!("cargo:rerun-if-changed=artifacts");
    println!("cargo:rerun-if-changed=build_support/manifest.rs");
    let mut dirs = std::collections::BTreeSet::new();
    for source in manifest::solidity_sources(&dir).unwrap_or_default() {
        if let Some((parent, _)) = source.split_once('/') {
            dirs.insert(parent.to_string());
        }
        println!("cargo:rerun-if-changed={source}");
    }
    for parent in dirs {
        println!("cargo:rerun-if-changed={parent}");
    }

    if let Err(problems) = manifest::check(&dir) {
        eprintln!("error: the committed contract artifacts are stale:");
        for problem in &problems {
            eprintln!("  {problem}");
        }
        std::process::exit(1);
    }
}
