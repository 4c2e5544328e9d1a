//! The socket server: one connection is one TA session, served by its own
//! thread; every session calls the ONE shared core behind a mutex.
//!
//! Signing outside the lock ([`Locking::SignOutside`], the default): the core's
//! `SignAgentUserOp` is split by [`kms_ta::TaCore::begin`] into a short check against the
//! state (under the mutex) and the ECDSA (after the mutex is released, in parallel across
//! sessions). A gate, an `RwLock<()>` taken before the mutex, keeps the guarantee that once a
//! revoke, refresh or rotation has returned no signature checked against the old state can
//! still come out: a signature holds the gate shared from before its check until its
//! response bytes exist; every other command holds it exclusively, so it starts only when the
//! signatures begun before it are finished, and the signatures after it are checked against
//! its result. (std's `RwLock` on Linux makes new readers wait behind a waiting writer, so a
//! stream of signatures cannot starve a revoke.) [`Locking::Global`] is the old path, every
//! call wholly under the mutex, kept so that `loadgen` can measure both in one run.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use kms_proto::wire::{self, FrameError};
use kms_proto::{CommandId, ProtoError, TaError};
use rustix::event::{PollFd, PollFlags};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

/// What the server calls for each request: the TA core.
pub trait Handler: Send + 'static {
    /// Execute `cmd` on `input`; returns the encoded response. Must not
    /// panic (if it does, the process exits, like a TA that panicked).
    fn invoke(&mut self, cmd: u32, input: &[u8]) -> Vec<u8>;

    /// Start `cmd` (see [`kms_ta::TaCore::begin`]): the response, or a checked signature
    /// to finish outside the lock. Called only for commands of
    /// [`kms_ta::runs_in_parallel`]; by default the whole call.
    fn begin(&mut self, cmd: u32, input: &[u8]) -> kms_ta::Begun {
        kms_ta::Begun::Done(self.invoke(cmd, input))
    }
}

/// How sessions share the core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Locking {
    /// Every call wholly under the one mutex (the signature included).
    Global,
    /// State changes and credential checks under the mutex; the ECDSA of
    /// `SignAgentUserOp` outside it, in parallel (see the module documentation).
    #[default]
    SignOutside,
}

impl std::str::FromStr for Locking {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "global" => Ok(Locking::Global),
            "sign-outside" => Ok(Locking::SignOutside),
            other => Err(format!(
                "unknown locking {other:?} (expected global or sign-outside)"
            )),
        }
    }
}

/// The core as sessions share it: the mutex and the signing gate.
struct Shared<H> {
    core: Mutex<H>,
    /// Held shared by a signature from before its check until its bytes
    /// exist, exclusively by every other call (in [`Locking::SignOutside`]).
    gate: RwLock<()>,
    locking: Locking,
    /// Called between a signature's check and its ECDSA (tests only).
    pause: Option<SignPause>,
}

/// See [`Server::with_pause_before_signature`].
pub type SignPause = Arc<dyn Fn() + Send + Sync>;

impl<S, E, C, M> Handler for kms_ta::TaCore<S, E, C, M>
where
    S: kms_ta::SealedStorage + Send + 'static,
    E: kms_ta::Entropy + Send + 'static,
    C: kms_ta::Clock + Send + 'static,
    M: kms_ta::MonotonicCounter + Send + 'static,
{
    fn invoke(&mut self, cmd: u32, input: &[u8]) -> Vec<u8> {
        kms_ta::TaCore::invoke(self, cmd, input)
    }

    fn begin(&mut self, cmd: u32, input: &[u8]) -> kms_ta::Begun {
        kms_ta::TaCore::begin(self, cmd, input)
    }
}

/// Why the server cannot start or stopped abnormally.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Another live ta-sim answers on the socket.
    #[error("another ta-sim is already serving on {0}; refusing to start")]
    AlreadyServing(PathBuf),
    /// Something that is not a socket is at the socket path.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A socket operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Sessions whose response cannot be written within this time are dropped
/// (so a client that stops reading cannot block shutdown forever).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Triggers a graceful stop of [`Server::run`] from another thread.
#[derive(Debug)]
pub struct ShutdownHandle(UnixStream);

impl ShutdownHandle {
    /// Ask the server to stop: it stops accepting, lets in-flight calls
    /// finish, removes its socket and returns.
    pub fn shutdown(&self) -> io::Result<()> {
        (&self.0).write_all(&[1])
    }
}

