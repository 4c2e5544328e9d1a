//! Refuses to build when a Solidity source under `contracts/src` changed after the committed
//! artifacts (`contracts/artifacts`) were made: stale bytecode is never embedded silently.

#[path = "build_support/manifest.rs"]
mod manifest;

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    // A directory makes cargo rerun this script when anything below it changes.
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=artifacts");
    println!("cargo:rerun-if-changed=build_support/manifest.rs");

    if let Err(problems) = manifest::check(&dir) {
        eprintln!("error: the committed contract artifacts are stale:");
        for problem in &problems {
            eprintln!("  {problem}");
        }
        std::process::exit(1);
    }
}
