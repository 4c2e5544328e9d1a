//! The OP-TEE parameter layout of the key companion's Trusted Application.
//!
//! Defined once here and used by both sides: the TA's entry points
//! (`kms-ta-optee`) and the libteec client (`kms-tee-client`, feature
//! `optee`).
//!
//! # Sessions
//!
//! `TEEC_OpenSession` to [`kms_proto::TA_UUID`] with login `TEEC_LOGIN_PUBLIC`
//! and **no** operation (all four parameters `TEEC_NONE`). The TA is single
//! instance and multi-session: every session reaches the same TA state.
//!
//! # Commands
//!
//! `TEEC_InvokeCommand(session, command id, operation)` where the command id
//! is a [`kms_proto::CommandId`] value and the operation's parameters are:
//!
//! | index | type (client / TA)                                   | content |
//! |-------|------------------------------------------------------|---------|
//! | 0 [`PARAM_REQUEST`]  | `TEEC_MEMREF_TEMP_INPUT` / `TEE_PARAM_TYPE_MEMREF_INPUT`   | the encoded request ([`kms_proto::encode_request`]), 1..=[`kms_proto::MAX_MESSAGE_LEN`] bytes |
//! | 1 [`PARAM_RESPONSE`] | `TEEC_MEMREF_TEMP_OUTPUT` / `TEE_PARAM_TYPE_MEMREF_OUTPUT` | a buffer of [`RESPONSE_CAPACITY`] bytes; the TA writes the encoded response at its start and sets its updated size |
//! | 2 [`PARAM_RESULT`]   | `TEEC_VALUE_OUTPUT` / `TEE_PARAM_TYPE_VALUE_OUTPUT`        | `a` = response length in bytes, `b` = [`LAYOUT_VERSION`] |
//! | 3     | `TEEC_NONE` / `TEE_PARAM_TYPE_NONE`                  | unused |
//!
//! The TA returns `TEE_SUCCESS` whenever the command was executed — also
//! when the command itself failed: the failure is the typed error inside the
//! encoded response. A non-success return code means the operation was not
//! well-formed (`TEE_ERROR_BAD_PARAMETERS`: wrong parameter types, a request
//! longer than `MAX_MESSAGE_LEN`), the TA was busy or not initialised
//! (`TEE_ERROR_BUSY`, `TEE_ERROR_BAD_STATE`), its sealed state could not be
//! loaded (`TEE_ERROR_CORRUPT_OBJECT`, from the session open), or the
//! response did not fit (`TEE_ERROR_SHORT_BUFFER`, with `a` = the length it
//! needed; the command HAS executed in that case, which is why clients
//! always pass a full [`RESPONSE_CAPACITY`] buffer).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Index of the request memref.
pub const PARAM_REQUEST: usize = 0;
/// Index of the response memref.
pub const PARAM_RESPONSE: usize = 1;
/// Index of the result value (`a` = response length, `b` = layout version).
pub const PARAM_RESULT: usize = 2;

/// Size of the response buffer a client passes (and the most the TA ever
/// writes).
pub const RESPONSE_CAPACITY: usize = kms_proto::MAX_MESSAGE_LEN;

/// Version of this layout, written by the TA in the result value's `b`, so a
/// client detects a TA built against another layout.
pub const LAYOUT_VERSION: u32 = 1;

/// The result parameters of a completed invocation do not follow this
/// layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The TA wrote another [`LAYOUT_VERSION`].
    VersionMismatch(u32),
    /// The announced length exceeds the buffer, its updated size, or
    /// [`RESPONSE_CAPACITY`].
    BadLength(u32),
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::VersionMismatch(v) => write!(
                f,
                "TA parameter layout version {v}, this client speaks {LAYOUT_VERSION}"
            ),
            LayoutError::BadLength(n) => write!(f, "TA announced an invalid response length {n}"),
        }
    }
}

/// Check the result value (`a`, `b`) and the output memref's updated size
/// after a successful invocation; returns the response length.
pub fn response_len(a: u32, b: u32, updated_size: usize) -> Result<usize, LayoutError> {
    if b != LAYOUT_VERSION {
        return Err(LayoutError::VersionMismatch(b));
    }
    let len = a as usize;
    if len > RESPONSE_CAPACITY || len != updated_size {
        return Err(LayoutError::BadLength(a));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_len_checks_everything() {
        assert_eq!(response_len(10, LAYOUT_VERSION, 10), Ok(10));
        assert_eq!(response_len(0, LAYOUT_VERSION, 0), Ok(0));
        assert_eq!(
            response_len(10, 2, 10),
            Err(LayoutError::VersionMismatch(2))
        );
        assert_eq!(
            response_len(11, LAYOUT_VERSION, 10),
            Err(LayoutError::BadLength(11))
        );
        let too_big = RESPONSE_CAPACITY as u32 + 1;
        assert_eq!(
            response_len(too_big, LAYOUT_VERSION, too_big as usize),
            Err(LayoutError::BadLength(too_big))
        );
    }

    #[test]
    fn indices_are_distinct() {
        assert_ne!(PARAM_REQUEST, PARAM_RESPONSE);
        assert_ne!(PARAM_RESPONSE, PARAM_RESULT);
        assert_ne!(PARAM_REQUEST, PARAM_RESULT);
    }
}
