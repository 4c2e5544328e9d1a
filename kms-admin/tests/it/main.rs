//! `kms-admin`'s tests, in one test binary: the real `kms-admin` binary beside a real companion
//! (in-process), its `ta-sim` process and its SQLite file. Run one area with
//! `cargo test -p kms-admin --test it <module>::`.
//!
//! `export_key::` exists only with the feature `export-secrets` (the development-only binary
//! it runs): `cargo test -p kms-admin --features export-secrets --test it export_key::`.

mod cli;
mod common;
#[cfg(feature = "export-secrets")]
mod export_key;
