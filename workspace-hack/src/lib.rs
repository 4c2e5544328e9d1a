//! Feature unification for the workspace (generated with `cargo hakari`).
//!
//! Every host-side crate depends on this one, which depends on each third-party crate with
//! the union of the features the whole workspace asks for. So `cargo build -p <one crate>`,
//! `cargo test -p kms-ta -p workspace-hack --features ...` and the tests' own builds of
//! `ta-sim`/`companion` reuse the dependency builds of `cargo test --workspace` instead of
//! recompiling alloy, tokio and the crypto crates with another feature set. The TA-side
//! crates (kms-proto, kms-ta, kms-ta-optee, kms-optee-abi) do not depend on it: they build
//! for the TEE without std.
//!
//! After changing dependencies, run `cargo hakari generate && cargo hakari manage-deps`.
