//! The simulator's sealed storage: one AEAD-encrypted file.
//!
//! * `<data-dir>/sealed.key` — 32 random bytes (an XChaCha20-Poly1305 key),
//!   created with mode 0600 on the first start. A key file readable or
//!   writable by group or others is refused.
//! * `<data-dir>/sealed.bin` — the whole map ([`kms_ta::snapshot`]
//!   encoding), sealed:
//!
//!   ```text
//!   magic "KMSSIMSL" (8) ‖ format version 1 (1) ‖ nonce (24) ‖ ciphertext ‖ tag (16)
//!   ```
//!
//!   with a fresh random nonce for every write and the 9-byte header as
//!   associated data, so any flipped, missing or added byte, or a wrong key,
//!   fails authentication and the simulator refuses to start — it never
//!   starts empty over a store it cannot read.
//!
//! Every write seals the whole map into `sealed.bin.tmp` in the same
//! directory, fsyncs it, renames it over `sealed.bin` and fsyncs the
//! directory: a crash at any point leaves the previous `sealed.bin` (a
//! leftover temp file is deleted at the next start).
//!
//! If the directory fsync fails *after* the rename, the new `sealed.bin` is
//! in place but may not survive a power loss. Neither answer keeps memory and
//! disk in agreement: failing the write would undo it in memory while the
//! disk serves it from the next start on, and carrying on would build on a
//! file that may vanish (and, with Linux's fsync semantics, a retried fsync
//! proves nothing). So ta-sim stops at once (exit code [`EXIT_UNSYNCED`],
//! with an error log): the caller sees the call fail as "may have executed",
//! and the next start loads whatever the disk holds. The rollback counter
//! file ([`crate::counter`]) is written the same way, with the same rule.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use kms_proto::StorageFault;
use kms_ta::store::SnapshotBackend;
use thiserror::Error;
use zeroize::Zeroizing;

/// Name of the key file in the data directory.
pub const KEY_FILE: &str = "sealed.key";
/// Name of the sealed store in the data directory.
pub const STORE_FILE: &str = "sealed.bin";
/// Name of the temporary file a write goes through.
pub const TEMP_FILE: &str = "sealed.bin.tmp";
/// First bytes of `sealed.bin`.
pub const MAGIC: [u8; 8] = *b"KMSSIMSL";
/// Format version of `sealed.bin`.
pub const FORMAT_VERSION: u8 = 1;
/// Key length.
pub const KEY_LEN: usize = 32;

const HEADER_LEN: usize = MAGIC.len() + 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Environment variable of the crash hook (feature `fault-injection`).
#[cfg(feature = "fault-injection")]
pub const CRASH_BEFORE_RENAME_ENV: &str = "TA_SIM_CRASH_BEFORE_RENAME";

/// Environment variable of the directory-fsync fault hook (feature
/// `fault-injection`): `sealed` makes the directory fsync after the rename of
/// `sealed.bin` fail, `counter` the one after the rename of the counter file.
#[cfg(feature = "fault-injection")]
pub const FAIL_DIR_FSYNC_ENV: &str = "TA_SIM_FAIL_DIR_FSYNC";

/// Exit code of ta-sim when a directory fsync failed after a rename (see the
/// module docs): `EX_IOERR`.
pub const EXIT_UNSYNCED: i32 = 74;

