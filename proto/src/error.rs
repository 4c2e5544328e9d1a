//! Typed errors. None of them carries secret material.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Bytes that are not a valid protocol message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum ProtoError {
    /// No bytes at all.
    #[error("empty message")]
    Empty,
    /// A version byte this build does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A status byte that is neither ok nor error.
    #[error("unknown response status {0}")]
    UnknownStatus(u8),
    /// The body does not decode as the expected type.
    #[error("malformed message body")]
    Malformed,
    /// Bytes left over after the body.
    #[error("trailing bytes after message body")]
    TrailingBytes,
    /// Longer than [`crate::MAX_MESSAGE_LEN`].
    #[error("message too large")]
    TooLarge,
}

/// Why a passkey assertion was refused by the TA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum PasskeyError {
    /// authenticatorData shorter than 37 bytes.
    #[error("authenticator data is malformed")]
    MalformedAuthenticatorData,
    /// The rpIdHash is not the one bound to the wallet.
    #[error("relying party id does not match the wallet's passkey")]
    RpIdMismatch,
    /// User presence (UP) flag not set.
    #[error("user presence flag missing")]
    UserPresenceMissing,
    /// User verification (UV) flag not set.
    #[error("user verification flag missing")]
    UserVerificationMissing,
    /// clientDataJSON is not valid JSON of the expected shape.
    #[error("client data is malformed")]
    MalformedClientData,
    /// clientDataJSON `type` is not `webauthn.get`.
    #[error("client data type is not webauthn.get")]
    WrongType,
    /// The challenge matches no pending nonce for this payload (wrong
    /// payload, reused or expired nonce).
    #[error("challenge does not match a pending nonce for this payload")]
    ChallengeMismatch,
    /// The signature is not well-formed DER.
    #[error("signature is malformed")]
    MalformedSignature,
    /// The signature does not verify under the bound passkey key.
    #[error("signature does not verify under the wallet's passkey")]
    BadSignature,
}

/// Why an agent credential was refused by the TA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum JwtError {
    /// Not three base64url parts, or header/payload not the expected JSON.
    #[error("credential is malformed")]
    Malformed,
    /// `alg` is not HS256 or `typ` is not JWT.
    #[error("credential algorithm is not HS256")]
    UnsupportedAlgorithm,
    /// The kid is not in the secret store.
    #[error("credential key id is unknown")]
    UnknownKid,
    /// The kid is verify-only and its overlap has ended.
    #[error("credential key id has retired")]
    RetiredKid,
    /// HMAC mismatch.
    #[error("credential signature is invalid")]
    BadSignature,
    /// `wallet_id` claim differs from the request.
    #[error("credential is for another wallet")]
    WalletMismatch,
    /// `agent_index` claim differs from the request.
    #[error("credential is for another agent index")]
    IndexMismatch,
    /// `gen` claim is not the agent's current generation (superseded).
    #[error("credential has been superseded")]
    StaleGeneration,
    /// `exp` is in the past.
    #[error("credential has expired")]
    Expired,
    /// `iat` is in the future or `exp - iat` exceeds the TTL cap.
    #[error("credential lifetime is invalid")]
    InvalidLifetime,
    /// The agent key is revoked.
    #[error("agent key is revoked")]
    AgentRevoked,
    /// The agent key does not exist in the TA.
    #[error("agent key is unknown")]
    AgentUnknown,
    /// The `iss` claim names another TA than this one (its operator address): the credential
    /// was minted by another TA.
    #[error("credential was minted by another TA")]
    OtherTa,
}

/// A fault of the sealed storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum StorageFault {
    /// The sealed data failed authentication or did not decode.
    #[error("sealed storage is corrupt or has been tampered with")]
    Corrupt,
    /// Reading or writing failed.
    #[error("sealed storage I/O failed")]
    Io,
    /// Out of space or over a capacity limit.
    #[error("sealed storage is full")]
    Full,
}

