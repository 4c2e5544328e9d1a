//! Value types shared by requests and responses.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;
use serde::{Deserialize, Serialize};

/// A wallet id: a random UUID (version 4) drawn from TA randomness.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WalletId(pub [u8; 16]);

impl WalletId {
    /// Format as a lowercase hyphenated UUID string.
    pub fn to_uuid_string(&self) -> String {
        let mut s = String::with_capacity(36);
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                s.push('-');
            }
            let _ = fmt::Write::write_fmt(&mut s, format_args!("{b:02x}"));
        }
        s
    }
}

impl fmt::Display for WalletId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uuid_string())
    }
}

impl fmt::Debug for WalletId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletId({self})")
    }
}

/// A string that is not a hyphenated UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidWalletId;

impl fmt::Display for InvalidWalletId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("wallet id must be a hyphenated UUID")
    }
}

impl FromStr for WalletId {
    type Err = InvalidWalletId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return Err(InvalidWalletId);
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b[i] != b'-' {
                    return Err(InvalidWalletId);
                }
                i += 1;
                continue;
            }
            let hi = hex_val(b[i]).ok_or(InvalidWalletId)?;
            let lo = hex_val(b[i + 1]).ok_or(InvalidWalletId)?;
            out[n] = (hi << 4) | lo;
            n += 1;
            i += 2;
        }
        Ok(WalletId(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A 20-byte Ethereum address.
pub type Address = [u8; 20];

/// A 32-byte hash.
pub type B256 = [u8; 32];

/// A BIP32 path of the form `m/44'/60'/0'/<change>/<index>` (both last
/// components non-hardened). This is the only shape the TA derives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HdPath {
    /// The `change` component: 0 for the owner's addresses, 1 for agent keys.
    pub change: u32,
    /// The address index.
    pub index: u32,
}

impl HdPath {
    /// Largest non-hardened child index.
    pub const MAX_INDEX: u32 = 0x7FFF_FFFF;
    /// The owner's default address, `m/44'/60'/0'/0/0`.
    pub const OWNER: HdPath = HdPath {
        change: 0,
        index: 0,
    };

    /// The path of agent key `index`: `m/44'/60'/0'/1/<index>`.
    pub const fn agent(index: u32) -> HdPath {
        HdPath { change: 1, index }
    }

    /// Whether both components are non-hardened child numbers.
    pub const fn is_valid(&self) -> bool {
        self.change <= Self::MAX_INDEX && self.index <= Self::MAX_INDEX
    }
}

impl fmt::Display for HdPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m/44'/60'/0'/{}/{}", self.change, self.index)
    }
}

/// A path string the TA does not derive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidHdPath;

impl fmt::Display for InvalidHdPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("derivation path must be m/44'/60'/0'/<change>/<index> with non-hardened change and index")
    }
}

impl FromStr for HdPath {
    type Err = InvalidHdPath;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("m/44'/60'/0'/").ok_or(InvalidHdPath)?;
        let (change, index) = rest.split_once('/').ok_or(InvalidHdPath)?;
        let parse = |p: &str| -> Result<u32, InvalidHdPath> {
            if p.is_empty() || p.len() > 10 || !p.bytes().all(|c| c.is_ascii_digit()) {
                return Err(InvalidHdPath);
            }
            if p.len() > 1 && p.starts_with('0') {
                return Err(InvalidHdPath);
            }
            p.parse::<u32>().map_err(|_| InvalidHdPath)
        };
        let path = HdPath {
            change: parse(change)?,
            index: parse(index)?,
        };
        if path.is_valid() {
            Ok(path)
        } else {
            Err(InvalidHdPath)
        }
    }
}

/// A WebAuthn assertion as the authenticator produced it. The TA verifies it
/// itself: P-256 over `authenticatorData ‖ SHA-256(clientDataJSON)`, the UP
/// and UV flags, the rpId hash, and the challenge.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyAssertion {
    /// Raw authenticator data (rpIdHash ‖ flags ‖ signCount ‖ …).
    pub authenticator_data: Vec<u8>,
    /// Raw clientDataJSON bytes exactly as signed.
    pub client_data_json: Vec<u8>,
    /// The ECDSA P-256 signature, ASN.1 DER (as WebAuthn returns it).
    pub signature: Vec<u8>,
}

