//! The OP-TEE side: storage, randomness, time and the entry-point bodies.
//!
//! The `#[ta_*]` entry points themselves live in the TA binary
//! (`src/main.rs`) and call [`create`], [`destroy`] and [`invoke`] here.

use alloc::sync::Arc;
use alloc::vec::Vec;

use kms_optee_abi as abi;
use kms_proto::StorageFault;
use kms_ta::{Config, Entropy, EntropyError, MonotonicCounter, TaCore};
use optee_utee::{
    DataFlag, ErrorKind, ObjectStorageConstants, ParameterMemref, ParameterMemrefInput,
    ParameterMemrefOutput, ParameterMemrefRead, ParameterMemrefWrite, ParameterNone,
    ParameterValueOutput, ParameterValueWrite, PersistentObject, Random, Time,
};
use zeroize::Zeroizing;

use crate::exclusive::Exclusive;
use crate::login;
use kms_ta::clock::{MonotonicClock, TimeFloor, TimeSource};
use kms_ta::store::{SnapshotBackend, SnapshotStore};

/// Id of the persistent object holding the sealed snapshot.
pub const STATE_OBJECT_ID: &[u8] = b"kms-ta/state";
/// Id of the marker object created after the first snapshot: if it exists
/// and the state object does not, the state was deleted and the TA refuses
/// to start empty.
pub const MARKER_OBJECT_ID: &[u8] = b"kms-ta/initialised";

/// Id of the rollback counter's persistent object, always in RPMB
/// (`TEE_STORAGE_PRIVATE_RPMB`), whatever storage holds the state (see [`RpmbCounter`]).
pub const COUNTER_OBJECT_ID: &[u8] = b"kms-ta/rollback-counter";

/// The TEE storage used: `TEE_STORAGE_PRIVATE` (OP-TEE's default: REE FS,
/// or RPMB when OP-TEE is built that way), or explicitly
/// `TEE_STORAGE_PRIVATE_RPMB` with the `storage-rpmb` feature.
fn storage() -> ObjectStorageConstants {
    #[cfg(feature = "storage-rpmb")]
    {
        ObjectStorageConstants::PrivateRpmb
    }
    #[cfg(not(feature = "storage-rpmb"))]
    {
        ObjectStorageConstants::Private
    }
}

fn fault(e: &optee_utee::Error) -> StorageFault {
    match e.kind() {
        ErrorKind::CorruptObject | ErrorKind::CorruptObject2 => StorageFault::Corrupt,
        ErrorKind::StorageNoSpace => StorageFault::Full,
        _ => StorageFault::Io,
    }
}

fn exists(id: &[u8]) -> Result<bool, StorageFault> {
    match PersistentObject::open(storage(), id, DataFlag::ACCESS_READ | DataFlag::SHARE_READ) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::ItemNotFound => Ok(false),
        Err(e) => Err(fault(&e)),
    }
}

/// The snapshot in one OP-TEE persistent object.
///
/// OP-TEE seals the object itself (encrypted and authenticated with a key
/// derived from the hardware unique key and the TA's UUID). Replacing it
/// uses `TEE_CreatePersistentObject` with `TEE_DATA_FLAG_OVERWRITE` and the
/// whole snapshot as initial data, which the GlobalPlatform API defines as
/// atomic ("the object is deleted and re-created as an atomic operation:
/// the TA sees either the old object or the new one"); OP-TEE's REE FS
/// implements it by writing the new object and then committing its
/// directory file, so a crash leaves the previous snapshot. No journal is
/// needed because there is only ever one object to replace.
#[derive(Debug, Default)]
pub struct PersistentObjectBackend {
    marker_present: bool,
}

