//! The simulator backend: sessions are Unix-socket connections to `ta-sim`.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use rustix::net::RecvFlags;
use zeroize::Zeroize;

use crate::{TeeError, TeeTransport};
use kms_proto::wire::{self, FrameError};

/// Tuning of a [`SimTransport`].
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Idle sessions kept open for reuse; more are opened on demand when
    /// more calls run at once, and closed when returned to a full pool.
    pub max_idle: usize,
    /// Attempts to establish a session before giving up (connecting is the
    /// only step ever retried).
    pub connect_attempts: u32,
    /// Pause before the second attempt; doubled for each further one.
    pub connect_backoff: Duration,
    /// Longest wait for a response (and for a request to be accepted by the
    /// socket). On timeout the session is dropped and the call fails as
    /// unavailable with `maybe_executed: true`. `None` waits forever.
    pub call_timeout: Option<Duration>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            max_idle: 32,
            connect_attempts: 3,
            connect_backoff: Duration::from_millis(50),
            call_timeout: Some(Duration::from_secs(120)),
        }
    }
}

/// One session: the connection and its reusable buffers.
struct Session {
    stream: UnixStream,
    frame: Vec<u8>,
}

impl Session {
    /// Whether the server has closed the connection (or sent something
    /// unsolicited) since it was returned to the pool. Sends nothing.
    fn is_reusable(&self) -> bool {
        is_idle_and_open(&self.stream)
    }

