//! Host-side client of the key companion's Trusted Application (TA).
//!
//! The companion and `kms-admin` talk to the TA through this crate only:
//!
//! * [`TeeTransport`] — the ONE trait every backend implements: a blocking
//!   `invoke(command id, request bytes) -> response bytes`.
//! * [`TeeClient`] — the typed client (cheap to clone, `Arc` inside):
//!   [`TeeClient::call`] encodes a [`kms_proto::Command`], invokes it and
//!   decodes its output; [`TeeClient::call_async`] (feature `tokio`) is the same call for
//!   async code, through [`TeeTransport::invoke_async`]: the simulator backend does its socket
//!   I/O on tokio's reactor (no thread of the blocking pool per call); a backend with only a
//!   blocking call (libteec) runs it on tokio's blocking pool.
//! * Backends: [`SimTransport`] connects to the `ta-sim` process over a Unix
//!   socket (the wire frames are defined once, in [`kms_proto::wire`], which
//!   `ta-sim` uses too); `OpteeTransport`
//!   (feature `optee`) opens libteec sessions to [`kms_proto::TA_UUID`] with
//!   the parameter layout of `kms-optee-abi`.
//! * [`TeeBackend`] — which backend to use, parsed from `sim:/path/ta.sock`
//!   or `optee` (the companion and `kms-admin` take it from a flag or env).
//!
//! # Never re-sending a command
//!
//! Every backend keeps a pool of sessions, and every call checks one out.
//! Only *establishing* a session is ever retried. Once any byte of a request
//! may have reached the TA, a failure is returned to the caller as
//! [`TeeError::Unavailable`] with `maybe_executed: true` and the session is
//! discarded; the command is never sent again (re-executing a command on
//! reconnect duplicated side effects in the upstream KMS). The next call
//! uses a fresh session.
//!
//! # Secrets
//!
//! Request and response buffers are zeroized after use. [`TeeError`] never
//! carries request or response bytes.
#![warn(missing_docs)]
#![deny(unsafe_code)]

mod backend;
mod error;
#[cfg(feature = "optee")]
mod optee;
mod sim;

/// The `ta-sim` wire frames (defined in `kms-proto`, shared with `ta-sim`).
pub use kms_proto::wire;

use std::fmt;
use std::sync::Arc;

use kms_proto::Command;
use zeroize::Zeroizing;

pub use backend::{BackendParseError, TeeBackend};
pub use error::TeeError;
#[cfg(feature = "optee")]
pub use optee::OpteeTransport;
pub use sim::{SimConfig, SimTransport};

/// The future of [`TeeTransport::invoke_async`].
#[cfg(feature = "tokio")]
pub type InvokeFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Zeroizing<Vec<u8>>, TeeError>> + Send>,
>;

/// A way to reach the TA: one command invocation, blocking ([`TeeTransport::invoke`]) or, with
/// the `tokio` feature, async ([`TeeTransport::invoke_async`]).
///
/// Implementations must be safe to call from many threads at once (each call
/// uses its own session) and must never re-send a request whose bytes may
/// have reached the TA.
pub trait TeeTransport: Send + Sync {
    /// Invoke command `cmd` with the encoded request `input`; returns the
    /// encoded response (see [`kms_proto::codec`]).
    fn invoke(&self, cmd: u32, input: &[u8]) -> Result<Vec<u8>, TeeError>;

    /// [`TeeTransport::invoke`] for async code, with the same guarantees. The default runs
    /// `invoke` on tokio's blocking pool (for a backend whose only call blocks, as libteec's
    /// does); a backend that can wait on tokio's reactor overrides it and saves the blocking
    /// pool's thread hand-offs. Must be polled within a tokio runtime.
    #[cfg(feature = "tokio")]
    fn invoke_async(self: Arc<Self>, cmd: u32, input: Zeroizing<Vec<u8>>) -> InvokeFuture
    where
        Self: 'static,
    {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || self.invoke(cmd, &input).map(Zeroizing::new))
                .await
                .map_err(|e| TeeError::Unavailable {
                    reason: format!("TEE call task failed: {e}"),
                    maybe_executed: true,
                })?
        })
    }
}

impl<T: TeeTransport + ?Sized + 'static> TeeTransport for Arc<T> {
    fn invoke(&self, cmd: u32, input: &[u8]) -> Result<Vec<u8>, TeeError> {
        (**self).invoke(cmd, input)
    }

    #[cfg(feature = "tokio")]
    fn invoke_async(self: Arc<Self>, cmd: u32, input: Zeroizing<Vec<u8>>) -> InvokeFuture {
        Arc::clone(&*self).invoke_async(cmd, input)
    }
}

/// The typed TA client. Cloning is cheap; clones share the transport and its
/// session pool.
#[derive(Clone)]
pub struct TeeClient {
    transport: Arc<dyn TeeTransport>,
}

impl fmt::Debug for TeeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TeeClient").finish_non_exhaustive()
    }
}

impl TeeClient {
    /// A client over `transport`.
    pub fn new(transport: impl TeeTransport + 'static) -> Self {
        Self {
            transport: Arc::new(transport),
        }
    }

    /// A client over a shared transport.
    pub fn from_arc(transport: Arc<dyn TeeTransport>) -> Self {
        Self { transport }
    }

