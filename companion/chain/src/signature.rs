//! Signature layouts the project's account accepts.
//!
//! - Owner: 65 bytes `r ‖ s ‖ v`, ECDSA over the EIP-191 hash of the userOpHash.
//! - Session (DESIGN.md §5.1): 106 bytes `0x08 ‖ account (20) ‖ key (20) ‖ r (32) ‖ s (32) ‖ v (1)`,
//!   ECDSA by the agent key over the EIP-191 hash of the userOpHash, `v ∈ {27, 28}`, low s.

use alloy::primitives::{Address, Bytes};
use kms_contracts::{SESSION_MARKER, SESSION_SIGNATURE_LENGTH};

/// A 65-byte `r ‖ s ‖ v` signature is not 65 bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an ECDSA signature is 65 bytes (r ‖ s ‖ v), got {0}")]
pub struct BadSignatureLength(pub usize);

/// Assembles the 106-byte session signature from the account it is for, the agent key address
/// and the key's 65-byte `r ‖ s ‖ v` signature over the EIP-191 hash of the userOpHash.
pub fn session_signature(
    account: Address,
    key: Address,
    rsv: &[u8],
) -> Result<Bytes, BadSignatureLength> {
    if rsv.len() != 65 {
        return Err(BadSignatureLength(rsv.len()));
    }
    let mut out = Vec::with_capacity(SESSION_SIGNATURE_LENGTH);
    out.push(SESSION_MARKER);
    out.extend_from_slice(account.as_slice());
    out.extend_from_slice(key.as_slice());
    out.extend_from_slice(rsv);
    Ok(out.into())
}

/// A stub session signature of the final length and layout, for `eth_estimateUserOperationGas`:
/// it names `account` and `key`, has a valid low `s` and `v = 27`, and recovers to no key, so
/// validation runs the whole session policy and then reports a signature failure instead of
/// reverting.
pub fn stub_session_signature(account: Address, key: Address) -> Bytes {
    let mut rsv = [0u8; 65];
    rsv[31] = 1; // r = 1
    rsv[63] = 1; // s = 1 (low)
    rsv[64] = 27;
    session_signature(account, key, &rsv).expect("65 bytes")
}

/// A stub owner signature (65 bytes, low `s`, `v = 27`) for gas estimation of owner operations.
pub fn stub_owner_signature() -> Bytes {
    let mut rsv = [0u8; 65];
    rsv[31] = 1;
    rsv[63] = 1;
    rsv[64] = 27;
    Bytes::from(rsv.to_vec())
}

/// The parts of a 106-byte session signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSignature {
    /// The account the signature is for (`sig[1:21]`).
    pub account: Address,
    /// The agent key address (`sig[21:41]`).
    pub key: Address,
    /// `r ‖ s ‖ v` (`sig[41:106]`).
    pub rsv: [u8; 65],
}

impl SessionSignature {
    /// Splits a session signature; `None` unless it has the 106-byte layout with marker 0x08.
    pub fn parse(sig: &[u8]) -> Option<Self> {
        if sig.len() != SESSION_SIGNATURE_LENGTH || sig[0] != SESSION_MARKER {
            return None;
        }
        Some(Self {
            account: Address::from_slice(&sig[1..21]),
            key: Address::from_slice(&sig[21..41]),
            rsv: sig[41..106].try_into().expect("65 bytes"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::address;

    #[test]
    fn layout() {
        let account = address!("0x1111111111111111111111111111111111111111");
        let key = address!("0x2222222222222222222222222222222222222222");
        let rsv: Vec<u8> = (0..65).collect();
        let sig = session_signature(account, key, &rsv).unwrap();
        assert_eq!(sig.len(), 106);
        assert_eq!(sig[0], 0x08);
        assert_eq!(&sig[1..21], account.as_slice());
        assert_eq!(&sig[21..41], key.as_slice());
        assert_eq!(&sig[41..], &rsv[..]);
        let parsed = SessionSignature::parse(&sig).unwrap();
        assert_eq!(
            (parsed.account, parsed.key, parsed.rsv.to_vec()),
            (account, key, rsv)
        );
    }

    #[test]
    fn rejects_wrong_lengths_and_markers() {
        assert_eq!(
            session_signature(Address::ZERO, Address::ZERO, &[0; 64]),
            Err(BadSignatureLength(64))
        );
        let mut sig = stub_session_signature(Address::ZERO, Address::ZERO).to_vec();
        assert!(SessionSignature::parse(&sig).is_some());
        sig[0] = 0x09;
        assert!(SessionSignature::parse(&sig).is_none());
        assert!(SessionSignature::parse(&sig[..105]).is_none());
    }

    #[test]
    fn stubs_have_final_lengths() {
        assert_eq!(
            stub_session_signature(Address::ZERO, Address::ZERO).len(),
            106
        );
        assert_eq!(stub_owner_signature().len(), 65);
    }
}
