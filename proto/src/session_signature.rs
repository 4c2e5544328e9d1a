//! The session signature: the one definition of its layout, used by the TA
//! (which produces it), the chain code (which assembles stubs and parses
//! it) and the contract bindings (whose `SessionKeyValidator` checks it).
//!
//! ```text
//! marker 0x08 (1) ‖ account (20) ‖ agent key (20) ‖ r (32) ‖ s (32) ‖ v (1)   = 106 bytes
//! ```
//!
//! `r ‖ s ‖ v` is the agent key's ECDSA signature over the EIP-191 hash of
//! the userOpHash, low `s`, `v ∈ {27, 28}`. The account routes a signature of
//! this length that starts with the marker to `SessionKeyValidator`; any
//! other signature is an owner signature. See
//! `docs/ARCHITECTURE.md#session-signature`.

use crate::types::Address;

/// First byte of a session signature.
pub const SESSION_MARKER: u8 = 0x08;
/// Length of an ECDSA `r ‖ s ‖ v` signature.
pub const RSV_LEN: usize = 65;
/// Length of a session signature.
pub const SESSION_SIGNATURE_LEN: usize = 1 + 20 + 20 + RSV_LEN;

/// Offset of the account in a session signature.
pub const ACCOUNT_OFFSET: usize = 1;
/// Offset of the agent key in a session signature.
pub const KEY_OFFSET: usize = ACCOUNT_OFFSET + 20;
/// Offset of `r ‖ s ‖ v` in a session signature.
pub const RSV_OFFSET: usize = KEY_OFFSET + 20;

/// The parts of a session signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionSignature {
    /// The account the signature is for (`sig[1..21]`).
    pub account: Address,
    /// The agent key's address (`sig[21..41]`).
    pub key: Address,
    /// `r ‖ s ‖ v` (`sig[41..106]`).
    pub rsv: [u8; RSV_LEN],
}

impl SessionSignature {
    /// The signature's bytes.
    pub fn encode(&self) -> [u8; SESSION_SIGNATURE_LEN] {
        let mut out = [0u8; SESSION_SIGNATURE_LEN];
        out[0] = SESSION_MARKER;
        out[ACCOUNT_OFFSET..KEY_OFFSET].copy_from_slice(&self.account);
        out[KEY_OFFSET..RSV_OFFSET].copy_from_slice(&self.key);
        out[RSV_OFFSET..].copy_from_slice(&self.rsv);
        out
    }

    /// Splits a session signature; `None` unless `sig` is exactly
    /// [`SESSION_SIGNATURE_LEN`] bytes starting with [`SESSION_MARKER`].
    pub fn parse(sig: &[u8]) -> Option<Self> {
        let sig: &[u8; SESSION_SIGNATURE_LEN] = sig.try_into().ok()?;
        if sig[0] != SESSION_MARKER {
            return None;
        }
        let mut s = Self {
            account: [0; 20],
            key: [0; 20],
            rsv: [0; RSV_LEN],
        };
        s.account.copy_from_slice(&sig[ACCOUNT_OFFSET..KEY_OFFSET]);
        s.key.copy_from_slice(&sig[KEY_OFFSET..RSV_OFFSET]);
        s.rsv.copy_from_slice(&sig[RSV_OFFSET..]);
        Some(s)
    }
}

/// Whether `sig` has the session layout (length and marker), as the account
/// decides where to route it.
pub fn is_session_signature(sig: &[u8]) -> bool {
    sig.len() == SESSION_SIGNATURE_LEN && sig[0] == SESSION_MARKER
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SessionSignature {
        let mut rsv = [0u8; RSV_LEN];
        for (i, b) in rsv.iter_mut().enumerate() {
            *b = i as u8;
        }
        SessionSignature {
            account: [0x11; 20],
            key: [0x22; 20],
            rsv,
        }
    }

    /// The layout the contracts check (`SessionKeyValidator.SESSION_MARKER`,
    /// `SESSION_SIGNATURE_LENGTH`), spelled out byte by byte.
    #[test]
    fn layout() {
        assert_eq!(SESSION_MARKER, 0x08);
        assert_eq!(SESSION_SIGNATURE_LEN, 106);
        let s = sample();
        let sig = s.encode();
        assert_eq!(sig.len(), 106);
        assert_eq!(sig[0], 0x08);
        assert_eq!(&sig[1..21], &[0x11; 20]);
        assert_eq!(&sig[21..41], &[0x22; 20]);
        assert_eq!(&sig[41..106], &s.rsv[..]);
        assert_eq!(SessionSignature::parse(&sig), Some(s));
        assert!(is_session_signature(&sig));
    }

    #[test]
    fn rejects_wrong_lengths_and_markers() {
        let sig = sample().encode();
        assert!(SessionSignature::parse(&sig[..105]).is_none());
        let mut longer = [0u8; 107];
        longer[..106].copy_from_slice(&sig);
        assert!(SessionSignature::parse(&longer).is_none());
        assert!(!is_session_signature(&longer));
        assert!(SessionSignature::parse(&[]).is_none());
        assert!(!is_session_signature(&[]));
        for marker in [0x00, 0x07, 0x09, 0xff] {
            let mut bad = sig;
            bad[0] = marker;
            assert!(SessionSignature::parse(&bad).is_none());
            assert!(!is_session_signature(&bad));
        }
    }

    #[test]
    fn every_byte_round_trips() {
        for i in 1..SESSION_SIGNATURE_LEN {
            let mut sig = sample().encode();
            sig[i] ^= 0xff;
            let parsed = SessionSignature::parse(&sig).expect("layout");
            assert_eq!(parsed.encode(), sig, "byte {i}");
            assert_ne!(parsed, sample(), "byte {i}");
        }
    }
}
