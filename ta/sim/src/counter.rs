//! The simulator's rollback counter: a file beside `sealed.bin`, standing in for OP-TEE's RPMB.
//!
//! The TA core checks the version its sealed state carries against a monotonic counter kept
//! outside that state ([`kms_ta::MonotonicCounter`]; see the core's rollback docs): a state
//! behind the counter is refused with `StateRolledBack` until an operator accepts the restore
//! (`kms-admin accept-restore --yes`). On OP-TEE the counter is a persistent object in RPMB,
//! whose replay protection is in the eMMC hardware. Here it is
//!
//! * `<data-dir>/counter.bin` — the counter (`u64`, big-endian), sealed like `sealed.bin` with
//!   the same key and its own header (magic `KMSSIMCT`), so an edited, truncated or swapped
//!   file is refused at start;
//!
//! written like `sealed.bin`: `counter.bin.tmp`, fsync, rename, fsync of the directory (a
//! directory fsync failing after the rename stops ta-sim, see [`crate::sealed`]).
//!
//! **A stand-in, not a defence against the host.** The file lives on the host's disk next to
//! the sealing key: it catches an older `sealed.bin` put back on its own (a restore from a
//! backup, a copy from another moment), which is what it is for, but someone who can write the
//! data directory can put an old counter back with it, or forge one with the key. Then the TA
//! cannot tell; the companion still can when its database is ahead of the TA (it refuses to
//! serve, `ta_rolled_back`). RPMB closes that gap on real hardware.
//!
//! A missing counter file reads as 0 (the first start, or a data directory from before rollback
//! detection): ta-sim then recreates it at the sealed state's version, with a warning when that
//! is above 0 (a rollback before that start cannot be detected).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use kms_proto::StorageFault;
use kms_ta::MonotonicCounter;
use zeroize::Zeroizing;

use crate::sealed::{io_err, seal_with, sync_dir_after_rename, unseal_with, SealError, KEY_LEN};

/// Name of the counter file in the data directory.
pub const COUNTER_FILE: &str = "counter.bin";
/// Name of the temporary file a counter write goes through.
pub const COUNTER_TEMP_FILE: &str = "counter.bin.tmp";
/// First bytes of `counter.bin`.
pub const COUNTER_MAGIC: [u8; 8] = *b"KMSSIMCT";

/// Environment variable of the crash hook between the sealed write and the counter advance
/// (feature `fault-injection`): `1` aborts the process when the counter is about to be advanced.
#[cfg(feature = "fault-injection")]
pub const CRASH_BEFORE_COUNTER_ENV: &str = "TA_SIM_CRASH_BEFORE_COUNTER";

/// The counter file (see the module docs).
pub struct CounterFile {
    dir: PathBuf,
    path: PathBuf,
    temp: PathBuf,
    key: Zeroizing<[u8; KEY_LEN]>,
    value: u64,
    present: bool,
}