impl SnapshotBackend for PersistentObjectBackend {
    fn load(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, StorageFault> {
        self.marker_present = exists(MARKER_OBJECT_ID)?;
        let flags = DataFlag::ACCESS_READ | DataFlag::SHARE_READ;
        match PersistentObject::open(storage(), STATE_OBJECT_ID, flags) {
            Ok(mut obj) => obj
                .read_remaining_to_vec()
                .map(|v| Some(Zeroizing::new(v)))
                .map_err(|e| fault(&e)),
            // Never start empty over deleted state.
            Err(e) if e.kind() == ErrorKind::ItemNotFound && self.marker_present => {
                Err(StorageFault::Corrupt)
            }
            Err(e) if e.kind() == ErrorKind::ItemNotFound => Ok(None),
            Err(e) => Err(fault(&e)),
        }
    }

    fn save(&mut self, plaintext: &[u8]) -> Result<(), StorageFault> {
        let flags = || {
            DataFlag::ACCESS_READ
                | DataFlag::ACCESS_WRITE
                | DataFlag::ACCESS_WRITE_META
                | DataFlag::OVERWRITE
        };
        PersistentObject::create(storage(), STATE_OBJECT_ID, flags(), None, plaintext)
            .map_err(|e| fault(&e))?;
        // The new snapshot is stored: from here this save must not fail (an error makes the
        // store undo the batch in memory, which would then disagree with storage).
        if !self.marker_present {
            // After the state object, so a crash in between leaves a state
            // without marker (fine), never a marker without state. If it
            // fails, the next save tries again.
            if PersistentObject::create(storage(), MARKER_OBJECT_ID, flags(), None, &[]).is_ok() {
                self.marker_present = true;
            }
        }
        Ok(())
    }
}

/// The rollback counter ([`MonotonicCounter`]) in an RPMB persistent object.
///
/// RPMB (the eMMC's Replay Protected Memory Block) authenticates every write with a key
/// programmed into the device and a write counter kept by the eMMC itself, so the normal world
/// can neither forge it nor put an older content back, unlike files of OP-TEE's REE FS. The
/// object `kms-ta/rollback-counter` holds the counter as 8 bytes, big-endian, and is replaced
/// with `TEE_DATA_FLAG_OVERWRITE` (atomic: the old value or the new one). A missing object
/// reads as 0 (the first start, or a TA from before rollback detection).
#[derive(Debug, Default)]
pub struct RpmbCounter {
    /// The value last read or written (`None` until first read).
    cached: Option<u64>,
}

impl MonotonicCounter for RpmbCounter {
    fn read(&mut self) -> Result<u64, StorageFault> {
        if let Some(v) = self.cached {
            return Ok(v);
        }
        let flags = DataFlag::ACCESS_READ | DataFlag::SHARE_READ;
        let value = match PersistentObject::open(
            ObjectStorageConstants::PrivateRpmb,
            COUNTER_OBJECT_ID,
            flags,
        ) {
            Ok(mut obj) => {
                let bytes = obj.read_remaining_to_vec().map_err(|e| fault(&e))?;
                let b: [u8; 8] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StorageFault::Corrupt)?;
                u64::from_be_bytes(b)
            }
            Err(e) if e.kind() == ErrorKind::ItemNotFound => 0,
            Err(e) => return Err(fault(&e)),
        };
        self.cached = Some(value);
        Ok(value)
    }

    fn advance_to(&mut self, value: u64) -> Result<(), StorageFault> {
        if self.read()? >= value {
            return Ok(());
        }
        let flags = DataFlag::ACCESS_READ
            | DataFlag::ACCESS_WRITE
            | DataFlag::ACCESS_WRITE_META
            | DataFlag::OVERWRITE;
        match PersistentObject::create(
            ObjectStorageConstants::PrivateRpmb,
            COUNTER_OBJECT_ID,
            flags,
            None,
            &value.to_be_bytes(),
        ) {
            Ok(_) => {
                self.cached = Some(value);
                Ok(())
            }
            Err(e) => {
                // The write may or may not have landed: read it again next time.
                self.cached = None;
                Err(fault(&e))
            }
        }
    }
}

/// [`Entropy`] from `TEE_GenerateRandom` (the TEE's CSPRNG; it panics the
/// TA rather than return weak bytes).
#[derive(Debug, Default)]
pub struct TeeRandom;

impl Entropy for TeeRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        Random::generate(buf);
        Ok(())
    }
}

/// REE time (`TEE_GetREETime`): host-controlled; used through
/// [`MonotonicClock`] so it never goes backwards (see [`kms_ta::clock`]).
#[derive(Debug, Default)]
pub struct ReeTime;

impl TimeSource for ReeTime {
    fn unix_seconds(&self) -> Option<u64> {
        let mut t = Time::new();
        t.ree_time();
        Some(u64::from(t.seconds))
    }
}