impl fmt::Debug for PasskeyAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasskeyAssertion")
            .field("authenticator_data_len", &self.authenticator_data.len())
            .field("client_data_json_len", &self.client_data_json.len())
            .field("signature_len", &self.signature.len())
            .finish()
    }
}

/// An address and its compressed public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressInfo {
    /// The path it was derived at.
    pub path: HdPath,
    /// The Ethereum address.
    pub address: Address,
    /// The SEC1 compressed secp256k1 public key (33 bytes).
    pub public_key: Vec<u8>,
}

/// A 65-byte recoverable ECDSA signature `r ‖ s ‖ v` with `v ∈ {27, 28}` and
/// low `s`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature65 {
    /// `r ‖ s ‖ v`.
    pub bytes: Vec<u8>,
    /// The signer's address.
    pub address: Address,
}

/// A transaction the TA signs. `to` is carried as bytes so the TA itself
/// refuses anything but exactly 20 bytes (`None` is contract creation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transaction {
    /// A legacy transaction with EIP-155 replay protection.
    Legacy {
        /// Chain id (EIP-155).
        chain_id: u64,
        /// Sender nonce.
        nonce: u64,
        /// Gas price in wei.
        gas_price: u128,
        /// Gas limit.
        gas_limit: u64,
        /// Recipient (exactly 20 bytes), or `None` to create a contract.
        to: Option<Vec<u8>>,
        /// Value in wei, 32 bytes big-endian.
        value: B256,
        /// Call data.
        data: Vec<u8>,
    },
    /// An EIP-1559 transaction.
    Eip1559 {
        /// Chain id.
        chain_id: u64,
        /// Sender nonce.
        nonce: u64,
        /// Max priority fee per gas in wei.
        max_priority_fee_per_gas: u128,
        /// Max fee per gas in wei.
        max_fee_per_gas: u128,
        /// Gas limit.
        gas_limit: u64,
        /// Recipient (exactly 20 bytes), or `None` to create a contract.
        to: Option<Vec<u8>>,
        /// Value in wei, 32 bytes big-endian.
        value: B256,
        /// Call data.
        data: Vec<u8>,
        /// EIP-2930 access list.
        access_list: Vec<AccessListItem>,
    },
}

/// One entry of an EIP-2930 access list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessListItem {
    /// The account accessed.
    pub address: Address,
    /// Its storage keys.
    pub storage_keys: Vec<B256>,
}

/// A signed transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTransaction {
    /// The raw signed transaction, ready for `eth_sendRawTransaction`
    /// (EIP-2718 envelope for typed transactions).
    pub raw: Vec<u8>,
    /// The transaction hash.
    pub tx_hash: B256,
    /// The signing hash that was signed.
    pub signing_hash: B256,
    /// `r ‖ s ‖ v` with `v` the y-parity plus 27 (the raw transaction carries
    /// the form its type requires).
    pub signature: Vec<u8>,
    /// The signer's address.
    pub from: Address,
}

/// The credential material of an agent key, built in the TA in one call: the
/// host joins `header_b64 . payload_b64 . base64url(hmac)` into the JWT.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCredential {
    /// Agent key index.
    pub agent_index: u32,
    /// Agent key address (`m/44'/60'/0'/1/<index>`).
    pub address: Address,
    /// SEC1 compressed public key (33 bytes).
    pub public_key: Vec<u8>,
    /// The credential generation this JWT carries (`gen` claim).
    pub generation: u32,
    /// The HMAC key id used.
    pub kid: String,
    /// base64url JWT header.
    pub header_b64: String,
    /// base64url JWT payload.
    pub payload_b64: String,
    /// HMAC-SHA256 over `header_b64 "." payload_b64`.
    pub hmac: B256,
    /// Issued at (unix seconds, TA clock).
    pub iat: u64,
    /// Expiry (unix seconds, TA clock).
    pub exp: u64,
}

impl fmt::Debug for AgentCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The HMAC is a bearer secret once joined: never print it.
        f.debug_struct("AgentCredential")
            .field("agent_index", &self.agent_index)
            .field("generation", &self.generation)
            .field("kid", &self.kid)
            .field("iat", &self.iat)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

impl AgentCredential {
    /// The compact JWT `header.payload.signature`.
    pub fn to_jwt(&self) -> String {
        let mut s = String::with_capacity(self.header_b64.len() + self.payload_b64.len() + 45);
        s.push_str(&self.header_b64);
        s.push('.');
        s.push_str(&self.payload_b64);
        s.push('.');
        crate::jwt::base64url_encode_into(&self.hmac, &mut s);
        s
    }
}

