//! Rollback detection: a sealed state version checked against a monotonic counter.
//!
//! Sealed storage proves that the state was written by this TA, not that it is the *latest*
//! state: a host that keeps an old copy of the sealed file (or of OP-TEE's REE FS objects) can
//! put it back, and with it revoked agents, superseded credentials, rotated-out JWT secrets and
//! replaced passkeys. So:
//!
//! * The sealed state carries a **version** (the object [`STATE_VERSION_KEY`], a `u64`
//!   big-endian; absent = 0, as in every state written before it existed). Every write batch of
//!   the core adds `version + 1` to the batch itself, so the version changes atomically with
//!   the state it describes.
//! * A [`MonotonicCounter`] kept **outside** the sealed state (OP-TEE: an RPMB persistent
//!   object, whose replay protection is in hardware; the simulator: a separate file, a
//!   stand-in) is advanced to the new version *after* the sealed write.
//!
//! The core compares the two before the first command that touches state:
//!
//! | sealed version vs counter | meaning | the core |
//! |---|---|---|
//! | equal | the normal case | serves |
//! | sealed ahead | a crash (or an I/O error) between the sealed write and the counter advance | serves, after advancing the counter (if that fails, refuses with a storage error and retries on the next command) |
//! | sealed **behind** | the sealed state was rolled back | refuses every command that touches state with [`TaError::StateRolledBack`] naming both numbers |
//!
//! The order of the two writes is what makes a crash harmless: the counter never gets ahead of
//! a sealed state that exists. The only way out of a rollback is the explicit
//! [`AcceptRestore`] command (`kms-admin accept-restore --yes`): it re-seals the state the TA
//! holds with a version past the counter and advances the counter to it, and, for a rolled-back
//! state, force-rotates the JWT secrets in the same write (the restored state would otherwise
//! verify credentials that later refreshes had superseded).
//!
//! Commands that never touch state ([`CommandId::TaInfo`], the refused
//! [`CommandId::JwtHmacSign`], [`CommandId::AcceptRestore`] itself) are served regardless; every
//! other command, including any added later, is checked (see [`touches_state`]).

use alloc::vec::Vec;

use kms_proto::{AcceptRestore, CommandId, RestoreAccepted, StorageFault, TaError};

use crate::{Clock, Entropy, SealedStorage, TaCore, WriteOp};

/// The sealed object holding the state version (`u64`, big-endian).
pub const STATE_VERSION_KEY: &str = "state-version";

/// A counter that only goes up, kept outside the sealed state, that the host cannot roll back
/// together with it (OP-TEE: a persistent object in RPMB; the simulator: a separate file).
pub trait MonotonicCounter {
    /// The counter's value; 0 if it was never advanced.
    fn read(&mut self) -> Result<u64, StorageFault>;
    /// Raise the counter to `value` (nothing to do if it is there already or beyond), durably
    /// before returning `Ok`. On `Err` the counter may or may not have moved; it never goes
    /// down.
    fn advance_to(&mut self, value: u64) -> Result<(), StorageFault>;
}

/// The version the sealed state in `storage` carries (0 when it carries none).
pub fn sealed_version<S: SealedStorage>(storage: &mut S) -> Result<u64, StorageFault> {
    match storage.read(STATE_VERSION_KEY)? {
        None => Ok(0),
        Some(bytes) => {
            let b: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| StorageFault::Corrupt)?;
            Ok(u64::from_be_bytes(b))
        }
    }
}

/// Whether command `id` reads or writes the sealed state (and so must not run on a rolled-back
/// one). Fail-closed: only the listed commands are exempt.
pub fn touches_state(id: CommandId) -> bool {
    !matches!(
        id,
        CommandId::TaInfo | CommandId::JwtHmacSign | CommandId::AcceptRestore
    )
}

/// What the core knows about its state's version and the counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Not compared yet (nothing touched state since the core was built).
    #[default]
    Unchecked,
    /// The state is current: `version` is the sealed state's, `counter` what the counter is
    /// known to hold (lower only while an advance is owed).
    Current {
        /// The sealed state's version.
        version: u64,
        /// The counter's known value.
        counter: u64,
    },
    /// The sealed state is behind the counter.
    RolledBack {
        /// The sealed state's version.
        sealed: u64,
        /// The counter.
        counter: u64,
    },
}

