//! The Trusted Application core.
//!
//! Plain Rust with no OS: [`TaCore::invoke`] takes a command id and request
//! bytes and returns response bytes (see [`kms_proto::codec`]). Sealed
//! storage, randomness and the clock are injected through [`SealedStorage`],
//! [`Entropy`] and [`Clock`]; the OP-TEE entry points (`ta/optee`) and the
//! host simulator (`ta/sim`) are thin shells around this one core, so the
//! same bytes go through both.
//!
//! Key material is generated from [`Entropy`] inside the core and never
//! leaves it: no command returns a seed, a private key or an HMAC secret
//! (except `export-secrets` development builds).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

use alloc::vec::Vec;
pub use kms_proto::StorageFault;

/// One operation of an atomic storage write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOp<'a> {
    /// Create or replace the object `key`.
    Put(&'a str, &'a [u8]),
    /// Delete the object `key` (absent is fine).
    Delete(&'a str),
}

/// Sealed (confidential, integrity-protected, persistent) key-value storage.
///
/// Values are plaintext to the core; the implementation seals them (OP-TEE
/// secure storage, or the simulator's AEAD-encrypted file).
pub trait SealedStorage {
    /// Read the object `key`.
    fn read(&mut self, key: &str) -> Result<Option<Vec<u8>>, StorageFault>;
    /// Apply `ops` atomically: after a crash either all or none are visible.
    fn write(&mut self, ops: &[WriteOp<'_>]) -> Result<(), StorageFault>;
}

/// The TA's randomness source.
pub trait Entropy {
    /// Fill `buf` with cryptographically secure random bytes.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError>;
}

/// The randomness source failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntropyError;

/// The TA's clock.
pub trait Clock {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// Build-independent settings of the core.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Serve `SeedWalletForTest` (only effective with the `test-seed`
    /// feature; the simulator turns it on with a flag).
    pub test_seed_enabled: bool,
}

/// The TA core.
pub struct TaCore<S, E, C> {
    #[allow(dead_code)]
    storage: S,
    #[allow(dead_code)]
    entropy: E,
    #[allow(dead_code)]
    clock: C,
    #[allow(dead_code)]
    config: Config,
}

impl<S: SealedStorage, E: Entropy, C: Clock> TaCore<S, E, C> {
    /// A core over the given storage, randomness and clock.
    pub fn new(storage: S, entropy: E, clock: C, config: Config) -> Self {
        TaCore {
            storage,
            entropy,
            clock,
            config,
        }
    }

    /// Execute command `cmd` on request bytes `input`; returns the encoded
    /// response (success or typed error). Never panics on any input.
    pub fn invoke(&mut self, cmd: u32, _input: &[u8]) -> Vec<u8> {
        kms_proto::encode_response::<kms_proto::Empty>(Err(&kms_proto::TaError::UnknownCommand(
            cmd,
        )))
    }
}