/// The core as the OP-TEE TA runs it.
pub type OpteeCore =
    TaCore<SnapshotStore<PersistentObjectBackend>, TeeRandom, MonotonicClock<ReeTime>, RpmbCounter>;

/// The ONE core of this single-instance TA, shared by all sessions.
static CORE: Exclusive<OpteeCore> = Exclusive::new();

fn storage_error(f: StorageFault) -> optee_utee::Error {
    match f {
        StorageFault::Corrupt => ErrorKind::CorruptObject.into(),
        StorageFault::Full => ErrorKind::StorageNoSpace.into(),
        StorageFault::Io => ErrorKind::StorageNotAvailable.into(),
    }
}

/// `TA_CreateEntryPoint`: load the sealed state and build the core. A
/// corrupt or deleted state fails the TA's creation (and so every session
/// open) with `TEE_ERROR_CORRUPT_OBJECT`; the TA never starts empty over it.
pub fn create() -> optee_utee::Result<()> {
    let floor = Arc::new(TimeFloor::new());
    let store = SnapshotStore::open(PersistentObjectBackend::default(), floor.clone())
        .map_err(storage_error)?;
    let core = TaCore::new(
        store,
        TeeRandom,
        MonotonicClock::new(ReeTime, floor),
        RpmbCounter::default(),
        // The test seeding command is never served by an OP-TEE TA (and the
        // build refuses the `test-seed` feature, see lib.rs).
        Config {
            test_seed_enabled: false,
        },
    );
    CORE.with(|slot| *slot = Some(core))
        .ok_or_else(|| optee_utee::Error::from(ErrorKind::Busy))
}

/// `TA_OpenSessionEntryPoint`: admit only the client identity this TA was built for
/// ([`crate::login::CLIENT_LOGIN`], from `KMS_TA_CLIENT_LOGIN`); every other session open is
/// refused with `TEE_ERROR_ACCESS_DENIED` before it can send a command (see [`crate::login`]).
pub fn open_session() -> optee_utee::Result<()> {
    use alloc::string::ToString;
    use optee_utee::property::{ClientIdentity, PropertyKey};

    let identity = ClientIdentity.get()?;
    let client = login::Client {
        login: u32::from(identity.login_type()),
        uuid: login::parse_uuid(&identity.uuid().to_string()).ok_or(ErrorKind::AccessDenied)?,
    };
    login::admit(login::CLIENT_LOGIN, &client).map_err(|refusal| {
        optee_utee::trace_println!("[kms-ta] session refused: {:?}", refusal);
        optee_utee::Error::from(ErrorKind::AccessDenied)
    })
}

/// `TA_DestroyEntryPoint`: drop the core (its secrets are zeroized on drop).
pub fn destroy() {
    let _ = CORE.with(|slot| *slot = None);
}

/// The parameters of every command (see [`kms_optee_abi`]).
pub type InvokeParams<'a> = (
    ParameterMemrefInput<'a>,
    ParameterMemrefOutput<'a>,
    ParameterValueOutput<'a>,
    ParameterNone,
);

/// `TA_InvokeCommandEntryPoint`: run command `cmd` on the request in
/// parameter 0, write the response to parameter 1 and its length (and the
/// layout version) to parameter 2.
pub fn invoke(cmd: u32, params: &mut InvokeParams<'_>) -> optee_utee::Result<()> {
    let (request, response, result, _) = params;
    let len = request.buffer_len();
    if len == 0 || len > kms_proto::MAX_MESSAGE_LEN {
        return Err(ErrorKind::BadParameters.into());
    }
    // Copy out of shared memory first: the host can change it at any time.
    let input = Zeroizing::new(request.read_to_vec());
    let output = CORE
        .with(|slot| {
            slot.as_mut()
                .map(|core| Zeroizing::new(core.invoke(cmd, &input)))
        })
        .ok_or(ErrorKind::Busy)?
        .ok_or(ErrorKind::BadState)?;
    let n = u32::try_from(output.len()).map_err(|_| ErrorKind::ShortBuffer)?;
    result.set_a(n);
    result.set_b(abi::LAYOUT_VERSION);
    if output.len() > response.buffer_len() || output.len() > abi::RESPONSE_CAPACITY {
        return Err(ErrorKind::ShortBuffer.into());
    }
    response.set_output(&output[..])
}