/// The ta-sim server.
pub struct Server<H> {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of our socket file, so we only ever remove our own.
    identity: (u64, u64),
    shared: Arc<Shared<H>>,
    wake_rx: UnixStream,
    wake_tx: UnixStream,
}

impl<H> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ServerError + 'a {
    move |source| ServerError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Remove a stale socket left by a dead process; refuse if a live one
/// answers or if the path is not a socket.
fn clear_stale_socket(path: &Path) -> Result<(), ServerError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("cannot inspect", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket(path.to_owned()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServerError::AlreadyServing(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            fs::remove_file(path).map_err(io_err("cannot remove stale socket", path))?;
            tracing::info!(path = %path.display(), "removed a stale socket of a process that is gone");
            Ok(())
        }
        Err(e) => Err(io_err("cannot probe existing socket", path)(e)),
    }
}

impl<H: Handler> Server<H> {
    /// Bind the socket at `path` (mode 0600) for `core`.
    pub fn bind(path: &Path, core: H) -> Result<Self, ServerError> {
        clear_stale_socket(path)?;
        // Create the socket file with mode 0600 from the start (no window in
        // which another user could connect), then make sure.
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
        let bound = UnixListener::bind(path);
        rustix::process::umask(old);
        let listener = bound.map_err(io_err("cannot bind", path))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(io_err("cannot set permissions of", path))?;
        let meta = fs::symlink_metadata(path).map_err(io_err("cannot inspect", path))?;
        let (wake_rx, wake_tx) =
            UnixStream::pair().map_err(io_err("cannot create the wake-up pipe for", path))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
            shared: Arc::new(Shared {
                core: Mutex::new(core),
                gate: RwLock::new(()),
                locking: Locking::default(),
                pause: None,
            }),
            wake_rx,
            wake_tx,
        })
    }

    /// Choose how sessions share the core (before [`Server::run`]).
    pub fn with_locking(mut self, locking: Locking) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.locking = locking;
        }
        self
    }

    /// For tests: call `pause` in every agent signature after its check (the gate held
    /// shared, the mutex released) and before its ECDSA, so a test can hold a signature in
    /// flight and see what a concurrent revoke does.
    #[doc(hidden)]
    pub fn with_pause_before_signature(mut self, pause: SignPause) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.pause = Some(pause);
        }
        self
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that stops [`Server::run`] from another thread.
    pub fn shutdown_handle(&self) -> io::Result<ShutdownHandle> {
        self.wake_tx.try_clone().map(ShutdownHandle)
    }

    /// Stop gracefully on SIGTERM and SIGINT.
    pub fn stop_on_signals(&self) -> io::Result<()> {
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::low_level::pipe::register(sig, self.wake_tx.try_clone()?)?;
        }
        Ok(())
    }

    /// Serve until asked to stop; then stop accepting, let in-flight calls
    /// finish, close idle sessions and remove the socket.
    pub fn run(self) -> Result<(), ServerError> {
        let sessions: Arc<Mutex<HashMap<u64, UnixStream>>> = Arc::default();
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let mut next_id: u64 = 0;
        let result = loop {
            let (accept, wake) = {
                let mut fds = [
                    PollFd::new(&self.listener, PollFlags::IN),
                    PollFd::new(&self.wake_rx, PollFlags::IN),
                ];
                match rustix::event::poll(&mut fds, None) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => break Err(io_err("cannot poll", &self.path)(e.into())),
                }
                (!fds[0].revents().is_empty(), !fds[1].revents().is_empty())
            };
            if wake {
                tracing::info!("stopping: no new sessions; finishing calls in flight");
                break Ok(());
            }
            if !accept {
                continue;
            }
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // E.g. out of file descriptors: keep serving the others.
                    tracing::warn!(error = %e, "accept failed");
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            next_id += 1;
            let id = next_id;
            let registered = stream.try_clone().map(|clone| {
                lock(&sessions).insert(id, clone);
            });
            if let Err(e) = registered.and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
            {
                tracing::warn!(error = %e, "cannot set up a session; closing it");
                lock(&sessions).remove(&id);
                continue;
            }
            let core = Arc::clone(&self.shared);
            let sessions_for_thread = Arc::clone(&sessions);
            let spawned = thread::Builder::new()
                .name(format!("ta-session-{id}"))
                .spawn(move || {
                    tracing::debug!(session = id, "session opened");
                    serve_session(id, stream, &core);
                    lock(&sessions_for_thread).remove(&id);
                    tracing::debug!(session = id, "session closed");
                });
            match spawned {
                Ok(h) => threads.push(h),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a session thread; closing it");
                    lock(&sessions).remove(&id);
                }
            }
            threads.retain(|h| !h.is_finished());
        };

        // Stop accepting and remove our socket (only if it is still ours).
        drop(self.listener);
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.identity {
                if let Err(e) = fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the socket");
                }
            }
        }
        // Wake sessions waiting for a request; one in the middle of a call
        // finishes it and writes its response first.
        for s in lock(&sessions).values() {
            let _ = s.shutdown(Shutdown::Read);
        }
        for h in threads {
            let _ = h.join();
        }
        result
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        // Only the session registry can get here (the core never panics
        // without the process exiting); its map is still consistent.
        Err(p) => p.into_inner(),
    }
}