impl<S: SealedStorage, E: Entropy, C: Clock, M: MonotonicCounter> TaCore<S, E, C, M> {
    /// Compare the sealed version with the counter (once), catch a lagging counter up, and
    /// refuse a rolled-back state. Returns the current version.
    pub(crate) fn ensure_fresh(&mut self) -> Result<u64, TaError> {
        let (version, counter) = match self.freshness {
            Freshness::RolledBack { sealed, counter } => {
                return Err(TaError::StateRolledBack { sealed, counter })
            }
            Freshness::Current { version, counter } => (version, counter),
            Freshness::Unchecked => {
                let sealed = sealed_version(&mut self.storage)?;
                let counter = self.counter.read()?;
                if sealed < counter {
                    self.freshness = Freshness::RolledBack { sealed, counter };
                    return Err(TaError::StateRolledBack { sealed, counter });
                }
                self.freshness = Freshness::Current {
                    version: sealed,
                    counter,
                };
                (sealed, counter)
            }
        };
        if counter < version {
            // Sealed ahead of the counter: a crash or an error came between the sealed write
            // and the advance. Catch up before serving; until it works, refuse.
            self.counter.advance_to(version)?;
            self.freshness = Freshness::Current {
                version,
                counter: version,
            };
        }
        Ok(version)
    }

    /// Write `ops` atomically together with the next state version, then advance the counter.
    ///
    /// The write is done once the sealed batch is stored: if only the counter advance fails,
    /// the state is ahead of the counter (accepted, see the module docs) and the next command
    /// catches the counter up before it runs.
    pub(crate) fn commit(&mut self, ops: &[WriteOp<'_>]) -> Result<(), TaError> {
        let version = self.ensure_fresh()?;
        let next = version.checked_add(1).ok_or(TaError::LimitReached)?;
        let encoded = next.to_be_bytes();
        let mut batch: Vec<WriteOp<'_>> = Vec::with_capacity(ops.len() + 1);
        batch.extend_from_slice(ops);
        batch.push(WriteOp::Put(STATE_VERSION_KEY, &encoded));
        self.storage.write(&batch)?;
        let counter = match self.counter.advance_to(next) {
            Ok(()) => next,
            Err(_) => version,
        };
        self.freshness = Freshness::Current {
            version: next,
            counter,
        };
        Ok(())
    }

    /// [`AcceptRestore`]: re-seal the state held with a version past the counter. When that state
    /// was rolled back, the JWT secrets are force-rotated in the same write: the restored state
    /// brings back credential generations that later refreshes had superseded, so every
    /// credential it could verify dies, and agents get new ones from their owners.
    pub(crate) fn accept_restore(&mut self, _: AcceptRestore) -> Result<RestoreAccepted, TaError> {
        let sealed = sealed_version(&mut self.storage)?;
        let counter = self.counter.read()?;
        let new_version = sealed
            .max(counter)
            .checked_add(1)
            .ok_or(TaError::LimitReached)?;
        let was_rolled_back = sealed < counter;
        let encoded = new_version.to_be_bytes();
        let rotated_store = if was_rolled_back {
            self.jwt = None; // read the restored store, not one cached before
            let now = self.clock.now();
            let random = self.random::<40>()?;
            let mut store = self.jwt_store()?.clone();
            store.rotate(
                kms_proto::RotationMode::Force,
                crate::jwt::new_secret(&random, now),
                now,
            )?;
            Some(crate::records::encode(&store)?)
        } else {
            None
        };
        let mut ops = Vec::with_capacity(2);
        ops.push(WriteOp::Put(STATE_VERSION_KEY, &encoded));
        if let Some(bytes) = &rotated_store {
            ops.push(WriteOp::Put(crate::records::JWT_STORE_KEY, bytes));
        }
        self.storage.write(&ops)?;
        // From here the state is current (ahead of the counter until the advance lands; if it
        // fails, the next command retries it).
        let known = match self.counter.advance_to(new_version) {
            Ok(()) => new_version,
            Err(_) => counter,
        };
        self.freshness = Freshness::Current {
            version: new_version,
            counter: known,
        };
        // Nothing read before the acceptance is served from memory afterwards.
        self.forget_cached_state();
        Ok(RestoreAccepted {
            sealed_version: sealed,
            counter,
            new_version,
            was_rolled_back,
            jwt_secrets_rotated: rotated_store.is_some(),
        })
    }

    fn forget_cached_state(&mut self) {
        self.wallets.clear();
        self.agents.clear();
        self.jwt = None;
        self.operator_address = None;
        self.keys = crate::keys::KeyCache::default();
        self.nonces = crate::passkey::Nonces::default();
    }
}
