//! [`SealedStorage`] as one sealed snapshot of the whole map.
//!
//! The map is held in memory (decoded once, when the TA starts). Every
//! [`SealedStorage::write`] batch is applied to the map, the whole map is
//! re-encoded ([`crate::snapshot`]) and handed to the [`SnapshotBackend`],
//! which replaces the stored snapshot atomically. If that fails, the batch is
//! undone in memory too, so memory and storage never disagree: after a crash
//! or an error either the whole batch is visible or none of it.
//!
//! The same store runs in the OP-TEE TA (backend: one persistent object,
//! replaced with `TEE_DATA_FLAG_OVERWRITE`) and in the simulator (backend:
//! one AEAD-sealed file, replaced by rename).

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::{SealedStorage, WriteOp};
use kms_proto::StorageFault;
use zeroize::Zeroizing;

use crate::clock::TimeFloor;
use crate::snapshot::{self, Entries};

/// Largest snapshot the store writes; a batch that would exceed it fails
/// with [`StorageFault::Full`] and changes nothing.
pub const MAX_SNAPSHOT_LEN: usize = 1024 * 1024;

/// Where the sealed snapshot lives.
pub trait SnapshotBackend {
    /// The stored snapshot's plaintext, or `None` if none was ever stored.
    fn load(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, StorageFault>;
    /// Replace the stored snapshot with `plaintext`, atomically: after a
    /// crash at any point the previous snapshot or the new one is stored,
    /// never a mix or nothing.
    ///
    /// `Err` must mean that the previous snapshot is still the stored one:
    /// the store then undoes the batch in memory. Once the new snapshot is in
    /// place a backend returns `Ok` (e.g. OP-TEE's marker object failing
    /// afterwards), or, when it cannot tell whether the new snapshot will
    /// survive (the simulator's directory fsync failing after the rename),
    /// stops the TA rather than let memory and storage disagree.
    fn save(&mut self, plaintext: &[u8]) -> Result<(), StorageFault>;
}

/// A [`SealedStorage`] over a [`SnapshotBackend`].
pub struct SnapshotStore<B> {
    backend: B,
    entries: Entries,
    floor: Arc<TimeFloor>,
}

impl<B> core::fmt::Debug for SnapshotStore<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("objects", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl<B: SnapshotBackend> SnapshotStore<B> {
    /// Load the snapshot from `backend` (empty if none was stored). A
    /// snapshot that does not decode is [`StorageFault::Corrupt`]. The
    /// snapshot's time floor raises `floor`.
    pub fn open(mut backend: B, floor: Arc<TimeFloor>) -> Result<Self, StorageFault> {
        let plaintext = backend.load()?;
        Self::from_plaintext(backend, plaintext.as_deref().map(|v| &v[..]), floor)
    }

    /// Like [`SnapshotStore::open`] with the snapshot already loaded (or
    /// `None` for a fresh store).
    pub fn from_plaintext(
        backend: B,
        plaintext: Option<&[u8]>,
        floor: Arc<TimeFloor>,
    ) -> Result<Self, StorageFault> {
        let snap = match plaintext {
            Some(bytes) => snapshot::decode(bytes)?,
            None => snapshot::Snapshot::default(),
        };
        floor.raise(snap.time_floor);
        Ok(Self {
            backend,
            entries: snap.entries,
            floor,
        })
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no objects.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Store the current map (e.g. to create the first snapshot).
    pub fn flush(&mut self) -> Result<(), StorageFault> {
        let bytes = snapshot::encode(self.floor.get(), &self.entries).ok_or(StorageFault::Full)?;
        if bytes.len() > MAX_SNAPSHOT_LEN {
            return Err(StorageFault::Full);
        }
        self.backend.save(&bytes)
    }
}

impl<B: SnapshotBackend> SealedStorage for SnapshotStore<B> {
    fn read(&mut self, key: &str) -> Result<Option<Vec<u8>>, StorageFault> {
        Ok(self.entries.get(key).map(|v| v.to_vec()))
    }

    fn write(&mut self, ops: &[WriteOp<'_>]) -> Result<(), StorageFault> {
        // Apply in place, remembering what to restore on failure.
        let mut undo: Vec<(String, Option<Zeroizing<Vec<u8>>>)> = Vec::with_capacity(ops.len());
        for op in ops {
            match *op {
                WriteOp::Put(k, v) => {
                    if k.len() > snapshot::MAX_KEY_LEN {
                        rollback(&mut self.entries, undo);
                        return Err(StorageFault::Full);
                    }
                    let old = self
                        .entries
                        .insert(String::from(k), Zeroizing::new(v.to_vec()));
                    undo.push((String::from(k), old));
                }
                WriteOp::Delete(k) => {
                    let old = self.entries.remove(k);
                    undo.push((String::from(k), old));
                }
            }
        }
        match self.flush() {
            Ok(()) => Ok(()),
            Err(e) => {
                rollback(&mut self.entries, undo);
                Err(e)
            }
        }
    }
}

fn rollback(entries: &mut Entries, undo: Vec<(String, Option<Zeroizing<Vec<u8>>>)>) {
    for (k, old) in undo.into_iter().rev() {
        match old {
            Some(v) => {
                entries.insert(k, v);
            }
            None => {
                entries.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::rc::Rc;
    use alloc::vec;
    use core::cell::RefCell;

    /// An in-memory backend that can be told to fail.
    #[derive(Clone, Default)]
    struct Mem {
        stored: Rc<RefCell<Option<Vec<u8>>>>,
        fail: Rc<RefCell<Option<StorageFault>>>,
    }

    impl SnapshotBackend for Mem {
        fn load(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, StorageFault> {
            Ok(self.stored.borrow().clone().map(Zeroizing::new))
        }
        fn save(&mut self, plaintext: &[u8]) -> Result<(), StorageFault> {
            if let Some(f) = *self.fail.borrow() {
                return Err(f);
            }
            *self.stored.borrow_mut() = Some(plaintext.to_vec());
            Ok(())
        }
    }

    fn floor() -> Arc<TimeFloor> {
        Arc::new(TimeFloor::new())
    }

    #[test]
    fn writes_persist_and_reload() {
        let mem = Mem::default();
        let mut s = SnapshotStore::open(mem.clone(), floor()).unwrap();
        assert!(s.is_empty());
        s.write(&[WriteOp::Put("a", b"1"), WriteOp::Put("b", b"2")])
            .unwrap();
        s.write(&[WriteOp::Delete("a"), WriteOp::Delete("zz")])
            .unwrap();
        let mut again = SnapshotStore::open(mem, floor()).unwrap();
        assert_eq!(again.read("a").unwrap(), None);
        assert_eq!(again.read("b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn a_failed_batch_changes_nothing() {
        let mem = Mem::default();
        let mut s = SnapshotStore::open(mem.clone(), floor()).unwrap();
        s.write(&[WriteOp::Put("keep", b"old"), WriteOp::Put("gone", b"x")])
            .unwrap();
        *mem.fail.borrow_mut() = Some(StorageFault::Io);
        assert_eq!(
            s.write(&[
                WriteOp::Put("keep", b"new"),
                WriteOp::Delete("gone"),
                WriteOp::Put("fresh", b"y"),
                WriteOp::Put("keep", b"newer"),
            ]),
            Err(StorageFault::Io)
        );
        assert_eq!(s.read("keep").unwrap(), Some(b"old".to_vec()));
        assert_eq!(s.read("gone").unwrap(), Some(b"x".to_vec()));
        assert_eq!(s.read("fresh").unwrap(), None);
        *mem.fail.borrow_mut() = None;
        let mut again = SnapshotStore::open(mem, floor()).unwrap();
        assert_eq!(again.read("keep").unwrap(), Some(b"old".to_vec()));
    }

    #[test]
    fn oversize_batches_are_full_and_undone() {
        let mem = Mem::default();
        let mut s = SnapshotStore::open(mem, floor()).unwrap();
        let big = vec![0u8; MAX_SNAPSHOT_LEN];
        assert_eq!(
            s.write(&[WriteOp::Put("big", &big)]),
            Err(StorageFault::Full)
        );
        assert!(s.is_empty());
    }

    #[test]
    fn corrupt_snapshots_are_refused() {
        let mem = Mem::default();
        *mem.stored.borrow_mut() = Some(b"garbage".to_vec());
        assert_eq!(
            SnapshotStore::open(mem, floor()).unwrap_err(),
            StorageFault::Corrupt
        );
    }

    #[test]
    fn the_time_floor_is_stored_and_restored() {
        let mem = Mem::default();
        let f = floor();
        f.raise(1_000);
        let mut s = SnapshotStore::open(mem.clone(), f).unwrap();
        s.write(&[WriteOp::Put("k", b"v")]).unwrap();
        let f2 = floor();
        let _again = SnapshotStore::open(mem, f2.clone()).unwrap();
        assert_eq!(f2.get(), 1_000);
    }
}