fn wipe(v: &mut Vec<u8>) {
    v.as_mut_slice().zeroize();
    v.clear();
}

/// Run `f`; a panic ends the process, like a TA that panicked in OP-TEE (its instance is dead).
fn or_exit<T>(id: u64, cmd: u32, f: impl FnOnce() -> T) -> T {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(out) => out,
        Err(_) => {
            tracing::error!(session = id, cmd, "the TA core panicked; exiting");
            std::process::exit(70);
        }
    }
}

/// One call on the shared core (see the module documentation for the locking).
fn call<H: Handler>(id: u64, shared: &Shared<H>, cmd: u32, input: &[u8]) -> Vec<u8> {
    if shared.locking == Locking::Global {
        let mut core = lock(&shared.core);
        return or_exit(id, cmd, || core.invoke(cmd, input));
    }
    // Poisoning cannot happen (a panic ends the process); the guard protects nothing but order.
    if !kms_ta::runs_in_parallel(cmd) {
        let _exclusive = shared.gate.write().unwrap_or_else(|p| p.into_inner());
        let mut core = lock(&shared.core);
        return or_exit(id, cmd, || core.invoke(cmd, input));
    }
    let _shared = shared.gate.read().unwrap_or_else(|p| p.into_inner());
    let begun = {
        let mut core = lock(&shared.core);
        or_exit(id, cmd, || core.begin(cmd, input))
    };
    match begun {
        kms_ta::Begun::Done(out) => out,
        // Outside the mutex, inside the gate: a state change waits for this.
        kms_ta::Begun::Sign(pending) => {
            if let Some(pause) = &shared.pause {
                pause();
            }
            or_exit(id, cmd, || pending.finish())
        }
    }
}

fn serve_session<H: Handler>(id: u64, mut stream: UnixStream, core: &Shared<H>) {
    let mut input = Zeroizing::new(Vec::new());
    let mut frame = Zeroizing::new(Vec::new());
    loop {
        let cmd = match wire::read_request(&mut stream, &mut input) {
            Ok(cmd) => cmd,
            Err(FrameError::Closed) => return,
            Err(e @ (FrameError::TooLong { .. } | FrameError::TooShort(_))) => {
                tracing::warn!(session = id, error = %e, "malformed frame; closing this session");
                return;
            }
            Err(FrameError::Io(e)) => {
                tracing::debug!(session = id, error = %e, "session read ended");
                return;
            }
        };
        let started = Instant::now();
        let output = Zeroizing::new(call(id, core, cmd, &input));
        wipe(&mut input);
        if let Err(e) = wire::encode_response(&mut frame, &output) {
            tracing::error!(session = id, cmd, error = %e, "the TA core produced an oversize response");
            let refusal = kms_proto::encode_response::<kms_proto::Empty>(Err(&TaError::Protocol(
                ProtoError::TooLarge,
            )));
            if wire::encode_response(&mut frame, &refusal).is_err() {
                return;
            }
        }
        let written = wire::write_frame(&mut stream, &frame);
        wipe(&mut frame);
        if tracing::enabled!(tracing::Level::TRACE) {
            let name = CommandId::from_u32(cmd).map_or("unknown", CommandId::name);
            tracing::trace!(
                session = id,
                cmd,
                name,
                response_len = output.len(),
                micros = started.elapsed().as_micros() as u64,
                "call"
            );
        }
        if let Err(e) = written {
            tracing::debug!(session = id, error = %e, "cannot write the response; closing this session");
            return;
        }
    }
}
