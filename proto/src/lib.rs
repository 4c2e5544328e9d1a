//! The protocol between the host (companion, `kms-admin`) and the Trusted
//! Application.
//!
//! One definition is shared by both sides, in the manner of the Teaclave
//! TrustZone SDK's `proto` crates:
//!
//! * [`CommandId`] — the numeric command ids (agent commands keep the upstream
//!   numbers 11–16; wallet commands are below 11; later additions from 17 up).
//! * [`Command`] — one request type per command, each naming its output type.
//! * [`codec`] — the single versioned encoding: `[version] ‖ postcard(body)` for
//!   requests, `[version] ‖ [status] ‖ postcard(body or error)` for responses.
//!   Decoding never panics; bad bytes give a [`ProtoError`].
//! * [`audit`] — the anchor of the host's audit log that the TA chains and signs.
//! * [`authz`] — the payload digests that passkey assertions are bound to:
//!   `challenge = SHA-256(TA nonce ‖ payload digest)`.
//! * [`session_signature`] — the 106-byte session signature the TA produces
//!   and `SessionKeyValidator` checks (marker, length, encode, parse).
//! * `wire` (feature `std`) — the frames of `ta-sim`'s Unix socket, used by
//!   the simulator and by the host client.
//!
//! The crate is `no_std` (with `alloc`) so the TA can use it.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod audit;
pub mod authz;
pub mod codec;
pub mod commands;
pub mod error;
pub mod ids;
pub mod jwt;
pub mod operator;
pub mod session_signature;
pub mod types;
#[cfg(any(feature = "std", test))]
pub mod wire;

pub use audit::{AuditAnchor, AuditAnchorInfo, AuditCheckpoint, SignedCheckpoint};
pub use codec::{
    decode_request, decode_response, encode_request, encode_response, MAX_MESSAGE_LEN,
    PROTOCOL_VERSION,
};
pub use commands::*;
pub use error::{JwtError, PasskeyError, ProtoError, StorageFault, TaError};
pub use ids::CommandId;
pub use operator::OperatorLimit;
pub use types::*;

/// The UUID of the Trusted Application (OP-TEE loads `<uuid>.ta`).
pub const TA_UUID: &str = "6e4a3c1f-2b7d-4d9e-9a51-8c0f3e7b2d64";

/// A request to the TA: its id and the type of its successful output.
pub trait Command: serde::Serialize + serde::de::DeserializeOwned {
    /// The command id sent alongside the encoded request.
    const ID: CommandId;
    /// What the TA returns on success.
    type Output: serde::Serialize + serde::de::DeserializeOwned;
}