/// Why the sealed store cannot be opened. Every message names the file.
#[derive(Debug, Error)]
pub enum SealError {
    /// The key file is accessible by group or others.
    #[error(
        "key file {path} has mode {mode:04o}; it must be readable and writable by its owner only \
         (run `chmod 600 {path}`)"
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file is not a regular file of [`KEY_LEN`] bytes.
    #[error("key file {path} is not a regular file of {KEY_LEN} bytes")]
    KeyMalformed {
        /// The key file.
        path: PathBuf,
    },
    /// The store exists but its key does not.
    #[error(
        "sealed store {store} exists but its key file {key} is missing: refusing to start \
         (restore the key file; without it the store cannot be decrypted)"
    )]
    KeyMissing {
        /// The store.
        store: PathBuf,
        /// The missing key file.
        key: PathBuf,
    },
    /// The key exists but the store does not.
    #[error(
        "sealed store {store} is missing but its key file {key} exists: refusing to start empty \
         (restore {store}; only if this data directory never held state, e.g. its first start \
         was interrupted, remove {key} to start afresh)"
    )]
    StoreMissing {
        /// The missing store.
        store: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Authentication or decoding failed.
    #[error(
        "sealed store {path} is corrupt or has been tampered with: {reason}; refusing to start"
    )]
    Tampered {
        /// The store.
        path: PathBuf,
        /// What failed.
        reason: &'static str,
    },
    /// A format version this build does not read.
    #[error("sealed store {path} has format version {version}; this ta-sim reads version {FORMAT_VERSION}")]
    UnsupportedVersion {
        /// The store.
        path: PathBuf,
        /// The version found.
        version: u8,
    },
    /// The OS random generator failed.
    #[error("the OS random number generator failed")]
    Random,
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> SealError + 'a {
    move |source| SealError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The sealed file backend of the simulator's store.
pub struct SealedFile {
    dir: PathBuf,
    store: PathBuf,
    temp: PathBuf,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for SealedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedFile")
            .field("store", &self.store)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// What [`SealedFile::open`] found.
pub struct Opened {
    /// The backend, ready for writes.
    pub file: SealedFile,
    /// The unsealed snapshot, or `None` on the first start (no state yet).
    pub plaintext: Option<Zeroizing<Vec<u8>>>,
}

impl SealedFile {
    /// Open the sealed store in `dir` (which must exist): load or create the
    /// key, delete a leftover temp file, and unseal `sealed.bin`.
    ///
    /// On the first start (neither file exists) a key is created and
    /// `plaintext` is `None`; the caller then writes the first (empty)
    /// snapshot.
    pub fn open(dir: &Path) -> Result<Opened, SealError> {
        let key_path = dir.join(KEY_FILE);
        let store = dir.join(STORE_FILE);
        let temp = dir.join(TEMP_FILE);
        match fs::remove_file(&temp) {
            Ok(()) => {
                tracing::warn!(path = %temp.display(), "removed a leftover temp file of an interrupted write; the previous state is kept")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot remove", &temp)(e)),
        }
        let store_exists = exists(&store)?;
        let (key, created) = match fs::symlink_metadata(&key_path) {
            Ok(_) => (read_key(&key_path)?, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if store_exists {
                    return Err(SealError::KeyMissing {
                        store,
                        key: key_path,
                    });
                }
                (create_key(dir, &key_path)?, true)
            }
            Err(e) => return Err(io_err("cannot inspect", &key_path)(e)),
        };
        let file = SealedFile {
            dir: dir.to_owned(),
            store,
            temp,
            key,
        };
        if !store_exists {
            if created {
                return Ok(Opened {
                    file,
                    plaintext: None,
                });
            }
            return Err(SealError::StoreMissing {
                store: file.store,
                key: key_path,
            });
        }
        let sealed = fs::read(&file.store).map_err(io_err("cannot read", &file.store))?;
        let plaintext = unseal(&file.key, &sealed).map_err(|e| e.at(&file.store))?;
        Ok(Opened {
            file,
            plaintext: Some(plaintext),
        })
    }

    /// The path of `sealed.bin`.
    pub fn store_path(&self) -> &Path {
        &self.store
    }

    fn write_sealed(&self, plaintext: &[u8]) -> io::Result<()> {
        let sealed = seal(&self.key, plaintext)?;
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
        #[cfg(feature = "fault-injection")]
        if std::env::var_os(CRASH_BEFORE_RENAME_ENV).is_some_and(|v| v == "1") {
            tracing::error!(
                "fault injection: aborting after writing the temp file, before the rename"
            );
            std::process::abort();
        }
        fs::rename(&self.temp, &self.store)?;
        // The new snapshot is in place: from here this write must not fail.
        sync_dir_after_rename(&self.dir, &self.store, "sealed");
        Ok(())
    }

    /// Open the rollback counter file beside `sealed.bin`, sealed with the
    /// same key (see [`crate::counter`]).
    pub fn open_counter(&self) -> Result<crate::counter::CounterFile, SealError> {
        crate::counter::CounterFile::open(&self.dir, &self.key)
    }
}

impl SnapshotBackend for SealedFile {
    fn load(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, StorageFault> {
        match fs::read(&self.store) {
            Ok(sealed) => unseal(&self.key, &sealed)
                .map(Some)
                .map_err(|_| StorageFault::Corrupt),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(_) => Err(StorageFault::Io),
        }
    }

    fn save(&mut self, plaintext: &[u8]) -> Result<(), StorageFault> {
        self.write_sealed(plaintext).map_err(|e| {
            tracing::error!(path = %self.store.display(), error = %e, "sealed write failed; the previous state is kept");
            if e.kind() == io::ErrorKind::StorageFull {
                StorageFault::Full
            } else {
                StorageFault::Io
            }
        })
    }
}

/// Fsync `dir` after `renamed` was renamed into it; if that fails, stop the
/// process (see the module docs). `hook` names the fault-injection point
/// (`sealed` or `counter`, see [`FAIL_DIR_FSYNC_ENV`]).
pub(crate) fn sync_dir_after_rename(dir: &Path, renamed: &Path, hook: &str) {
    if let Err(e) = sync_dir(dir, hook) {
        tracing::error!(
            file = %renamed.display(),
            dir = %dir.display(),
            error = %e,
            "the directory fsync failed after {} was renamed into place: the new file may not \
             survive a power loss, and memory cannot stay in agreement with the disk; stopping \
             (restart ta-sim: it loads what the disk holds)",
            renamed.display()
        );
        std::process::exit(EXIT_UNSYNCED);
    }
}

fn sync_dir(dir: &Path, _hook: &str) -> io::Result<()> {
    #[cfg(feature = "fault-injection")]
    if std::env::var_os(FAIL_DIR_FSYNC_ENV).is_some_and(|v| v == _hook) {
        tracing::error!(hook = _hook, "fault injection: failing the directory fsync");
        return Err(io::Error::other("fault injection: directory fsync failed"));
    }
    File::open(dir)?.sync_all()
}

fn exists(path: &Path) -> Result<bool, SealError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("cannot inspect", path)(e)),
    }
}

