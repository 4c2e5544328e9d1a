//! The OP-TEE shell of the key companion's Trusted Application.
//!
//! The TA logic is the `kms-ta` core; this crate only connects it to OP-TEE,
//! like the simulator (`ta-sim`) connects the same core to a Unix socket:
//!
//! * [`exclusive`] — the cell holding the TA's ONE global core.
//! * [`login`] — which normal-world client may open a session (the check of
//!   `open_session`, fixed at build time by `KMS_TA_CLIENT_LOGIN`).
//! * `tee` (feature `optee`) — persistent objects (the backend of
//!   [`kms_ta::store`]), `TEE_GenerateRandom`, REE time (read through
//!   [`kms_ta::clock`]) and the bodies of the entry points, whose `#[ta_*]`
//!   functions are in the TA binary (`src/main.rs`).
//!
//! The parameter layout of the entry points is defined once, in
//! [`kms_optee_abi`], and used by the client (`kms-tee-client`, feature
//! `optee`) too. See `README.md` for building and installing the real TA.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

// The test seeding command (a wallet from a caller-chosen mnemonic) must
// never exist in an OP-TEE build.
#[cfg(all(feature = "optee", feature = "test-seed"))]
compile_error!(
    "kms-ta-optee: the `test-seed` feature must never be enabled in an OP-TEE build \
     (SeedWalletForTest is for the simulator only)"
);

pub mod exclusive;
pub mod login;
#[cfg(feature = "optee")]
pub mod tee;

pub use kms_optee_abi as abi;

// Refuses to compile when kms-ta's `test-seed` feature is switched on by
// any route (feature unification included), not only through this crate's
// own feature.
#[cfg(feature = "optee")]
const _: () = assert!(
    !kms_ta::TEST_SEED_COMPILED,
    "kms-ta-optee: kms-ta's `test-seed` feature is enabled in an OP-TEE build; \
     build the TA on its own (`-p kms-ta-optee`), without it"
);

#[cfg(test)]
mod tests {
    /// `uuid.txt` (read by the SDK's `cargo-optee` and signing scripts) is
    /// the protocol's TA UUID.
    #[test]
    fn uuid_txt_is_the_protocol_uuid() {
        assert_eq!(include_str!("../uuid.txt").trim(), kms_proto::TA_UUID);
    }
}