impl std::fmt::Debug for CounterFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterFile")
            .field("path", &self.path)
            .field("value", &self.value)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl CounterFile {
    /// Open the counter in `dir` sealed with `key`: delete a leftover temp file, read and
    /// unseal `counter.bin` (0 when it does not exist, see [`CounterFile::is_present`]).
    pub fn open(dir: &Path, key: &[u8; KEY_LEN]) -> Result<Self, SealError> {
        let path = dir.join(COUNTER_FILE);
        let temp = dir.join(COUNTER_TEMP_FILE);
        match fs::remove_file(&temp) {
            Ok(()) => tracing::warn!(
                path = %temp.display(),
                "removed a leftover temp file of an interrupted counter write"
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot remove", &temp)(e)),
        }
        let (value, present) = match fs::read(&path) {
            Ok(sealed) => {
                let plain = unseal_with(&COUNTER_MAGIC, key, &sealed).map_err(|e| e.at(&path))?;
                let b: [u8; 8] = plain[..].try_into().map_err(|_| SealError::Tampered {
                    path: path.clone(),
                    reason: "its authenticated content is not a counter",
                })?;
                (u64::from_be_bytes(b), true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, false),
            Err(e) => return Err(io_err("cannot read", &path)(e)),
        };
        Ok(Self {
            dir: dir.to_owned(),
            path,
            temp,
            key: Zeroizing::new(*key),
            value,
            present,
        })
    }

    /// The counter's value.
    pub fn value(&self) -> u64 {
        self.value
    }

    /// Whether `counter.bin` exists.
    pub fn is_present(&self) -> bool {
        self.present
    }

    /// The path of `counter.bin`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `counter.bin` with `value` (at least the current value), also when it is missing.
    pub fn store(&mut self, value: u64) -> io::Result<()> {
        let value = value.max(self.value);
        let sealed = seal_with(&COUNTER_MAGIC, &self.key, &value.to_be_bytes())?;
        {
            let mut tmp = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&self.temp)?;
            tmp.write_all(&sealed)?;
            tmp.sync_all()?;
        }
        fs::rename(&self.temp, &self.path)?;
        // The new value is in place: from here this write must not fail.
        self.value = value;
        self.present = true;
        sync_dir_after_rename(&self.dir, &self.path, "counter");
        Ok(())
    }
}

impl MonotonicCounter for CounterFile {
    fn read(&mut self) -> Result<u64, StorageFault> {
        Ok(self.value)
    }

    fn advance_to(&mut self, value: u64) -> Result<(), StorageFault> {
        if value <= self.value && self.present {
            return Ok(());
        }
        #[cfg(feature = "fault-injection")]
        if std::env::var_os(CRASH_BEFORE_COUNTER_ENV).is_some_and(|v| v == "1") {
            tracing::error!(
                "fault injection: aborting after the sealed write, before the counter advance"
            );
            std::process::abort();
        }
        self.store(value).map_err(|e| {
            tracing::error!(path = %self.path.display(), error = %e,
                "rollback counter write failed; the TA retries it before its next command");
            if e.kind() == io::ErrorKind::StorageFull {
                StorageFault::Full
            } else {
                StorageFault::Io
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_round_trips_only_grows_and_refuses_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let key = [3u8; KEY_LEN];
        let mut c = CounterFile::open(dir.path(), &key).unwrap();
        assert_eq!((c.value(), c.is_present()), (0, false));
        c.advance_to(5).unwrap();
        c.advance_to(2).unwrap();
        assert_eq!(c.read().unwrap(), 5);
        let c = CounterFile::open(dir.path(), &key).unwrap();
        assert_eq!((c.value(), c.is_present()), (5, true));
        assert!(!dir.path().join(COUNTER_TEMP_FILE).exists());

        // Another key, a flipped byte, a sealed.bin in its place: refused.
        assert!(matches!(
            CounterFile::open(dir.path(), &[4u8; KEY_LEN]),
            Err(SealError::Tampered { .. })
        ));
        let path = dir.path().join(COUNTER_FILE);
        let good = fs::read(&path).unwrap();
        let mut flipped = good.clone();
        flipped[good.len() - 3] ^= 1;
        fs::write(&path, &flipped).unwrap();
        assert!(matches!(
            CounterFile::open(dir.path(), &key),
            Err(SealError::Tampered { .. })
        ));
        fs::write(
            &path,
            crate::sealed::seal(&key, &5u64.to_be_bytes()).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            CounterFile::open(dir.path(), &key),
            Err(SealError::Tampered { .. })
        ));

        // A leftover temp file of an interrupted write is ignored and removed.
        fs::write(&path, &good).unwrap();
        fs::write(dir.path().join(COUNTER_TEMP_FILE), b"half").unwrap();
        assert_eq!(CounterFile::open(dir.path(), &key).unwrap().value(), 5);
        assert!(!dir.path().join(COUNTER_TEMP_FILE).exists());
    }

    #[test]
    fn a_failed_counter_write_leaves_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let key = [3u8; KEY_LEN];
        let mut c = CounterFile::open(dir.path(), &key).unwrap();
        c.advance_to(1).unwrap();
        // A directory where the temp file goes: the write fails before the rename.
        fs::create_dir(dir.path().join(COUNTER_TEMP_FILE)).unwrap();
        assert_eq!(c.advance_to(2), Err(StorageFault::Io));
        assert_eq!(c.read().unwrap(), 1);
        fs::remove_dir(dir.path().join(COUNTER_TEMP_FILE)).unwrap();
        assert_eq!(CounterFile::open(dir.path(), &key).unwrap().value(), 1);
    }
}
