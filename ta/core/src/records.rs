//! What the TA keeps in sealed storage, and the object keys.
//!
//! Every record is postcard-encoded with a leading format version so a later
//! TA can read what an earlier one wrote. Records holding secrets zeroise
//! themselves on drop.

use alloc::string::String;
use alloc::vec::Vec;
use kms_proto::{StorageFault, WalletId};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Format version of every record written by this TA.
pub(crate) const RECORD_VERSION: u8 = 1;

/// A wallet: its BIP39 entropy and the passkey bound to it.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct WalletRecord {
    pub version: u8,
    /// 16..=32 bytes of BIP39 entropy (32 for TA-created wallets).
    pub entropy: Vec<u8>,
    /// SEC1 uncompressed P-256 key (65 bytes).
    pub passkey_public_key: Vec<u8>,
    /// SHA-256 of the relying party id.
    pub rp_id_hash: [u8; 32],
    pub created_at: u64,
}

/// An agent key's lifecycle. The key itself is derived on demand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AgentRecord {
    pub version: u8,
    pub address: [u8; 20],
    pub generation: u32,
    pub created_at: u64,
    pub revoked_at: Option<u64>,
}

/// One JWT HMAC secret.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct JwtSecret {
    pub kid: String,
    pub secret: [u8; 32],
    pub created_at: u64,
    /// `None` for the current secret; the end of the overlap for a
    /// verify-only one.
    pub retire_at: Option<u64>,
}

/// The JWT secret store: one current secret and at most
/// [`kms_proto::jwt::MAX_VERIFY_ONLY_KIDS`] verify-only ones (see `jwt.rs`).
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct JwtStore {
    pub version: u8,
    pub entries: Vec<JwtSecret>,
}

/// The operator key.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct OperatorRecord {
    pub version: u8,
    pub secret: [u8; 32],
    pub created_at: u64,
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Storage key of a wallet.
pub(crate) fn wallet_key(id: &WalletId) -> String {
    let mut k = String::from("w/");
    k.push_str(&hex(&id.0));
    k
}

/// Storage key of an agent.
pub(crate) fn agent_key(id: &WalletId, index: u32) -> String {
    alloc::format!("a/{}/{}", hex(&id.0), index)
}

/// Storage key of the JWT secret store.
pub(crate) const JWT_STORE_KEY: &str = "jwt";
/// Storage key of the operator key.
pub(crate) const OPERATOR_KEY: &str = "operator";

/// Encode a record; the buffer is zeroised when dropped.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, StorageFault> {
    postcard::to_allocvec(value)
        .map(Zeroizing::new)
        .map_err(|_| StorageFault::Io)
}

/// Decode a record written by this TA; anything else is corruption.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StorageFault> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        _ => Err(StorageFault::Corrupt),
    }
}

/// Lowercase `0x`-prefixed hex of an address.
pub(crate) fn address_hex(address: &[u8; 20]) -> String {
    let mut s = String::from("0x");
    s.push_str(&hex(address));
    s
}

#[cfg(test)]
pub(crate) fn hex_for_tests(bytes: &[u8]) -> String {
    hex(bytes)
}