/// Lifecycle of an agent key inside the TA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// Wallet.
    pub wallet_id: WalletId,
    /// Agent index.
    pub agent_index: u32,
    /// Agent key address.
    pub address: Address,
    /// Current credential generation; a JWT whose `gen` differs is refused.
    pub generation: u32,
    /// Revoked agents sign nothing and cannot be refreshed.
    pub revoked: bool,
    /// Created (unix seconds).
    pub created_at: u64,
    /// Revoked (unix seconds), if revoked.
    pub revoked_at: Option<u64>,
}

/// Status of a JWT HMAC secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KidStatus {
    /// Issues and verifies credentials.
    Current,
    /// Verifies only, until `retire_at`.
    VerifyOnly,
}

/// Public facts about one JWT HMAC secret (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtSecretInfo {
    /// Key id.
    pub kid: String,
    /// Current or verify-only.
    pub status: KidStatus,
    /// Created (unix seconds, TA clock).
    pub created_at: u64,
    /// For verify-only secrets: when they stop verifying.
    pub retire_at: Option<u64>,
}

/// How to rotate the JWT secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RotationMode {
    /// New current kid; the previous current becomes verify-only for the
    /// overlap. Every verify-only kid is kept until its retire time (expired
    /// ones are purged), so no live credential dies; with
    /// [`crate::jwt::MAX_VERIFY_ONLY_KIDS`] still within their overlap the
    /// rotation is refused ([`crate::TaError::JwtRotationRefused`]).
    Normal,
    /// New current kid; every other kid is removed at once, so every
    /// outstanding credential dies.
    Force,
    /// Remove verify-only kids whose overlap has ended; no new kid.
    PurgeExpired,
}

/// An empty output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn wallet_id_round_trips_through_its_string() {
        let id = WalletId([
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x80, 0x11, 0x22, 0x33, 0x44, 0x55,
            0x66, 0x77,
        ]);
        let s = id.to_uuid_string();
        assert_eq!(s, "12345678-9abc-4def-8011-223344556677");
        assert_eq!(s.parse::<WalletId>().unwrap(), id);
        assert_eq!(
            "12345678-9ABC-4DEF-8011-223344556677"
                .parse::<WalletId>()
                .unwrap(),
            id
        );
    }

    #[test]
    fn wallet_id_rejects_malformed_strings() {
        for bad in [
            "",
            "12345678-9abc-4def-8011-22334455667",
            "12345678-9abc-4def-8011-2233445566778",
            "123456789abc-4def-8011-2233445566778",
            "12345678-9abc-4def-8011-22334455667g",
            "12345678_9abc-4def-8011-223344556677",
            "12345678-9abc-4def-8011-2233445566é",
        ] {
            assert!(bad.parse::<WalletId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hd_path_parses_only_the_derivable_shape() {
        assert_eq!("m/44'/60'/0'/1/7".parse::<HdPath>(), Ok(HdPath::agent(7)));
        assert_eq!(HdPath::agent(7).to_string(), "m/44'/60'/0'/1/7");
        assert_eq!(
            "m/44'/60'/0'/0/2147483647".parse::<HdPath>().unwrap().index,
            HdPath::MAX_INDEX
        );
        for bad in [
            "m/44'/60'/0'/0/2147483648",
            "m/44'/60'/0'/0'/0",
            "m/44'/60'/1'/0/0",
            "m/44'/60'/0'/0",
            "m/44'/60'/0'/0/0/0",
            "m/44'/60'/0'/0/01",
            "m/44'/60'/0'/0/-1",
            "m/44'/60'/0'/0/ 1",
            "",
        ] {
            assert!(bad.parse::<HdPath>().is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_credential_or_assertion_bytes() {
        let cred = AgentCredential {
            agent_index: 1,
            address: [0; 20],
            public_key: alloc::vec![2; 33],
            generation: 1,
            kid: "k0".into(),
            header_b64: "h".into(),
            payload_b64: "p".into(),
            hmac: [0xAB; 32],
            iat: 1,
            exp: 2,
        };
        let d = alloc::format!("{cred:?}");
        assert!(
            !d.contains("171") && !d.contains("ab") && !d.contains("AB"),
            "{d}"
        );
    }
}
