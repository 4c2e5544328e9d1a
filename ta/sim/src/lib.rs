//! `ta-sim`: the key companion's Trusted Application as a host process.
//!
//! On machines without TrustZone the companion and `kms-admin` open sessions
//! to this process instead of to OP-TEE, like two client applications
//! opening sessions to one TA. It hosts ONE [`kms_ta::TaCore`] behind a
//! mutex — state such as pending nonces is shared by every session, as in a
//! single-instance, multi-session OP-TEE TA — and serves each connection of
//! its Unix socket as one session, on its own thread. The ECDSA of an agent
//! signature runs outside that mutex, in parallel (see [`server`] for how a
//! revoke still waits for the signatures checked before it).
//!
//! # Wire frames
//!
//! Defined once in [`kms_proto::wire`] (the host client's simulator backend
//! uses the same code):
//!
//! ```text
//! request:  [u32 BE length][u32 BE command id][request bytes]    length = 4 + len(request)
//! response: [u32 BE length][response bytes]                      length = len(response)
//! ```
//!
//! Requests and responses are the [`kms_proto::codec`] encodings, at most
//! [`kms_proto::MAX_MESSAGE_LEN`] bytes, so a whole frame is at most
//! `MAX_MESSAGE_LEN + 8` bytes. One call at a time per session. A frame with
//! an out-of-bounds length closes that session only; a request that does
//! not decode is answered by the TA with a typed error.
//!
//! # Files
//!
//! In the data directory (created 0700):
//!
//! * `sealed.key` — the sealing key, 32 random bytes, mode 0600 (a broader
//!   mode is refused at start);
//! * `sealed.bin` — the whole TA state, sealed with XChaCha20-Poly1305
//!   ([`sealed`]); a flipped or missing byte, or a wrong key, is refused at
//!   start with an error naming the file;
//! * `counter.bin` — the rollback counter ([`counter`]), sealed the same way:
//!   the newest state version written. A `sealed.bin` behind it (an older
//!   copy put back) is refused by the TA on every command that touches state
//!   (`StateRolledBack`) until `kms-admin accept-restore --yes`. It stands in
//!   for OP-TEE's RPMB counter: it catches an old `sealed.bin` restored on
//!   its own, not a host that rolls back both files;
//! * `ta-sim.lock` — held while running: one ta-sim per data directory;
//! * `ta.sock` — the default socket, mode 0600.
//!
//! Every write batch of the core re-seals the whole map and replaces
//! `sealed.bin` atomically (temp file, fsync, rename, fsync of the
//! directory), then advances `counter.bin` the same way; a crash in between
//! leaves the state ahead of the counter, which is accepted (the counter
//! catches up). If a directory fsync fails after its rename, ta-sim stops
//! (exit code 74) rather than let memory and disk disagree. The in-memory map
//! and the plaintext buffers are zeroized.
//!
//! # Process
//!
//! `ta-sim ready on <socket>` is printed to stderr once it listens. SIGTERM
//! or SIGINT: stop accepting, finish the calls in flight, remove the socket,
//! exit 0. A stale socket of a dead process is removed at start; a live
//! ta-sim on the socket makes the start fail. Logs (tracing, stderr) never
//! contain request or response bytes.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod counter;
pub mod datadir;
pub mod platform;
pub mod sealed;
pub mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kms_ta::clock::{MonotonicClock, TimeFloor};
use kms_ta::store::SnapshotStore;
use kms_ta::{Config, TaCore};
use thiserror::Error;

use crate::counter::CounterFile;
use crate::datadir::{DataDir, DataDirError};
use crate::platform::{OsEntropy, SystemClock};
use crate::sealed::{SealError, SealedFile};
pub use crate::server::Locking;
use crate::server::{Server, ServerError};

/// The core as the simulator runs it.
pub type SimCore =
    TaCore<SnapshotStore<SealedFile>, OsEntropy, MonotonicClock<SystemClock>, CounterFile>;

/// Name of the default socket in the data directory.
pub const DEFAULT_SOCKET: &str = "ta.sock";