    fn wipe(&mut self) {
        self.frame.zeroize();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// The `ta-sim` backend: a pool of sessions to the simulator's Unix socket.
///
/// Each call checks out an idle session (or opens a new one), sends one
/// request frame (see [`kms_proto::wire`]) and reads one response frame. A
/// session that fails in any way is dropped; the failed call is *not*
/// retried and the next call uses another session.
///
/// Blocking calls ([`TeeTransport::invoke`]) and async ones
/// ([`TeeTransport::invoke_async`], feature `tokio`: the socket is tokio's, waited on by its
/// reactor) keep separate pools of the same kind of session. Each session carries one call at a
/// time, as a TA session does: calls run in parallel over several sessions, not interleaved on
/// one, so the wire needs no request ids.
pub struct SimTransport {
    socket: PathBuf,
    config: SimConfig,
    idle: Idle<Session>,
    #[cfg(feature = "tokio")]
    idle_async: Idle<aio::Session>,
}

/// Idle sessions of one kind, kept for reuse (at most [`SimConfig::max_idle`]).
struct Idle<S>(Mutex<Vec<S>>);

impl<S> Idle<S> {
    fn new() -> Self {
        Idle(Mutex::new(Vec::new()))
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Vec<S>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn len(&self) -> usize {
        self.sessions().len()
    }

    /// The most recently returned session that `usable` accepts; those it refuses (closed by
    /// the server while idle) are dropped.
    fn take(&self, usable: impl Fn(&S) -> bool) -> Option<S> {
        loop {
            let popped = self.sessions().pop();
            match popped {
                Some(s) if usable(&s) => return Some(s),
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// Keeps `s` for reuse, unless `max` are kept already.
    fn put(&self, s: S, max: usize) {
        let mut idle = self.sessions();
        if idle.len() < max {
            idle.push(s);
        }
    }
}

impl std::fmt::Debug for SimTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTransport")
            .field("socket", &self.socket)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SimTransport {
    /// A transport to the socket at `socket`. Connects lazily, on the first
    /// call.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self::with_config(socket, SimConfig::default())
    }

    /// A transport with explicit tuning.
    pub fn with_config(socket: impl Into<PathBuf>, config: SimConfig) -> Self {
        Self {
            socket: socket.into(),
            config,
            idle: Idle::new(),
            #[cfg(feature = "tokio")]
            idle_async: Idle::new(),
        }
    }

    /// Connect now (one session, kept in the pool): fails with
    /// [`TeeError::Unavailable`] if no `ta-sim` answers on `socket`.
    pub fn connect(socket: impl Into<PathBuf>) -> Result<Self, TeeError> {
        let t = Self::new(socket);
        let s = t.open_session()?;
        t.checkin(s);
        Ok(t)
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Number of idle sessions in the pool (of blocking calls).
    pub fn idle_sessions(&self) -> usize {
        self.idle.len()
    }

    /// Number of idle sessions in the pool of async calls.
    #[cfg(feature = "tokio")]
    pub fn idle_async_sessions(&self) -> usize {
        self.idle_async.len()
    }

    fn open_session(&self) -> Result<Session, TeeError> {
        let attempts = self.config.connect_attempts.max(1);
        let mut backoff = self.config.connect_backoff;
        let mut last: Option<io::Error> = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                thread::sleep(backoff);
                backoff = backoff.saturating_mul(2);
            }
            match UnixStream::connect(&self.socket) {
                Ok(stream) => {
                    if let Err(e) = stream
                        .set_read_timeout(self.config.call_timeout)
                        .and_then(|()| stream.set_write_timeout(self.config.call_timeout))
                    {
                        last = Some(e);
                        continue;
                    }
                    return Ok(Session {
                        stream,
                        frame: Vec::new(),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(connect_failed(&self.socket, last))
    }

    fn checkout(&self) -> Result<Session, TeeError> {
        match self.idle.take(Session::is_reusable) {
            Some(s) => Ok(s),
            None => self.open_session(),
        }
    }

    fn checkin(&self, mut s: Session) {
        // Keep the pool's memory small and free of old secrets.
        s.wipe();
        self.idle.put(s, self.config.max_idle);
    }

    /// One request/response exchange. Every error here means the session
    /// is unusable and the request may have reached the TA.
    fn exchange(s: &mut Session, cmd: u32, input: &[u8]) -> Result<Vec<u8>, TeeError> {
        wire::encode_request(&mut s.frame, cmd, input)
            .map_err(|_| kms_proto::ProtoError::TooLarge)?;
        let sent = wire::write_frame(&mut s.stream, &s.frame);
        s.wipe();
        sent.map_err(|e| lost("sending the request", e))?;
        let mut output = Vec::new();
        match wire::read_response(&mut s.stream, &mut output) {
            Ok(()) => Ok(output),
            Err(FrameError::TooLong { .. }) => {
                // Unusable session; the bytes in it are not a valid frame.
                Err(TeeError::lost("ta-sim sent an oversize response frame"))
            }
            Err(e) => Err(lost("reading the response", e)),
        }
    }
}

fn lost(what: &str, e: FrameError) -> TeeError {
    let detail = match e {
        FrameError::Closed => "connection closed by ta-sim".to_owned(),
        FrameError::Io(e)
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
        {
            "timed out".to_owned()
        }
        other => other.to_string(),
    };
    TeeError::lost(format!("session lost while {what}: {detail}"))
}

fn connect_failed(socket: &Path, last: Option<io::Error>) -> TeeError {
    let why = last.map_or_else(|| "unknown error".to_owned(), |e| e.to_string());
    TeeError::not_sent(format!(
        "cannot connect to ta-sim at {}: {why}",
        socket.display()
    ))
}

/// Whether an idle connection is still usable: the server has not closed it (or sent something
/// unsolicited) since it was returned to the pool. Sends nothing.
fn is_idle_and_open(fd: impl std::os::fd::AsFd) -> bool {
    let mut probe = [0u8; 1];
    match rustix::net::recv(fd, &mut probe[..], RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        // Nothing to read: the connection is open and idle.
        Err(e) => e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::WOULDBLOCK,
        // EOF (server gone) or unsolicited bytes (desynchronised).
        Ok(_) => false,
    }
}

impl TeeTransport for SimTransport {
    fn invoke(&self, cmd: u32, input: &[u8]) -> Result<Vec<u8>, TeeError> {
        if input.len() > kms_proto::MAX_MESSAGE_LEN {
            return Err(kms_proto::ProtoError::TooLarge.into());
        }
        let mut session = self.checkout()?;
        match Self::exchange(&mut session, cmd, input) {
            Ok(out) => {
                self.checkin(session);
                Ok(out)
            }
            // Dropped, never reused and never retried.
            Err(e) => Err(e),
        }
    }

    #[cfg(feature = "tokio")]
    fn invoke_async(
        self: std::sync::Arc<Self>,
        cmd: u32,
        input: zeroize::Zeroizing<Vec<u8>>,
    ) -> crate::InvokeFuture {
        Box::pin(async move { aio::invoke(&self, cmd, &input).await })
    }
}

/// The async sessions: the same exchange on tokio's `UnixStream`.
#[cfg(feature = "tokio")]
mod aio {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream as AsyncStream;
    use zeroize::Zeroizing;

    /// The first read of a response: enough for every usual answer (a signature, a credential)
    /// in one system call; a larger frame is read on.
    pub(super) const FIRST_READ: usize = 1024;

    /// One async session: the connection and its reusable frame buffer.
    pub(super) struct Session {
        stream: AsyncStream,
        frame: Vec<u8>,
        /// It read bytes beyond a response frame: dropped instead of returned to the pool.
        desynchronised: bool,
    }

    impl Drop for Session {
        fn drop(&mut self) {
            self.frame.zeroize();
        }
    }

    async fn open(t: &SimTransport) -> Result<Session, TeeError> {
        let attempts = t.config.connect_attempts.max(1);
        let mut backoff = t.config.connect_backoff;
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
            match AsyncStream::connect(&t.socket).await {
                Ok(stream) => {
                    return Ok(Session {
                        stream,
                        frame: Vec::new(),
                        desynchronised: false,
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(connect_failed(&t.socket, last))
    }

    async fn checkout(t: &SimTransport) -> Result<Session, TeeError> {
        match t.idle_async.take(|s| is_idle_and_open(&s.stream)) {
            Some(s) => Ok(s),
            None => open(t).await,
        }
    }

    fn checkin(t: &SimTransport, mut s: Session) {
        s.frame.zeroize();
        if s.desynchronised {
            return;
        }
        t.idle_async.put(s, t.config.max_idle);
    }

    /// One request/response exchange; every error means the session is unusable and the request
    /// may have reached the TA.
    async fn exchange(s: &mut Session, cmd: u32, input: &[u8]) -> Result<Vec<u8>, TeeError> {
        wire::encode_request(&mut s.frame, cmd, input)
            .map_err(|_| kms_proto::ProtoError::TooLarge)?;
        let sent = s.stream.write_all(&s.frame).await;
        s.frame.zeroize();
        sent.map_err(|e| lost("sending the request", FrameError::Io(e)))?;
        // The length prefix and the body in as few reads as the socket allows (one for the
        // usual small answer), into the session's frame buffer (zeroized on check-in).
        s.frame.clear();
        s.frame.resize(FIRST_READ, 0);
        let mut got = 0;
        let mut total = None;
        loop {
            let n = s
                .stream
                .read(&mut s.frame[got..])
                .await
                .map_err(|e| lost("reading the response", FrameError::Io(e)))?;
            if n == 0 {
                return Err(lost("reading the response", FrameError::Closed));
            }
            got += n;
            if total.is_none() && got >= wire::LEN_PREFIX {
                let mut len = [0u8; wire::LEN_PREFIX];
                len.copy_from_slice(&s.frame[..wire::LEN_PREFIX]);
                let len = u32::from_be_bytes(len) as usize;
                if len > wire::MAX_RESPONSE_BODY {
                    return Err(TeeError::lost("ta-sim sent an oversize response frame"));
                }
                total = Some(wire::LEN_PREFIX + len);
                if s.frame.len() < wire::LEN_PREFIX + len {
                    s.frame.resize(wire::LEN_PREFIX + len, 0);
                }
            }
            match total {
                // Bytes beyond the frame: the server sent something unasked. The answer
                // stands; the session is desynchronised and is not reused.
                Some(t) if got > t => {
                    s.desynchronised = true;
                    break;
                }
                Some(t) if got == t => break,
                _ => {}
            }
        }
        let end = total.unwrap_or(wire::LEN_PREFIX);
        Ok(s.frame[wire::LEN_PREFIX..end].to_vec())
    }

    pub(super) async fn invoke(
        t: &SimTransport,
        cmd: u32,
        input: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TeeError> {
        if input.len() > kms_proto::MAX_MESSAGE_LEN {
            return Err(kms_proto::ProtoError::TooLarge.into());
        }
        let mut session = checkout(t).await?;
        let out = match t.config.call_timeout {
            Some(limit) => {
                match tokio::time::timeout(limit, exchange(&mut session, cmd, input)).await {
                    Ok(r) => r,
                    Err(_) => Err(lost(
                        "waiting for the response",
                        FrameError::Io(io::ErrorKind::TimedOut.into()),
                    )),
                }
            }
            None => exchange(&mut session, cmd, input).await,
        };
        // A failed session is dropped, never reused and never retried.
        let out = Zeroizing::new(out?);
        checkin(t, session);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    /// A one-shot fake server: answers `answers` frames on the first
    /// connection then closes it.
    fn serve(listener: UnixListener, answers: usize) -> thread::JoinHandle<Vec<u32>> {
        thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut input = Vec::new();
            for _ in 0..answers {
                let cmd = wire::read_request(&mut conn, &mut input).unwrap();
                seen.push(cmd);
                let mut frame = Vec::new();
                wire::encode_response(&mut frame, &input).unwrap();
                conn.write_all(&frame).unwrap();
            }
            seen
        })
    }

    #[test]
    fn unreachable_socket_is_unavailable_and_not_sent() {
        let dir = tempfile::tempdir().unwrap();
        let t = SimTransport::with_config(
            dir.path().join("none.sock"),
            SimConfig {
                connect_backoff: Duration::from_millis(1),
                ..SimConfig::default()
            },
        );
        match t.invoke(1, b"x") {
            Err(TeeError::Unavailable {
                maybe_executed: false,
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_lost_session_is_reported_once_and_never_resent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // The server answers one call and closes the connection while the
        // second call is in flight.
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut input = Vec::new();
            let mut frame = Vec::new();
            let cmd = wire::read_request(&mut conn, &mut input).unwrap();
            wire::encode_response(&mut frame, &input).unwrap();
            conn.write_all(&frame).unwrap();
            let cmd2 = wire::read_request(&mut conn, &mut input).unwrap();
            drop(conn);
            // A re-send would arrive on a new connection: count them.
            listener.set_nonblocking(true).unwrap();
            thread::sleep(Duration::from_millis(200));
            let resent = listener.accept().is_ok();
            (cmd, cmd2, resent)
        });
        let t = SimTransport::new(&path);
        assert_eq!(t.invoke(7, b"a").unwrap(), b"a");
        match t.invoke(8, b"b") {
            Err(TeeError::Unavailable {
                maybe_executed: true,
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        let (c1, c2, resent) = server.join().unwrap();
        assert_eq!((c1, c2, resent), (7, 8, false));
        assert_eq!(t.idle_sessions(), 0);
    }

    #[test]
    fn sessions_are_reused_and_dead_idle_ones_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = serve(listener.try_clone().unwrap(), 2);
        let t = SimTransport::new(&path);
        assert_eq!(t.invoke(1, b"one").unwrap(), b"one");
        assert_eq!(t.idle_sessions(), 1);
        assert_eq!(t.invoke(2, b"two").unwrap(), b"two");
        assert_eq!(server.join().unwrap(), vec![1, 2]);
        // The server closed that session while it sat idle: the next call
        // notices before sending and opens a fresh one.
        let server = serve(listener, 1);
        assert_eq!(t.invoke(3, b"three").unwrap(), b"three");
        assert_eq!(server.join().unwrap(), vec![3]);
    }

    #[test]
    fn oversize_input_is_refused_before_sending() {
        let t = SimTransport::new("/nonexistent/ta.sock");
        let big = vec![0u8; kms_proto::MAX_MESSAGE_LEN + 1];
        assert_eq!(
            t.invoke(1, &big),
            Err(TeeError::Protocol(kms_proto::ProtoError::TooLarge))
        );
    }

    /// The async path (`invoke_async`, what the companion uses): the same guarantees as the
    /// blocking one, on tokio's reactor.
    #[cfg(feature = "tokio")]
    mod async_calls {
        use super::*;
        use std::sync::Arc;
        use zeroize::Zeroizing;

        fn call(t: &Arc<SimTransport>, cmd: u32, input: &[u8]) -> crate::InvokeFuture {
            Arc::clone(t).invoke_async(cmd, Zeroizing::new(input.to_vec()))
        }

        #[tokio::test]
        async fn unreachable_socket_is_unavailable_and_not_sent() {
            let dir = tempfile::tempdir().unwrap();
            let t = Arc::new(SimTransport::with_config(
                dir.path().join("none.sock"),
                SimConfig {
                    connect_backoff: Duration::from_millis(1),
                    ..SimConfig::default()
                },
            ));
            match call(&t, 1, b"x").await {
                Err(TeeError::Unavailable {
                    maybe_executed: false,
                    ..
                }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn sessions_are_reused_and_dead_idle_ones_skipped() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.sock");
            let listener = UnixListener::bind(&path).unwrap();
            let server = serve(listener.try_clone().unwrap(), 2);
            let t = Arc::new(SimTransport::new(&path));
            assert_eq!(&call(&t, 1, b"one").await.unwrap()[..], b"one");
            assert_eq!((t.idle_async_sessions(), t.idle_sessions()), (1, 0));
            assert_eq!(&call(&t, 2, b"two").await.unwrap()[..], b"two");
            assert_eq!(server.join().unwrap(), vec![1, 2]);
            // Closed by the server while idle: noticed before sending, a fresh session opened.
            let server = serve(listener, 1);
            assert_eq!(&call(&t, 3, b"three").await.unwrap()[..], b"three");
            assert_eq!(server.join().unwrap(), vec![3]);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_lost_session_is_reported_once_and_never_resent() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.sock");
            let listener = UnixListener::bind(&path).unwrap();
            let server = thread::spawn(move || {
                let (mut conn, _) = listener.accept().unwrap();
                let mut input = Vec::new();
                let mut frame = Vec::new();
                let cmd = wire::read_request(&mut conn, &mut input).unwrap();
                wire::encode_response(&mut frame, &input).unwrap();
                conn.write_all(&frame).unwrap();
                let cmd2 = wire::read_request(&mut conn, &mut input).unwrap();
                // Half a response, then the connection closes.
                conn.write_all(&[0, 0, 0, 9, 1]).unwrap();
                drop(conn);
                listener.set_nonblocking(true).unwrap();
                thread::sleep(Duration::from_millis(200));
                let resent = listener.accept().is_ok();
                (cmd, cmd2, resent)
            });
            let t = Arc::new(SimTransport::new(&path));
            assert_eq!(&call(&t, 7, b"a").await.unwrap()[..], b"a");
            match call(&t, 8, b"b").await {
                Err(TeeError::Unavailable {
                    maybe_executed: true,
                    ..
                }) => {}
                other => panic!("unexpected {other:?}"),
            }
            let (c1, c2, resent) = tokio::task::spawn_blocking(move || server.join().unwrap())
                .await
                .unwrap();
            assert_eq!((c1, c2, resent), (7, 8, false));
            assert_eq!(t.idle_async_sessions(), 0);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_call_past_its_timeout_is_lost_and_its_session_dropped() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.sock");
            let listener = UnixListener::bind(&path).unwrap();
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let server = thread::spawn(move || {
                let (mut conn, _) = listener.accept().unwrap();
                let mut input = Vec::new();
                let cmd = wire::read_request(&mut conn, &mut input).unwrap();
                // Never answers until the client has given up.
                rx.recv().unwrap();
                cmd
            });
            let t = Arc::new(SimTransport::with_config(
                &path,
                SimConfig {
                    call_timeout: Some(Duration::from_millis(50)),
                    ..SimConfig::default()
                },
            ));
            match call(&t, 5, b"slow").await {
                Err(TeeError::Unavailable {
                    maybe_executed: true,
                    reason,
                }) => assert!(reason.contains("timed out"), "{reason}"),
                other => panic!("unexpected {other:?}"),
            }
            assert_eq!(t.idle_async_sessions(), 0);
            tx.send(()).unwrap();
            assert_eq!(server.join().unwrap(), 5);
        }

        /// A server that answers each request with `reply(input)` written in the pieces
        /// `split` gives, a pause between pieces.
        fn serve_split(
            listener: UnixListener,
            answers: usize,
            reply: fn(&[u8]) -> Vec<u8>,
            split: fn(&[u8]) -> Vec<Vec<u8>>,
        ) -> thread::JoinHandle<()> {
            thread::spawn(move || {
                let (mut conn, _) = listener.accept().unwrap();
                let mut input = Vec::new();
                for _ in 0..answers {
                    wire::read_request(&mut conn, &mut input).unwrap();
                    for piece in split(&reply(&input)) {
                        conn.write_all(&piece).unwrap();
                        thread::sleep(Duration::from_millis(5));
                    }
                }
                // Keep the connection open until the client is done with it.
                thread::sleep(Duration::from_millis(100));
            })
        }

        fn framed(body: &[u8]) -> Vec<u8> {
            let mut frame = Vec::new();
            wire::encode_response(&mut frame, body).unwrap();
            frame
        }

        /// The response is read in as few reads as arrive: a frame split anywhere (inside the
        /// length prefix, inside the body) and one larger than the first read's buffer come
        /// out whole, and the session is reused after each.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn responses_split_or_large_are_read_whole() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.sock");
            let listener = UnixListener::bind(&path).unwrap();
            let server = serve_split(
                listener,
                2,
                |input| framed(&input.repeat(if input == b"big" { 1000 } else { 1 })),
                |frame| {
                    vec![
                        frame[..2].to_vec(),
                        frame[2..6].to_vec(),
                        frame[6..].to_vec(),
                    ]
                },
            );
            let t = Arc::new(SimTransport::new(&path));
            assert_eq!(&call(&t, 1, b"split!").await.unwrap()[..], b"split!");
            assert_eq!(t.idle_async_sessions(), 1);
            let big = call(&t, 2, b"big").await.unwrap();
            assert!(big.len() > aio::FIRST_READ, "{}", big.len());
            assert_eq!(&big[..], &b"big".repeat(1000)[..]);
            assert_eq!(t.idle_async_sessions(), 1);
            tokio::task::spawn_blocking(move || server.join().unwrap())
                .await
                .unwrap();
        }

        /// Bytes after the response frame (the server sent something unasked): the answer
        /// stands, the session is not reused.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn bytes_beyond_the_frame_retire_the_session() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.sock");
            let listener = UnixListener::bind(&path).unwrap();
            let server = serve_split(
                listener,
                1,
                |input| [framed(input), vec![0, 0]].concat(),
                |frame| vec![frame.to_vec()],
            );
            let t = Arc::new(SimTransport::new(&path));
            assert_eq!(&call(&t, 1, b"answer").await.unwrap()[..], b"answer");
            assert_eq!(t.idle_async_sessions(), 0);
            tokio::task::spawn_blocking(move || server.join().unwrap())
                .await
                .unwrap();
        }

        #[tokio::test]
        async fn oversize_input_is_refused_before_sending() {
            let t = Arc::new(SimTransport::new("/nonexistent/ta.sock"));
            let big = vec![0u8; kms_proto::MAX_MESSAGE_LEN + 1];
            assert!(matches!(
                call(&t, 1, &big).await,
                Err(TeeError::Protocol(kms_proto::ProtoError::TooLarge))
            ));
        }

        /// `TeeClient::call_async` runs the exchange as its own task: a caller that goes away
        /// mid-call does not cut the command off, and the session comes back to the pool.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_dropped_call_still_completes_its_exchange() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.sock");
            let listener = UnixListener::bind(&path).unwrap();
            let (got_tx, got_rx) = std::sync::mpsc::channel::<()>();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            let server = thread::spawn(move || {
                let (mut conn, _) = listener.accept().unwrap();
                let mut input = Vec::new();
                let cmd = wire::read_request(&mut conn, &mut input).unwrap();
                got_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                let mut frame = Vec::new();
                let answer = kms_proto::encode_response(Ok(&kms_proto::TaInfoOutput {
                    version: "x".into(),
                    protocol_version: 1,
                    export_secrets: false,
                    test_seed: false,
                    now: 0,
                }));
                wire::encode_response(&mut frame, &answer).unwrap();
                conn.write_all(&frame).unwrap();
                cmd
            });
            let t = Arc::new(SimTransport::new(&path));
            let client = crate::TeeClient::from_arc(t.clone());
            let call = tokio::spawn(async move { client.call_async(&kms_proto::TaInfo {}).await });
            tokio::task::spawn_blocking(move || got_rx.recv().unwrap())
                .await
                .unwrap();
            call.abort();
            assert!(call.await.unwrap_err().is_cancelled());
            go_tx.send(()).unwrap();
            let cmd = tokio::task::spawn_blocking(move || server.join().unwrap())
                .await
                .unwrap();
            assert_eq!(cmd, kms_proto::CommandId::TaInfo.as_u32());
            // The exchange finished on its own and returned its session to the pool.
            for _ in 0..200 {
                if t.idle_async_sessions() == 1 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the session never came back to the pool");
        }
    }
}
