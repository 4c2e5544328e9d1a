//! EntryPoint nonce keys: one independent nonce sequence per signer of an account.
//!
//! An EntryPoint nonce is `key (192 bits) ‖ sequence (64 bits)`; each key of a sender has its own
//! sequence (`EntryPoint.getNonce(sender, key)`). The owner uses key 0 ([`NonceKey::OWNER`]); an
//! agent uses a key derived from its key address ([`NonceKey::for_agent`]), so two agents of one
//! account never compete for the same sequence, and an agent's key is the same whatever index or
//! label the companion gives it. `SessionKeyValidator` refuses an agent's operation in any other
//! lane. An agent whose session has a periodic budget names the period in the 32 bits above its
//! address ([`NonceKey::for_agent_period`]): one lane per period.
//!
//! On a third-party ERC-7579 account the account picks the validator module by the key's top 20
//! bytes and leaves 4: an agent's key is `validator (160 bits) ‖ lane (16) ‖ period (16)`
//! ([`NonceKey::for_module_lane`]), the lane given by the validator at the key's first grant on
//! the account (`getSession(…).lane`). [`AgentLane`] is an agent's place on either kind.
//!
//! [`NonceTracker`] serialises the operations of one (sender, key) inside one process: one is
//! built, signed and submitted at a time. It also remembers the last one submitted: for callers
//! that wait for its inclusion before the next ([`crate::client::ChainClient::next_nonce`]), or
//! that expect the next sequence after it (the companion's intent pipeline has the bundler
//! estimate that one while it reads the chain, and estimates again if the chain says otherwise).
//! The companion's agent intents do not wait: each takes the sequence after the agent's open
//! operations in its lane (see the companion's intent pipeline). A bundler takes a sequence ahead
//! of the chain's while the earlier ones are in its mempool (it simulates them first); for the
//! moment an earlier one is out of the mempool being bundled and not on chain yet, it refuses the
//! next one's estimate and submission with AA25, which the caller retries. Different agents
//! (different keys) proceed in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use alloy::primitives::{aliases::U192, Address, B256, U256};

use crate::account::AccountKind;

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

    /// The key of an agent's operations in budget period `period_index`: `period_index << 160 |
    /// agent` (the key of period 0 is [`NonceKey::for_agent`]'s).
    pub fn for_agent_period(agent_key: Address, period_index: u32) -> Self {
        NonceKey(Self::for_agent(agent_key).0 | (U192::from(period_index) << 160))
    }

    /// The key of an agent's operations on an ERC-7579 account with `validator` as its module:
    /// `validator << 32 | lane << 16 | period_index`. `lane` is the one the validator gave the
    /// agent key on that account (never 0 once granted); the validator refuses any other lane, and
    /// a period index other than 0 on a session without a period.
    pub fn for_module_lane(validator: Address, lane: u16, period_index: u16) -> Self {
        NonceKey(
            (U192::from_be_slice(validator.as_slice()) << 32)
                | (U192::from(lane) << 16)
                | U192::from(period_index),
        )
    }

    /// The parts of a module-path key: (module address, lane, period index). Meaningful only for
    /// keys made by [`NonceKey::for_module_lane`] (ERC-7579 accounts), not for `AgentAccount`'s.
    pub fn module_parts(self) -> (Address, u16, u16) {
        let low = self.0.as_limbs()[0]; // the low 64 bits; the low 32 are kept
        let top: U192 = self.0 >> 32;
        let module = Address::from_slice(&top.to_be_bytes::<24>()[4..]);
        (module, (low >> 16) as u16, low as u16)
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

/// A budget period index that does not fit the nonce key of the account's kind (32 bits on
/// `AgentAccount`, 16 on an ERC-7579 account).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("budget period {period_index} does not fit a {kind} nonce key (at most {max})")]
pub struct PeriodOutOfRange {
    /// The period index asked for.
    pub period_index: u64,
    /// The largest one the kind's key holds.
    pub max: u64,
    /// The account kind.
    pub kind: AccountKind,
}

/// An agent's place in an account's nonce space, by the account's kind: what its operations'
/// nonce keys are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentLane {
    /// On `AgentAccount`: the agent key's own address ([`NonceKey::for_agent_period`]).
    Key(Address),
    /// On an ERC-7579 account: the validator module and the lane it gave the key there
    /// ([`NonceKey::for_module_lane`]).
    Module {
        /// The validator module (`SessionKeyValidator`).
        validator: Address,
        /// The key's lane on the account (`getSession(account, key).lane`).
        lane: u16,
    },
}

