//! Signature layouts the project's account accepts.
//!
//! - Owner: 65 bytes `r ‖ s ‖ v`, ECDSA over the EIP-191 hash of the userOpHash.
//! - Session: `marker ‖ account (20) ‖ key (20) ‖ r (32) ‖ s (32) ‖ v (1)`, ECDSA by the agent
//!   key over the EIP-191 hash of the userOpHash, `v ∈ {27, 28}`, low s. The layout is defined
//!   once, in [`kms_proto::session_signature`] (the TA produces it with the same code); this
//!   module wraps it in alloy's types. See `docs/ARCHITECTURE.md#session-signature`.
//!
//! Both account kinds ([`crate::account::AccountKind`]) take the same session signature and stub:
//! `AgentAccount` and an ERC-7579 account's validator module (`SessionKeyValidator` on both). On
//! either, the owner's operations use nonce key 0 and a 65-byte `r ‖ s ‖ v` checked by the
//! account's own signer (OpenZeppelin's `SignerECDSA` on its ERC-7579 account: raw ECDSA over the
//! userOpHash, as `AgentAccount`), whose stub is [`stub_owner_signature`].

use alloy::primitives::{Address, Bytes};
use kms_proto::session_signature::{self as layout, RSV_LEN};

pub use kms_proto::session_signature::{SESSION_MARKER, SESSION_SIGNATURE_LEN};

/// A 65-byte `r ‖ s ‖ v` signature is not 65 bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an ECDSA signature is 65 bytes (r ‖ s ‖ v), got {0}")]
pub struct BadSignatureLength(pub usize);

/// Assembles the session signature from the account it is for, the agent key address
/// and the key's 65-byte `r ‖ s ‖ v` signature over the EIP-191 hash of the userOpHash.
pub fn session_signature(
    account: Address,
    key: Address,
    rsv: &[u8],
) -> Result<Bytes, BadSignatureLength> {
    let rsv: [u8; RSV_LEN] = rsv.try_into().map_err(|_| BadSignatureLength(rsv.len()))?;
    let sig = layout::SessionSignature {
        account: account.into_array(),
        key: key.into_array(),
        rsv,
    };
    Ok(Bytes::copy_from_slice(&sig.encode()))
}

/// A stub session signature of the final length and layout, for `eth_estimateUserOperationGas`:
/// it names `account` and `key`, has a valid low `s` and `v = 27`, and recovers to no key, so
/// validation runs the whole session policy and then reports a signature failure instead of
/// reverting.
pub fn stub_session_signature(account: Address, key: Address) -> Bytes {
    session_signature(account, key, &stub_rsv()).expect("65 bytes")
}

/// A stub owner signature (65 bytes, low `s`, `v = 27`) for gas estimation of owner operations.
pub fn stub_owner_signature() -> Bytes {
    Bytes::from(stub_rsv().to_vec())
}

/// `r = 1`, `s = 1` (low), `v = 27`.
fn stub_rsv() -> [u8; RSV_LEN] {
    let mut rsv = [0u8; RSV_LEN];
    rsv[31] = 1; // r = 1
    rsv[63] = 1; // s = 1 (low)
    rsv[64] = 27;
    rsv
}

/// The parts of a session signature, in alloy's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSignature {
    /// The account the signature is for (`sig[1:21]`).
    pub account: Address,
    /// The agent key address (`sig[21:41]`).
    pub key: Address,
    /// `r ‖ s ‖ v` (`sig[41:106]`).
    pub rsv: [u8; RSV_LEN],
}

impl SessionSignature {
    /// Splits a session signature; `None` unless it has the session layout (length and marker).
    pub fn parse(sig: &[u8]) -> Option<Self> {
        let s = layout::SessionSignature::parse(sig)?;
        Some(Self {
            account: Address::from(s.account),
            key: Address::from(s.key),
            rsv: s.rsv,
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
        assert_eq!(sig.len(), SESSION_SIGNATURE_LEN);
        assert_eq!(sig[0], SESSION_MARKER);
        assert_eq!(&sig[1..21], account.as_slice());
        assert_eq!(&sig[21..41], key.as_slice());
        assert_eq!(&sig[41..], &rsv[..]);
        let parsed = SessionSignature::parse(&sig).unwrap();
        assert_eq!(
            (parsed.account, parsed.key, parsed.rsv.to_vec()),
            (account, key, rsv)
        );
    }

    /// The bindings' constants are the contract's, and the layout's.
    #[test]
    fn bindings_use_the_one_layout() {
        assert_eq!(kms_contracts::SESSION_MARKER, SESSION_MARKER);
        assert_eq!(
            kms_contracts::SESSION_SIGNATURE_LENGTH,
            SESSION_SIGNATURE_LEN
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
        sig[0] = SESSION_MARKER + 1;
        assert!(SessionSignature::parse(&sig).is_none());
        assert!(SessionSignature::parse(&sig[..SESSION_SIGNATURE_LEN - 1]).is_none());
    }

    #[test]
    fn stubs_have_final_lengths() {
        assert_eq!(
            stub_session_signature(Address::ZERO, Address::ZERO).len(),
            SESSION_SIGNATURE_LEN
        );
        assert_eq!(stub_owner_signature().len(), RSV_LEN);
    }
}
