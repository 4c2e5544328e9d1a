//! The client's error type.

use kms_proto::{ProtoError, TaError};
use thiserror::Error;

/// Why a TA call failed. Never carries request or response bytes.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TeeError {
    /// The TA cannot be reached: no session could be opened, or the session
    /// was lost during the call. The HTTP layer answers 503.
    #[error("TEE unavailable: {reason}")]
    Unavailable {
        /// What failed (an I/O or TEE client error description; no secrets).
        reason: String,
        /// Whether the request may have reached the TA before the failure:
        /// if `true`, the command may or may not have executed, and it was
        /// NOT re-sent. Callers that need to know must query the TA's state.
        maybe_executed: bool,
    },
    /// The bytes exchanged were not a valid protocol message.
    #[error("TEE protocol error: {0}")]
    Protocol(#[from] ProtoError),
    /// The TA answered with an error.
    #[error("TA refused: {0}")]
    Ta(#[from] TaError),
    /// The backend is not compiled into this build.
    #[error("TEE backend `{0}` is not compiled into this build (enable the cargo feature `{0}`)")]
    NotBuilt(&'static str),
}

impl TeeError {
    /// Whether this is [`TeeError::Unavailable`] (maps to HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, TeeError::Unavailable { .. })
    }

    pub(crate) fn not_sent(reason: impl Into<String>) -> Self {
        TeeError::Unavailable {
            reason: reason.into(),
            maybe_executed: false,
        }
    }

    pub(crate) fn lost(reason: impl Into<String>) -> Self {
        TeeError::Unavailable {
            reason: reason.into(),
            maybe_executed: true,
        }
    }
}
