//! EntryPoint nonce keys: one independent nonce sequence per signer of an account.
//!
//! An EntryPoint nonce is `key (192 bits) ‖ sequence (64 bits)`; each key of a sender has its own
//! sequence (`EntryPoint.getNonce(sender, key)`). The owner uses key 0 ([`NonceKey::OWNER`]); an
//! agent uses a key derived from its key address ([`NonceKey::for_agent`]), so two agents of one
//! account never compete for the same sequence, and an agent's key is the same whatever index or
//! label the companion gives it.

use alloy::primitives::{aliases::U192, Address, U256};

/// A 192-bit EntryPoint nonce key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NonceKey(pub U192);

impl NonceKey {
    /// The owner's key: 0.
    pub const OWNER: NonceKey = NonceKey(U192::ZERO);

    /// The key of an agent: its 160-bit key address, as a number. Distinct agent addresses give
    /// distinct keys, and no agent address (never zero) gives the owner's key 0.
    pub fn for_agent(agent_key: Address) -> Self {
        NonceKey(U192::from_be_slice(agent_key.as_slice()))
    }

    /// The full nonce of `sequence` under this key: `key << 64 | sequence`.
    pub fn nonce(self, sequence: u64) -> U256 {
        (U256::from(self.0) << 64) | U256::from(sequence)
    }

    /// Splits a full nonce into its key and sequence.
    pub fn split(nonce: U256) -> (NonceKey, u64) {
        let key = U192::from(nonce >> 64);
        let sequence = (nonce & U256::from(u64::MAX)).to::<u64>();
        (NonceKey(key), sequence)
    }
}

impl From<NonceKey> for U192 {
    fn from(key: NonceKey) -> Self {
        key.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::address;

    #[test]
    fn agent_keys_are_distinct_and_never_the_owners() {
        let a = NonceKey::for_agent(address!("0x4b39F7b0624b9dB86AD293686bc38B903142dbBc"));
        let b = NonceKey::for_agent(address!("0x71b4a2d9B91726bdb5849D928967A1654D7F3de7"));
        assert_ne!(a, b);
        assert_ne!(a, NonceKey::OWNER);
        assert_eq!(
            a.0,
            U192::from_str_radix("4b39F7b0624b9dB86AD293686bc38B903142dbBc", 16).unwrap()
        );
    }

    #[test]
    fn nonce_composition() {
        let key = NonceKey(U192::from(7));
        let n = key.nonce(42);
        assert_eq!(n, U256::from(7) << 64 | U256::from(42));
        assert_eq!(NonceKey::split(n), (key, 42));
        assert_eq!(NonceKey::OWNER.nonce(3), U256::from(3));
        let max = NonceKey(U192::MAX).nonce(u64::MAX);
        assert_eq!(max, U256::MAX);
        assert_eq!(NonceKey::split(max), (NonceKey(U192::MAX), u64::MAX));
    }
}
