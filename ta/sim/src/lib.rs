//! `ta-sim`: the key companion's Trusted Application as a host process.
//!
//! On machines without TrustZone the companion and `kms-admin` open sessions
//! to this process instead of to OP-TEE, like two client applications
//! opening sessions to one TA. It hosts ONE [`kms_ta::TaCore`] behind a
//! mutex — state such as pending nonces is shared by every session, as in a
//! single-instance, multi-session OP-TEE TA — and serves each connection of
//! its Unix socket as one session, on its own thread.
//!
//! # Wire frames
//!
//! Defined once in [`kms_tee_client::wire`] (the client backend uses the
//! same code):
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
//! * `ta-sim.lock` — held while running: one ta-sim per data directory;
//! * `ta.sock` — the default socket, mode 0600.
//!
//! Every write batch of the core re-seals the whole map and replaces
//! `sealed.bin` atomically (temp file, fsync, rename, fsync of the
//! directory). The in-memory map and the plaintext buffers are zeroized.
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

pub mod datadir;
pub mod platform;
pub mod sealed;
pub mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kms_ta::{Config, TaCore};
use kms_ta_optee::clock::{MonotonicClock, TimeFloor};
use kms_ta_optee::store::SnapshotStore;
use thiserror::Error;

use crate::datadir::{DataDir, DataDirError};
use crate::platform::{OsEntropy, SystemClock};
use crate::sealed::{SealError, SealedFile};
use crate::server::{Server, ServerError};

/// The core as the simulator runs it.
pub type SimCore = TaCore<SnapshotStore<SealedFile>, OsEntropy, MonotonicClock<SystemClock>>;

/// Name of the default socket in the data directory.
pub const DEFAULT_SOCKET: &str = "ta.sock";

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
    tracing::info!(store = %store_path.display(), objects = store.len(), fresh, "sealed state loaded");
    if settings.enable_test_seed {
        tracing::warn!("SeedWalletForTest is enabled: wallets can be created from known mnemonics (tests only)");
    }
    let core = TaCore::new(
        store,
        OsEntropy,
        MonotonicClock::new(SystemClock, floor),
        Config {
            test_seed_enabled: settings.enable_test_seed,
        },
    );
    let socket = socket_path(settings);
    let server = Server::bind(&socket, core)?;
    Ok(Started { server, data_dir })
}

/// The socket path of `settings`.
pub fn socket_path(settings: &Settings) -> PathBuf {
    settings
        .socket
        .clone()
        .unwrap_or_else(|| Path::new(&settings.data_dir).join(DEFAULT_SOCKET))
}