impl AgentLane {
    /// The account kind this lane belongs to.
    pub fn kind(self) -> AccountKind {
        match self {
            AgentLane::Key(_) => AccountKind::AgentAccount,
            AgentLane::Module { .. } => AccountKind::Erc7579,
        }
    }

    /// The nonce key of period `period_index` (0 for a session without a period).
    pub fn key(self, period_index: u64) -> Result<NonceKey, PeriodOutOfRange> {
        let out_of_range = |max: u64| PeriodOutOfRange {
            period_index,
            max,
            kind: self.kind(),
        };
        match self {
            AgentLane::Key(agent) => u32::try_from(period_index)
                .map(|p| NonceKey::for_agent_period(agent, p))
                .map_err(|_| out_of_range(u32::MAX.into())),
            AgentLane::Module { validator, lane } => u16::try_from(period_index)
                .map(|p| NonceKey::for_module_lane(validator, lane, p))
                .map_err(|_| out_of_range(u16::MAX.into())),
        }
    }
}

/// Per (sender, key): a lock held while an operation is built, signed and submitted, and the
/// last operation submitted under it.
#[derive(Debug, Default)]
pub struct NonceTracker {
    slots: Mutex<HashMap<(Address, NonceKey), Slot>>,
}

/// One (sender, key): its lock and what is in flight.
type Slot = Arc<tokio::sync::Mutex<Option<InFlight>>>;

/// An operation submitted and maybe not included yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    /// Its nonce.
    pub nonce: U256,
    /// Its userOpHash.
    pub user_op_hash: B256,
}

/// Exclusive use of one (sender, key) until dropped; see [`NonceTracker::lock`].
#[derive(Debug)]
pub struct NonceGuard {
    sender: Address,
    key: NonceKey,
    in_flight: tokio::sync::OwnedMutexGuard<Option<InFlight>>,
}

impl NonceTracker {
    /// A tracker with nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for exclusive use of (`sender`, `key`). Hold the guard from reading the nonce
    /// until the operation is submitted (or abandoned).
    pub async fn lock(&self, sender: Address, key: NonceKey) -> NonceGuard {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(slots.entry((sender, key)).or_default())
        };
        NonceGuard {
            sender,
            key,
            in_flight: slot.lock_owned().await,
        }
    }
}

impl NonceGuard {
    /// The sender.
    pub fn sender(&self) -> Address {
        self.sender
    }

    /// The key.
    pub fn key(&self) -> NonceKey {
        self.key
    }

    /// The last operation submitted under this (sender, key), if not cleared since.
    pub fn in_flight(&self) -> Option<InFlight> {
        *self.in_flight
    }

    /// Whether the in-flight operation (if any) still holds a sequence the chain has not passed:
    /// `on_chain` is the EntryPoint's next nonce for the in-flight operation's key (an operation
    /// under another key never blocks).
    pub fn blocks(&self, on_chain: U256) -> Option<InFlight> {
        let (chain_key, chain_seq) = NonceKey::split(on_chain);
        self.in_flight.filter(|f| {
            let (key, seq) = NonceKey::split(f.nonce);
            key == chain_key && seq >= chain_seq
        })
    }

    /// Records that the operation with `nonce` and `user_op_hash` was accepted by the bundler.
    pub fn submitted(&mut self, nonce: U256, user_op_hash: B256) {
        *self.in_flight = Some(InFlight {
            nonce,
            user_op_hash,
        });
    }