    /// Connect to `backend`, checking that the TA answers (one session is
    /// opened now and kept in the pool).
    pub fn connect(backend: &TeeBackend) -> Result<Self, TeeError> {
        backend.connect()
    }

    /// The transport, e.g. to share it with another client.
    pub fn transport(&self) -> &Arc<dyn TeeTransport> {
        &self.transport
    }

    /// Call command `C`: encode, invoke, decode.
    ///
    /// Blocking; from async code use [`TeeClient::call_async`].
    pub fn call<C: Command>(&self, req: &C) -> Result<C::Output, TeeError> {
        let input = Zeroizing::new(kms_proto::encode_request(req));
        let output = Zeroizing::new(self.transport.invoke(C::ID.as_u32(), &input)?);
        decode::<C>(&output)
    }

    /// Invoke a raw command id with raw request bytes; returns the raw
    /// response bytes. For tools and tests; prefer [`TeeClient::call`].
    pub fn invoke_raw(&self, cmd: u32, input: &[u8]) -> Result<Vec<u8>, TeeError> {
        self.transport.invoke(cmd, input)
    }

    /// [`TeeClient::call`] for async code, through [`TeeTransport::invoke_async`]. Must be
    /// called from within a tokio runtime.
    ///
    /// The request is encoded before the first await. The exchange runs as a task of its own:
    /// if the returned future is dropped, the call still runs to completion in the background
    /// (a command that has been handed to the TA is never abandoned half-way).
    #[cfg(feature = "tokio")]
    pub async fn call_async<C: Command>(&self, req: &C) -> Result<C::Output, TeeError>
    where
        C::Output: Send + 'static,
    {
        let input = Zeroizing::new(kms_proto::encode_request(req));
        let call = Arc::clone(&self.transport).invoke_async(C::ID.as_u32(), input);
        let output = tokio::spawn(call)
            .await
            .map_err(|e| TeeError::Unavailable {
                reason: format!("TEE call task failed: {e}"),
                maybe_executed: true,
            })??;
        decode::<C>(&output)
    }
}

fn decode<C: Command>(output: &[u8]) -> Result<C::Output, TeeError> {
    match kms_proto::decode_response::<C::Output>(output) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(ta)) => Err(TeeError::Ta(ta)),
        Err(proto) => Err(TeeError::Protocol(proto)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kms_proto::{Empty, TaError, TaInfo, TaInfoOutput};
    use std::sync::Mutex;

    /// A transport answering from a closure, recording what it was sent.
    struct Scripted {
        seen: Mutex<Vec<(u32, Vec<u8>)>>,
        answer: Box<dyn Fn(u32) -> Result<Vec<u8>, TeeError> + Send + Sync>,
    }

    impl TeeTransport for Scripted {
        fn invoke(&self, cmd: u32, input: &[u8]) -> Result<Vec<u8>, TeeError> {
            self.seen.lock().unwrap().push((cmd, input.to_vec()));
            (self.answer)(cmd)
        }
    }

    fn info() -> TaInfoOutput {
        TaInfoOutput {
            version: "0.1.0".into(),
            protocol_version: kms_proto::PROTOCOL_VERSION,
            export_secrets: false,
            test_seed: false,
            now: 7,
        }
    }

    #[test]
    fn call_encodes_and_decodes() {
        let t = Arc::new(Scripted {
            seen: Mutex::new(Vec::new()),
            answer: Box::new(|_| Ok(kms_proto::encode_response(Ok(&info())))),
        });
        let client = TeeClient::from_arc(t.clone());
        assert_eq!(client.call(&TaInfo {}).unwrap(), info());
        let seen = t.seen.lock().unwrap();
        assert_eq!(seen[0].0, kms_proto::CommandId::TaInfo.as_u32());
        assert_eq!(seen[0].1, kms_proto::encode_request(&TaInfo {}));
    }

    #[test]
    fn ta_errors_and_bad_bytes_are_typed() {
        let client = TeeClient::new(Scripted {
            seen: Mutex::new(Vec::new()),
            answer: Box::new(|cmd| {
                Ok(kms_proto::encode_response::<Empty>(Err(
                    &TaError::UnknownCommand(cmd),
                )))
            }),
        });
        assert_eq!(
            client.call(&TaInfo {}),
            Err(TeeError::Ta(TaError::UnknownCommand(22)))
        );
        let client = TeeClient::new(Scripted {
            seen: Mutex::new(Vec::new()),
            answer: Box::new(|_| Ok(vec![99])),
        });
        assert_eq!(
            client.call(&TaInfo {}),
            Err(TeeError::Protocol(
                kms_proto::ProtoError::UnsupportedVersion(99)
            ))
        );
    }

    // `call_async` exists with the `tokio` feature, which every user of this crate in the
    // workspace enables (so the workspace test run always has it).
    #[cfg(feature = "tokio")]
    #[tokio::test]
    async fn call_async_of_a_blocking_transport_answers() {
        let client = TeeClient::new(Scripted {
            seen: Mutex::new(Vec::new()),
            answer: Box::new(|_| Ok(kms_proto::encode_response(Ok(&info())))),
        });
        assert_eq!(client.call_async(&TaInfo {}).await.unwrap(), info());
    }
}