fn read_key(path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, SealError> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io_err("cannot open", path))?;
    let meta = f.metadata().map_err(io_err("cannot inspect", path))?;
    if !meta.is_file() || meta.len() != KEY_LEN as u64 {
        return Err(SealError::KeyMalformed {
            path: path.to_owned(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SealError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    f.read_exact(&mut key[..])
        .map_err(io_err("cannot read", path))?;
    Ok(key)
}

fn create_key(dir: &Path, path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, SealError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(&mut key[..]).map_err(|_| SealError::Random)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("cannot create", path))?;
    // The mode given to open() is reduced by the umask; make sure.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err("cannot set permissions of", path))?;
    f.write_all(&key[..])
        .map_err(io_err("cannot write", path))?;
    f.sync_all().map_err(io_err("cannot sync", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync", dir))?;
    tracing::info!(path = %path.display(), "created a new sealing key");
    Ok(key)
}

/// Why unsealing failed (the caller adds the path).
#[derive(Debug)]
pub enum UnsealError {
    /// Shorter than header + nonce + tag.
    Truncated,
    /// Not the magic.
    BadMagic,
    /// Another format version.
    Version(u8),
    /// AEAD authentication failed.
    Authentication,
}

impl UnsealError {
    pub(crate) fn at(self, path: &Path) -> SealError {
        let path = path.to_owned();
        let reason = match self {
            UnsealError::Version(version) => {
                return SealError::UnsupportedVersion { path, version }
            }
            UnsealError::Truncated => "the file is too short (truncated)",
            UnsealError::BadMagic => "the file does not start with the ta-sim header",
            UnsealError::Authentication => {
                "authentication failed (the file was modified, truncated or extended, \
                 or sealed.key is not the key it was sealed with)"
            }
        };
        SealError::Tampered { path, reason }
    }
}

fn cipher(key: &[u8; KEY_LEN]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.into())
}

/// Seal `plaintext`: header ‖ random nonce ‖ AEAD(plaintext, aad = header).
pub fn seal(key: &[u8; KEY_LEN], plaintext: &[u8]) -> io::Result<Vec<u8>> {
    seal_with(&MAGIC, key, plaintext)
}

/// [`seal`] with another magic (the header is the associated data, so a file
/// of one kind never unseals as another).
pub(crate) fn seal_with(
    magic: &[u8; 8],
    key: &[u8; KEY_LEN],
    plaintext: &[u8],
) -> io::Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)
        .map_err(|_| io::Error::other("the OS random number generator failed"))?;
    let mut header = [0u8; HEADER_LEN];
    header[..MAGIC.len()].copy_from_slice(magic);
    header[MAGIC.len()] = FORMAT_VERSION;
    let ct = cipher(key)
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &header,
            },
        )
        .map_err(|_| io::Error::other("sealing failed"))?;
    let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + ct.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Unseal bytes produced by [`seal`].