/// What ta-sim prints on stderr, followed by a space and the socket path, once it listens
/// (`ta-sim ready on <socket>`): the line its launchers wait for.
pub const READY_LINE: &str = kms_proto::wire::READY_LINE;

/// Why ta-sim cannot start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The data directory.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The sealed store or its key.
    #[error(transparent)]
    Sealed(#[from] SealError),
    /// The socket.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Writing the first (empty) snapshot failed.
    #[error("cannot write the first sealed snapshot to {0}")]
    FirstWrite(PathBuf),
    /// Creating the rollback counter file failed.
    #[error("cannot create the rollback counter {path}: {source}")]
    CounterWrite {
        /// The counter file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Settings of one ta-sim.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The socket (default `<data-dir>/ta.sock`).
    pub socket: Option<PathBuf>,
    /// Serve `SeedWalletForTest`.
    pub enable_test_seed: bool,
    /// How sessions share the core (agent signatures outside the lock by default).
    pub locking: Locking,
}

/// A started simulator: data directory locked, state unsealed, socket bound.
#[derive(Debug)]
pub struct Started {
    /// The server; call [`Server::run`].
    pub server: Server<SimCore>,
    /// Keep alive while serving: holds the data directory lock.
    pub data_dir: DataDir,
}

/// Open the data directory, unseal the state, build the core and bind the
/// socket.
pub fn start(settings: &Settings) -> Result<Started, StartError> {
    let data_dir = DataDir::open(&settings.data_dir)?;
    let floor = Arc::new(TimeFloor::new());
    let opened = SealedFile::open(data_dir.path())?;
    let fresh = opened.plaintext.is_none();
    let store_path = opened.file.store_path().to_owned();
    let mut store = SnapshotStore::from_plaintext(
        opened.file,
        opened.plaintext.as_deref().map(|v| &v[..]),
        Arc::clone(&floor),
    )
    .map_err(|_| SealError::Tampered {
        path: store_path.clone(),
        reason: "its authenticated content does not decode",
    })?;
    drop(opened.plaintext);
    if fresh {
        store
            .flush()
            .map_err(|_| StartError::FirstWrite(store_path.clone()))?;
    }
    let mut counter = store.backend().open_counter()?;
    let version = kms_ta::sealed_version(&mut store).map_err(|_| SealError::Tampered {
        path: store_path.clone(),
        reason: "its state version does not decode",
    })?;
    if !counter.is_present() {
        if version > 0 {
            tracing::warn!(
                counter = %counter.path().display(),
                version,
                "the rollback counter file is missing: recreating it at the sealed state's \
                 version (a rollback of sealed.bin before this start cannot be detected)"
            );
        }
        counter
            .store(version)
            .map_err(|source| StartError::CounterWrite {
                path: counter.path().to_owned(),
                source,
            })?;
    }
    tracing::info!(store = %store_path.display(), objects = store.len(), fresh, version,
        counter = counter.value(), "sealed state loaded");
    if version < counter.value() {
        tracing::error!(
            store = %store_path.display(),
            version,
            counter = counter.value(),
            "the sealed state is OLDER than the rollback counter: an older copy of sealed.bin \
             was put back. The TA refuses every command that touches state \
             (StateRolledBack) until an operator accepts the restore with \
             `kms-admin accept-restore --yes` (agents revoked and credentials superseded since \
             that copy come back)"
        );
    }
    if settings.enable_test_seed {
        tracing::warn!("SeedWalletForTest is enabled: wallets can be created from known mnemonics (tests only)");
    }
    let core = TaCore::new(
        store,
        OsEntropy,
        MonotonicClock::new(SystemClock, floor),
        counter,
        Config {
            test_seed_enabled: settings.enable_test_seed,
        },
    );
    let socket = socket_path(settings);
    let server = Server::bind(&socket, core)?.with_locking(settings.locking);
    Ok(Started { server, data_dir })
}

/// The socket path of `settings`.
pub fn socket_path(settings: &Settings) -> PathBuf {
    settings
        .socket
        .clone()
        .unwrap_or_else(|| Path::new(&settings.data_dir).join(DEFAULT_SOCKET))
}