    /// Forgets the operation in flight.
    pub fn clear(&mut self) {
        *self.in_flight = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::address;

    #[tokio::test]
    async fn tracker_remembers_the_operation_in_flight_and_serialises_a_key() {
        let tracker = NonceTracker::new();
        let sender = address!("0x1111111111111111111111111111111111111111");
        let key = NonceKey::for_agent(address!("0x4b39F7b0624b9dB86AD293686bc38B903142dbBc"));
        let other = NonceKey::for_agent(address!("0x71b4a2d9B91726bdb5849D928967A1654D7F3de7"));
        let hash = B256::repeat_byte(7);
        {
            let mut g = tracker.lock(sender, key).await;
            assert_eq!(g.blocks(key.nonce(0)), None);
            g.submitted(key.nonce(0), hash);
        }
        {
            let mut g = tracker.lock(sender, key).await;
            let f = InFlight {
                nonce: key.nonce(0),
                user_op_hash: hash,
            };
            // The chain has not passed it yet: it blocks the next one.
            assert_eq!(g.blocks(key.nonce(0)), Some(f));
            // Once the chain is past it, it does not; nor does another key's nonce.
            assert_eq!(g.blocks(key.nonce(1)), None);
            assert_eq!(g.blocks(other.nonce(0)), None);
            assert_eq!(g.in_flight(), Some(f));
            g.clear();
            assert_eq!(g.in_flight(), None);
        }
        // Another key is independent, and locking it does not wait for this one.
        let held = tracker.lock(sender, key).await;
        let g = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tracker.lock(sender, other),
        )
        .await
        .expect("independent keys do not block each other");
        assert_eq!((g.sender(), g.key()), (sender, other));
        // The same key waits for the holder.
        assert!(tokio::time::timeout(
            std::time::Duration::from_millis(50),
            tracker.lock(sender, key)
        )
        .await
        .is_err());
        drop(held);
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(5), tracker.lock(sender, key))
                .await
                .is_ok()
        );
    }

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
    fn period_lanes_keep_the_agent_in_the_low_bits() {
        let agent = address!("0x4b39F7b0624b9dB86AD293686bc38B903142dbBc");
        assert_eq!(
            NonceKey::for_agent_period(agent, 0),
            NonceKey::for_agent(agent)
        );
        let p7 = NonceKey::for_agent_period(agent, 7);
        assert_eq!(p7.0 >> 160, U192::from(7));
        assert_eq!(
            p7.0 & ((U192::from(1) << 160) - U192::from(1)),
            NonceKey::for_agent(agent).0
        );
        let max = NonceKey::for_agent_period(agent, u32::MAX);
        assert_eq!(max.0 >> 160, U192::from(u32::MAX));
        assert_ne!(max, NonceKey::OWNER);
    }

    /// The forge tests' `_moduleKey(lane, period)`: `uint192(uint160(validator)) << 32 |
    /// uint192(lane) << 16 | period`.
    #[test]
    fn module_lanes_are_validator_lane_period() {
        let validator = address!("0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0");
        let key = NonceKey::for_module_lane(validator, 2, 7);
        assert_eq!(
            key.0,
            U192::from_str_radix("9fE46736679d2D9a65F0992F2272dE9f3c7fa6e000020007", 16).unwrap()
        );
        assert_eq!(key.module_parts(), (validator, 2, 7));
        // The account reads the module from the nonce's top 20 bytes.
        let nonce = key.nonce(5).to_be_bytes::<32>();
        assert_eq!(&nonce[..20], validator.as_slice());
        assert_eq!(&nonce[20..24], &[0, 2, 0, 7]);
        assert_eq!(NonceKey::split(key.nonce(5)), (key, 5));
        assert_ne!(
            NonceKey::for_module_lane(validator, 1, 0),
            NonceKey::for_module_lane(validator, 2, 0)
        );
        assert_eq!(
            NonceKey::for_module_lane(validator, u16::MAX, u16::MAX).module_parts(),
            (validator, u16::MAX, u16::MAX)
        );
    }

    #[test]
    fn agent_lanes_make_their_kinds_keys() {
        let agent = address!("0x4b39F7b0624b9dB86AD293686bc38B903142dbBc");
        let validator = address!("0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0");
        let own = AgentLane::Key(agent);
        assert_eq!(own.kind(), AccountKind::AgentAccount);
        assert_eq!(own.key(0), Ok(NonceKey::for_agent(agent)));
        assert_eq!(own.key(9), Ok(NonceKey::for_agent_period(agent, 9)));
        assert_eq!(own.key(1 << 32).unwrap_err().max, u64::from(u32::MAX));
        let module = AgentLane::Module { validator, lane: 3 };
        assert_eq!(module.kind(), AccountKind::Erc7579);
        assert_eq!(
            module.key(4),
            Ok(NonceKey::for_module_lane(validator, 3, 4))
        );
        let e = module.key(1 << 16).unwrap_err();
        assert_eq!((e.max, e.kind), (u64::from(u16::MAX), AccountKind::Erc7579));
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