pub fn unseal(key: &[u8; KEY_LEN], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
    unseal_with(&MAGIC, key, sealed)
}

/// Unseal bytes produced by [`seal_with`] with `magic`.
pub(crate) fn unseal_with(
    magic: &[u8; 8],
    key: &[u8; KEY_LEN],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
    if sealed.len() < HEADER_LEN + NONCE_LEN + TAG_LEN {
        return Err(UnsealError::Truncated);
    }
    let (header, rest) = sealed.split_at(HEADER_LEN);
    if header[..MAGIC.len()] != magic[..] {
        return Err(UnsealError::BadMagic);
    }
    if header[MAGIC.len()] != FORMAT_VERSION {
        return Err(UnsealError::Version(header[MAGIC.len()]));
    }
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    cipher(key)
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: header,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| UnsealError::Authentication)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kms_ta::clock::TimeFloor;
    use kms_ta::store::SnapshotStore;
    use kms_ta::{SealedStorage, WriteOp};
    use std::sync::Arc;

    fn open_store(dir: &Path) -> Result<SnapshotStore<SealedFile>, SealError> {
        let opened = SealedFile::open(dir)?;
        let fresh = opened.plaintext.is_none();
        let mut s = SnapshotStore::from_plaintext(
            opened.file,
            opened.plaintext.as_deref().map(|v| &v[..]),
            Arc::new(TimeFloor::new()),
        )
        .expect("decodes");
        if fresh {
            s.flush().expect("first snapshot");
        }
        Ok(s)
    }

    #[test]
    fn seal_round_trips_with_fresh_nonces() {
        let key = [7u8; KEY_LEN];
        let a = seal(&key, b"hello").unwrap();
        let b = seal(&key, b"hello").unwrap();
        assert_ne!(a, b, "nonce must be fresh");
        assert_eq!(&unseal(&key, &a).unwrap()[..], b"hello");
        assert!(matches!(
            unseal(&[8u8; KEY_LEN], &a),
            Err(UnsealError::Authentication)
        ));
    }

    #[test]
    fn every_single_byte_flip_and_truncation_is_detected() {
        let key = [1u8; KEY_LEN];
        let sealed = seal(&key, b"some state").unwrap();
        for i in 0..sealed.len() {
            let mut b = sealed.clone();
            b[i] ^= 0x01;
            assert!(unseal(&key, &b).is_err(), "flip at {i}");
        }
        for cut in 0..sealed.len() {
            assert!(unseal(&key, &sealed[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(unseal(&key, &longer).is_err());
    }

    #[test]
    fn first_start_creates_a_0600_key_and_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let s = open_store(dir.path()).unwrap();
        assert!(s.is_empty());
        let key_mode = fs::metadata(dir.path().join(KEY_FILE)).unwrap().mode() & 0o777;
        assert_eq!(key_mode, 0o600);
        let store_mode = fs::metadata(dir.path().join(STORE_FILE)).unwrap().mode() & 0o777;
        assert_eq!(store_mode, 0o600);
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open_store(dir.path()).unwrap();
        s.write(&[
            WriteOp::Put("w/1", b"seed-one"),
            WriteOp::Put("w/2", b"two"),
        ])
        .unwrap();
        s.write(&[WriteOp::Delete("w/2")]).unwrap();
        drop(s);
        let mut s = open_store(dir.path()).unwrap();
        assert_eq!(s.read("w/1").unwrap(), Some(b"seed-one".to_vec()));
        assert_eq!(s.read("w/2").unwrap(), None);
        assert!(!dir.path().join(TEMP_FILE).exists());
        // The plaintext is not in the file.
        let raw = fs::read(dir.path().join(STORE_FILE)).unwrap();
        assert!(!raw.windows(8).any(|w| w == b"seed-one"));
    }

    #[test]
    fn replacement_is_atomic_a_leftover_temp_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open_store(dir.path()).unwrap();
        s.write(&[WriteOp::Put("k", b"committed")]).unwrap();
        drop(s);
        // A crash after writing the temp file, before the rename.
        fs::write(dir.path().join(TEMP_FILE), b"half-written garbage").unwrap();
        let mut s = open_store(dir.path()).unwrap();
        assert_eq!(s.read("k").unwrap(), Some(b"committed".to_vec()));
        assert!(!dir.path().join(TEMP_FILE).exists());
    }

    #[test]
    fn a_failed_write_keeps_the_previous_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open_store(dir.path()).unwrap();
        s.write(&[WriteOp::Put("k", b"v1")]).unwrap();
        // Make the rename fail: a directory where the temp file goes.
        fs::create_dir(dir.path().join(TEMP_FILE)).unwrap();
        assert_eq!(s.write(&[WriteOp::Put("k", b"v2")]), Err(StorageFault::Io));
        assert_eq!(s.read("k").unwrap(), Some(b"v1".to_vec()));
        fs::remove_dir(dir.path().join(TEMP_FILE)).unwrap();
        drop(s);
        let mut s = open_store(dir.path()).unwrap();
        assert_eq!(s.read("k").unwrap(), Some(b"v1".to_vec()));
    }

    #[test]
    fn tampering_a_wrong_key_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open_store(dir.path()).unwrap();
        s.write(&[WriteOp::Put("k", b"v")]).unwrap();
        drop(s);
        let store = dir.path().join(STORE_FILE);
        let good = fs::read(&store).unwrap();

        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x80;
        fs::write(&store, &flipped).unwrap();
        assert!(matches!(
            open_store(dir.path()),
            Err(SealError::Tampered { .. })
        ));

        fs::write(&store, &good[..good.len() - 1]).unwrap();
        assert!(matches!(
            open_store(dir.path()),
            Err(SealError::Tampered { .. })
        ));

        fs::write(&store, &good[..5]).unwrap();
        assert!(matches!(
            open_store(dir.path()),
            Err(SealError::Tampered { .. })
        ));

        fs::write(&store, &good).unwrap();
        let key = dir.path().join(KEY_FILE);
        let good_key = fs::read(&key).unwrap();
        fs::write(&key, [0u8; KEY_LEN]).unwrap();
        let err = open_store(dir.path()).unwrap_err();
        assert!(matches!(err, SealError::Tampered { .. }));
        assert!(err.to_string().contains(STORE_FILE));

        fs::write(&key, &good_key).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = open_store(dir.path()).unwrap_err();
        assert!(matches!(err, SealError::KeyPermissions { mode: 0o644, .. }));
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();

        fs::remove_file(&store).unwrap();
        assert!(matches!(
            open_store(dir.path()),
            Err(SealError::StoreMissing { .. })
        ));
        fs::write(&store, &good).unwrap();
        fs::remove_file(&key).unwrap();
        assert!(matches!(
            open_store(dir.path()),
            Err(SealError::KeyMissing { .. })
        ));
    }
}
