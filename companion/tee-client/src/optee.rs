//! The OP-TEE backend: libteec sessions to the real TA.
//!
//! The parameter layout is [`kms_optee_abi`]'s: request in a temporary
//! input memref, response in a temporary output memref of
//! [`kms_optee_abi::RESPONSE_CAPACITY`] bytes, and a value output carrying
//! the response length and the layout version.
//!
//! Sessions are opened with `TEEC_LOGIN_USER`: the kernel stamps them with
//! this process's effective uid (as a UUIDv5 the process cannot forge), and
//! the TA admits only the identity it was built for (`KMS_TA_CLIENT_LOGIN`,
//! see `ta/optee/src/login.rs`); anyone else's session open fails with
//! `TEEC_ERROR_ACCESS_DENIED`. A TA built for `group:<gid>` needs
//! `TEEC_LOGIN_GROUP` with the gid as connection data, which `optee-teec`
//! 0.10 cannot pass (it sends a null pointer that libteec would read), so
//! this client speaks the user login only; run the companion and
//! `kms-admin` as the service account the TA names.

use std::sync::Mutex;

use kms_optee_abi as abi;
use optee_teec::{
    ConnectionMethods, Context, ErrorKind, ErrorOrigin, Operation, ParamNone, ParamTmpRef,
    ParamType, ParamValue, Session, Uuid,
};
use zeroize::Zeroize;

use crate::{TeeError, TeeTransport};

/// Idle sessions kept for reuse.
const MAX_IDLE: usize = 32;

/// Appended to the error when the TA refuses to open a session.
const ACCESS_DENIED_HINT: &str = " (the TA admits one OS account or group only, the \
     KMS_TA_CLIENT_LOGIN it was built with; run this as that account)";

/// A pooled session with its response buffer (reused; wiped after each call).
struct PooledSession {
    session: Session,
    out: Vec<u8>,
}

/// The OP-TEE backend: one TEE context and a pool of sessions to
/// [`kms_proto::TA_UUID`]. Each call checks out a session (opening one if
/// none is idle). A session whose call failed in the TEE or in the
/// communication layer is dropped and the call is not retried.
pub struct OpteeTransport {
    context: Mutex<Option<Context>>,
    idle: Mutex<Vec<PooledSession>>,
}

impl std::fmt::Debug for OpteeTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpteeTransport").finish_non_exhaustive()
    }
}

impl Default for OpteeTransport {
    fn default() -> Self {
        Self::new()
    }
}

fn teec(what: &str, e: &optee_teec::Error) -> String {
    format!("{what}: {e}")
}

fn uuid() -> Result<Uuid, TeeError> {
    Uuid::parse_str(kms_proto::TA_UUID).map_err(|e| TeeError::not_sent(teec("invalid TA UUID", &e)))
}

impl OpteeTransport {
    /// A transport that initialises the TEE context and opens sessions
    /// lazily, on the first call.
    pub fn new() -> Self {
        Self {
            context: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Initialise the TEE context and open one session now (kept for the
    /// first call): fails with [`TeeError::Unavailable`] if the TEE driver,
    /// tee-supplicant or the TA is missing.
    pub fn connect() -> Result<Self, TeeError> {
        let t = Self::new();
        let s = t.open_session()?;
        t.checkin(s);
        Ok(t)
    }

    fn open_session(&self) -> Result<PooledSession, TeeError> {
        let mut ctx = match self.context.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if ctx.is_none() {
            *ctx = Some(
                Context::new()
                    .map_err(|e| TeeError::not_sent(teec("cannot open the TEE context", &e)))?,
            );
        }
        let context = ctx
            .as_mut()
            .ok_or_else(|| TeeError::not_sent("no TEE context"))?;
        let session = context
            .open_session_with_login(uuid()?, ConnectionMethods::LoginUser)
            .map_err(|e| {
                let what = format!("cannot open a session to TA {}", kms_proto::TA_UUID);
                let mut reason = teec(&what, &e);
                if e.kind() == ErrorKind::AccessDenied {
                    reason.push_str(ACCESS_DENIED_HINT);
                }
                TeeError::not_sent(reason)
            })?;
        Ok(PooledSession {
            session,
            out: vec![0u8; abi::RESPONSE_CAPACITY],
        })
    }

    fn checkout(&self) -> Result<PooledSession, TeeError> {
        let pooled = match self.idle.lock() {
            Ok(mut g) => g.pop(),
            Err(p) => p.into_inner().pop(),
        };
        match pooled {
            Some(s) => Ok(s),
            None => self.open_session(),
        }
    }

    fn checkin(&self, s: PooledSession) {
        let mut idle = match self.idle.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if idle.len() < MAX_IDLE {
            idle.push(s);
        }
    }
}

/// What became of one invocation.
enum Outcome {
    /// The TA answered: response bytes.
    Answer(Vec<u8>),
    /// The TA refused the operation itself; the session is still usable.
    Refused(TeeError),
    /// The session (or the TA instance) is gone.
    Lost(TeeError),
}

fn invoke_on(s: &mut PooledSession, cmd: u32, input: &[u8]) -> Outcome {
    let result = {
        let p0 = ParamTmpRef::new_input(input);
        let p1 = ParamTmpRef::new_output(&mut s.out);
        let p2 = ParamValue::new(0, 0, ParamType::ValueOutput);
        let mut op = Operation::new(0, p0, p1, p2, ParamNone);
        match s.session.invoke_command(cmd, &mut op) {
            Ok(()) => {
                let (_, out, result, _) = op.parameters();
                Ok(abi::response_len(
                    result.a(),
                    result.b(),
                    out.updated_size(),
                ))
            }
            Err(e) => Err(e),
        }
    };
    match result {
        Ok(Ok(len)) => {
            let answer = s.out[..len].to_vec();
            s.out[..len].zeroize();
            Outcome::Answer(answer)
        }
        Ok(Err(layout)) => Outcome::Lost(TeeError::lost(format!(
            "TA answer does not follow the parameter layout: {layout}"
        ))),
        Err(e) => {
            let reason = teec("TEEC_InvokeCommand failed", &e);
            match (e.origin(), e.kind()) {
                // The TA itself refused the operation: the session lives.
                (Some(ErrorOrigin::TA), ErrorKind::ShortBuffer) => {
                    Outcome::Refused(TeeError::lost(reason))
                }
                (Some(ErrorOrigin::TA), ErrorKind::BadParameters | ErrorKind::Busy) => {
                    Outcome::Refused(TeeError::not_sent(reason))
                }
                // TA panicked (TARGET_DEAD), driver or communication error.
                _ => Outcome::Lost(TeeError::lost(reason)),
            }
        }
    }
}

impl TeeTransport for OpteeTransport {
    fn invoke(&self, cmd: u32, input: &[u8]) -> Result<Vec<u8>, TeeError> {
        if input.is_empty() {
            return Err(kms_proto::ProtoError::Empty.into());
        }
        if input.len() > kms_proto::MAX_MESSAGE_LEN {
            return Err(kms_proto::ProtoError::TooLarge.into());
        }
        let mut s = self.checkout()?;
        match invoke_on(&mut s, cmd, input) {
            Outcome::Answer(bytes) => {
                self.checkin(s);
                Ok(bytes)
            }
            Outcome::Refused(e) => {
                self.checkin(s);
                Err(e)
            }
            // Dropping the session closes it; never retried.
            Outcome::Lost(e) => Err(e),
        }
    }
}