/// Every error the TA returns.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum TaError {
    /// The request bytes were not a valid message.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtoError),
    /// No such command (or not compiled into this build).
    #[error("unknown command {0}")]
    UnknownCommand(u32),
    /// The command exists but is never served (e.g. MAC oracles).
    #[error("unsupported command")]
    Unsupported,
    /// No wallet with that id.
    #[error("wallet not found")]
    WalletNotFound,
    /// The passkey public key is not a valid uncompressed P-256 point.
    #[error("passkey public key is not a valid P-256 point")]
    InvalidPasskeyKey,
    /// The relying party id is empty or too long.
    #[error("relying party id is invalid")]
    InvalidRpId,
    /// A passkey assertion was refused.
    #[error("passkey assertion refused: {0}")]
    Passkey(#[from] PasskeyError),
    /// A derivation path outside `m/44'/60'/0'/<c>/<i>` (non-hardened).
    #[error("invalid derivation path")]
    InvalidPath,
    /// A transaction `to` that is not exactly 20 bytes.
    #[error("transaction recipient must be exactly 20 bytes, got {0}")]
    InvalidRecipientLength(u32),
    /// A transaction field out of range.
    #[error("invalid transaction")]
    InvalidTransaction,
    /// A message longer than the TA accepts.
    #[error("message too long")]
    MessageTooLong,
    /// An agent credential was refused.
    #[error("credential refused: {0}")]
    Jwt(#[from] JwtError),
    /// CreateAgentKey for an index that already exists.
    #[error("agent key already exists")]
    AgentExists,
    /// No agent at that index.
    #[error("agent key not found")]
    AgentNotFound,
    /// The agent is revoked.
    #[error("agent key is revoked")]
    AgentRevoked,
    /// Agent index out of the non-hardened range.
    #[error("invalid agent index")]
    InvalidAgentIndex,
    /// TTL zero or above the cap.
    #[error("invalid credential lifetime")]
    InvalidTtl,
    /// Label too long.
    #[error("invalid label")]
    InvalidLabel,
    /// The operator key has not been created.
    #[error("operator key does not exist")]
    OperatorKeyMissing,
    /// No current JWT secret (the store was never initialised).
    #[error("no current JWT secret")]
    NoCurrentKid,
    /// The mnemonic given to the test seeding command is invalid.
    #[error("invalid mnemonic")]
    InvalidMnemonic,
    /// A wallet with this id already exists.
    #[error("wallet already exists")]
    WalletExists,
    /// Too many pending nonces, wallets, or agents.
    #[error("capacity limit reached")]
    LimitReached,
    /// The TA's randomness source failed.
    #[error("randomness source failed")]
    Entropy,
    /// Sealed storage fault.
    #[error("{0}")]
    Storage(#[from] StorageFault),
    /// An internal invariant failed (a bug; never secret-bearing).
    #[error("internal error")]
    Internal,
    /// A normal JWT secret rotation was refused and nothing changed: the
    /// store already keeps [`crate::jwt::MAX_VERIFY_ONLY_KIDS`] verify-only
    /// kids within their overlap, and making room would drop one that may
    /// still verify live credentials. It can run from `retry_at` (unix
    /// seconds, TA clock), when enough of them have retired; a forced
    /// rotation runs at any time and kills every outstanding credential.
    #[error(
        "normal JWT secret rotation refused: the verify-only secrets are at their limit \
         (credentials they signed may still be live); it can run from {retry_at} \
         (unix seconds, TA clock), or force the rotation to kill every credential now"
    )]
    JwtRotationRefused {
        /// The first time (unix seconds, TA clock) the rotation can succeed.
        retry_at: u64,
    },
    /// The sealed state is older than the TA's monotonic counter: it was rolled back (an older
    /// copy of the sealed storage was put back). Every command that touches state is refused
    /// until an operator accepts the restore (`AcceptRestore`, `kms-admin accept-restore`).
    #[error(
        "sealed state rolled back: its version {sealed} is behind the TA's monotonic counter \
         {counter} (an older copy of the sealed storage was restored); refusing to use it until \
         an operator accepts the restore (kms-admin accept-restore)"
    )]
    StateRolledBack {
        /// The version the sealed state carries.
        sealed: u64,
        /// The monotonic counter kept outside the sealed state (the newest version written).
        counter: u64,
    },
    /// An operator transaction (`OperatorSignRevokeSession`) above a ceiling fixed in the TA
    /// (gas limit, fee per gas, or the spend budget; see [`crate::operator`]). Nothing was signed
    /// and nothing was charged.
    #[error("operator transaction refused: {0}")]
    OperatorTxRefused(#[from] crate::operator::OperatorLimit),
    /// An [`crate::AuditCheckpoint`] that does not start where the TA's last checkpoint ends
    /// (another checkpoint came first, or the host is out of step): nothing changed. Read the
    /// TA's anchor ([`crate::AuditAnchor`]) and send the rows after its `seq`.
    #[error(
        "audit checkpoint out of step: the TA's last checkpoint covers rows up to {anchored_seq}"
    )]
    AuditCheckpointOutOfStep {
        /// The `seq` of the TA's last checkpoint (0 before the first).
        anchored_seq: u64,
    },
    /// An [`crate::AuditCheckpoint`] with no row hash, or more than
    /// [`crate::audit::MAX_CHECKPOINT_ROWS`].
    #[error("an audit checkpoint takes 1 to {max} row hashes")]
    AuditBatchInvalid {
        /// The most row hashes one checkpoint takes.
        max: u32,
    },
    /// A [`crate::SignEip7702Delegation`] whose authorisation the TA will not sign: chain id 0
    /// (EIP-7702 accepts it on every chain) or nonce `u64::MAX` (EIP-7702 bounds the nonce to
    /// `2^64 - 2`). Nothing was signed and the passkey nonce was not spent.
    #[error(
        "EIP-7702 authorization refused: the chain id must not be 0 (valid on every chain) \
         and the nonce must be below 2^64 - 1"
    )]
    InvalidAuthorization,
    /// A [`crate::SignAgentUserOps`] with no request, or more than
    /// [`crate::MAX_AGENT_SIGNATURES_PER_CALL`]: nothing was checked or signed.
    #[error("a batch of agent signatures takes 1 to {max} requests")]
    SignBatchInvalid {
        /// The most requests one call takes.
        max: u32,
    },
}
