//! Gas limits of an agent's operation reused from an earlier estimate of the same call shape,
//! instead of asking the bundler (`eth_estimateUserOperationGas`, the longest round trip of an
//! intent) every time.
//!
//! A [`CallShape`] is what decides an operation's gas apart from the state it runs on: the
//! account (its code and the validator's path), the agent key, and per call the target, the function selector, whether native value
//! is sent, and the calldata's length. The [`GasCache`] keeps, per shape, the limits of the last
//! operation of that shape built from a real estimate (with the configured [`GasBuffers`] on
//! top: that is the margin reused), with the budget period of its nonce lane: a lane's first
//! operation writes a new nonce slot, so limits are reused only in the period they were
//! estimated in.
//!
//! Reusing them never weakens a check, because each limit is checked before or on submission:
//!
//! - `callGasLimit` is what the bundler does not check on submission (an execution that no longer
//!   fits would revert on chain and the agent would pay for it). Before a reused one is signed,
//!   [`crate::client::ChainClient::execution_fits`] runs the operation's callData as the
//!   EntryPoint would (`eth_call` from the EntryPoint to the account, at the latest block) with
//!   that much gas for the account's frame; if it reverts or runs out of gas, the operation is
//!   estimated by the bundler as before.
//! - `verificationGasLimit` and `preVerificationGas` are checked by the bundler again on
//!   `eth_sendUserOperation`; a refusal for gas ([`is_gas_refusal`]) is what the caller answers
//!   by estimating, building and signing once more, and dropping the shape's entry.
//!
//! The companion's intents pipeline (`companion/server/src/service/intents.rs`) is the user.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, FixedBytes};

use crate::account::{AccountKind, Call};
use crate::bundler::BundlerError;
use crate::client::Fees;
#[cfg(doc)]
use crate::client::GasBuffers;
use crate::userop::v0_7::GasLimits;

/// Most shapes kept; beyond it the cache is emptied and refilled (it is only a shortcut).
pub const MAX_SHAPES: usize = 4096;

/// What decides the gas of an agent's operation apart from the chain's state (see the module
/// docs). Two operations of one shape differ only in their nonce, fees, recipients or amounts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallShape {
    /// The account.
    pub account: Address,
    /// Its kind (callData encoding and the validator's path).
    pub kind: AccountKind,
    /// The agent key (its session's storage and nonce key).
    pub agent: Address,
    /// Per call: target, selector (zero without 4 bytes of data), value sent, data length.
    pub calls: Vec<(Address, FixedBytes<4>, bool, usize)>,
}

impl CallShape {
    /// The shape of `calls` from `account` of `kind` by `agent`.
    pub fn of(account: Address, kind: AccountKind, agent: Address, calls: &[Call]) -> Self {
        CallShape {
            account,
            kind,
            agent,
            calls: calls
                .iter()
                .map(|c| {
                    let selector = c
                        .data
                        .get(..4)
                        .map(FixedBytes::<4>::from_slice)
                        .unwrap_or_default();
                    (c.to, selector, !c.value.is_zero(), c.data.len())
                })
                .collect(),
        }
    }
}

/// What [`GasCache`] keeps for one shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reusable {
    /// The budget period of the estimated operation's nonce lane (0 without periods).
    pub period_index: u64,
    /// Its gas limits, buffers included.
    pub limits: GasLimits,
}

/// Gas limits per [`CallShape`], from real estimates (see the module docs). Shared by the
/// requests of one process.
#[derive(Debug, Default)]
pub struct GasCache {
    shapes: Mutex<HashMap<CallShape, Reusable>>,
}

impl GasCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The limits last recorded for `shape`.
    pub fn get(&self, shape: &CallShape) -> Option<Reusable> {
        self.lock().get(shape).copied()
    }

    /// Records `limits` (of an operation built from a real estimate) for `shape`.
    pub fn insert(&self, shape: CallShape, reusable: Reusable) {
        let mut shapes = self.lock();
        if shapes.len() >= MAX_SHAPES && !shapes.contains_key(&shape) {
            shapes.clear();
        }
        shapes.insert(shape, reusable);
    }

    /// Forgets `shape` (its limits no longer fit).
    pub fn remove(&self, shape: &CallShape) {
        self.lock().remove(shape);
    }

    /// How many shapes are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no shape is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CallShape, Reusable>> {
        // A panic while holding the lock leaves a map that is still a valid cache.
        self.shapes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The last fees read ([`crate::client::ChainClient::fees`]), reused for a short while by
/// [`crate::client::ChainClient::recent_fees`]: the bundler's gas price is a round trip of its
/// own beside the node's reads. A price the bundler no longer takes is refused on submission
/// ([`is_gas_refusal`]), which the caller answers with fresh fees.
#[derive(Debug, Default)]
pub struct RecentFees {
    last: Mutex<Option<(Instant, Fees)>>,
}

impl RecentFees {
    /// Records `fees`, read at `at`.
    pub fn put(&self, at: Instant, fees: Fees) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, fees));
    }

    /// The fees recorded, if read at most `max_age` before `now`.
    pub fn get(&self, now: Instant, max_age: Duration) -> Option<Fees> {
        let last = *self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.filter(|(at, _)| now.saturating_duration_since(*at) <= max_age)
            .map(|(_, fees)| fees)
    }
}

/// Whether the bundler refused an operation on submission for its gas limits or fees, i.e. for
/// what a fresh estimate and gas price would change: Alto's `-32602` "preVerificationGas is not
/// enough", "maxFeePerGas must be at least", "maxPriorityFeePerGas must be at least", and the
/// EntryPoint's validation out of its gas (`AA26 over verificationGasLimit`, `AA40 over
/// verificationGasLimit` of a paymaster, `AA13 initCode failed or OOG`). Anything else (a
/// session refusal, a nonce, a signature) is not.
pub fn is_gas_refusal(e: &BundlerError) -> bool {
    if matches!(e.aa_code(), Some("AA26" | "AA40" | "AA13")) {
        return true;
    }
    match e {
        BundlerError::Rpc {
            code: -32602,
            message,
            ..
        } => {
            message.starts_with("preVerificationGas is not enough")
                || message.starts_with("maxFeePerGas must be at least")
                || message.starts_with("maxPriorityFeePerGas must be at least")
        }
        _ => false,
    }
}

/// The intrinsic gas of a transaction carrying `data` (21,000 plus 4 per zero byte and 16 per
/// other byte): what a top-level call spends before its code runs, so that a call given this
/// plus `g` gives its frame exactly `g`.
pub fn intrinsic_gas(data: &[u8]) -> u64 {
    data.iter().fold(21_000u64, |g, b| {
        g.saturating_add(if *b == 0 { 4 } else { 16 })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{bytes, Bytes, U256};

    fn call(to: u8, value: u64, data: Bytes) -> Call {
        Call {
            to: Address::repeat_byte(to),
            value: U256::from(value),
            data,
        }
    }

    #[test]
    fn the_shape_keeps_target_selector_value_and_length_not_amounts() {
        let acc = Address::repeat_byte(0xaa);
        let agent = Address::repeat_byte(0xbb);
        let k = AccountKind::AgentAccount;
        let a = CallShape::of(acc, k, agent, &[call(1, 5, Bytes::new())]);
        // Another amount of native value: the same shape.
        assert_eq!(a, CallShape::of(acc, k, agent, &[call(1, 7, Bytes::new())]));
        // No value, another target, kind, agent or account: another shape.
        for other in [
            CallShape::of(acc, k, agent, &[call(1, 0, Bytes::new())]),
            CallShape::of(acc, k, agent, &[call(2, 5, Bytes::new())]),
            CallShape::of(
                acc,
                AccountKind::Erc7579,
                agent,
                &[call(1, 5, Bytes::new())],
            ),
            CallShape::of(acc, k, acc, &[call(1, 5, Bytes::new())]),
            CallShape::of(agent, k, agent, &[call(1, 5, Bytes::new())]),
            CallShape::of(
                acc,
                k,
                agent,
                &[call(1, 5, Bytes::new()), call(1, 5, Bytes::new())],
            ),
        ] {
            assert_ne!(a, other);
        }
        // Same selector and length, other arguments: the same shape; another selector or
        // length: another.
        let t1 = CallShape::of(acc, k, agent, &[call(1, 0, bytes!("a9059cbb0001"))]);
        assert_eq!(
            t1,
            CallShape::of(acc, k, agent, &[call(1, 0, bytes!("a9059cbbffff"))])
        );
        assert_ne!(
            t1,
            CallShape::of(acc, k, agent, &[call(1, 0, bytes!("095ea7b30001"))])
        );
        assert_ne!(
            t1,
            CallShape::of(acc, k, agent, &[call(1, 0, bytes!("a9059cbb000102"))])
        );
    }

    #[test]
    fn the_cache_keeps_replaces_and_forgets_per_shape() {
        let cache = GasCache::new();
        let shape = CallShape::of(
            Address::ZERO,
            AccountKind::AgentAccount,
            Address::ZERO,
            &[call(1, 1, Bytes::new())],
        );
        assert_eq!(cache.get(&shape), None);
        let limits = Reusable {
            period_index: 3,
            limits: GasLimits {
                call_gas_limit: 10,
                ..GasLimits::default()
            },
        };
        cache.insert(shape.clone(), limits);
        assert_eq!(cache.get(&shape), Some(limits));
        let more = Reusable {
            period_index: 4,
            ..limits
        };
        cache.insert(shape.clone(), more);
        assert_eq!(cache.get(&shape), Some(more));
        cache.remove(&shape);
        assert_eq!(cache.get(&shape), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = GasCache::new();
        let shape = |i: u64| {
            CallShape::of(
                Address::left_padding_from(&i.to_be_bytes()),
                AccountKind::AgentAccount,
                Address::ZERO,
                &[call(1, 1, Bytes::new())],
            )
        };
        let r = Reusable {
            period_index: 0,
            limits: GasLimits::default(),
        };
        for i in 0..MAX_SHAPES as u64 {
            cache.insert(shape(i), r);
        }
        assert_eq!(cache.len(), MAX_SHAPES);
        // Replacing a kept shape keeps the others; a new one past the bound starts over.
        cache.insert(shape(0), r);
        assert_eq!(cache.len(), MAX_SHAPES);
        cache.insert(shape(MAX_SHAPES as u64), r);
        assert_eq!(cache.len(), 1);
    }

    fn rpc(code: i64, message: &str) -> BundlerError {
        BundlerError::Rpc {
            code,
            message: message.into(),
            data: None,
        }
    }

    #[test]
    fn only_gas_and_fee_refusals_count_as_gas_refusals() {
        // Alto's words (eth_sendUserOperation.js, rpcHandler.js) and the EntryPoint's codes.
        for gas in [
            rpc(-32602, "preVerificationGas is not enough, required: 50000, got: 40000"),
            rpc(-32602, "maxFeePerGas must be at least 2000 (current maxFeePerGas: 1000) - use pimlico_getUserOperationGasPrice to get the current gas price"),
            rpc(-32602, "maxPriorityFeePerGas must be at least 2 (current maxPriorityFeePerGas: 1) - use pimlico_getUserOperationGasPrice to get the current gas price"),
            rpc(-32500, "UserOperation failed validation with reason: AA26 over verificationGasLimit"),
            rpc(-32500, "UserOperation failed validation with reason: AA40 over verificationGasLimit"),
        ] {
            assert!(is_gas_refusal(&gas), "{gas}");
        }
        for other in [
            rpc(
                -32500,
                "UserOperation failed validation with reason: AA25 invalid account nonce",
            ),
            rpc(
                -32500,
                "UserOperation failed validation with reason: AA24 signature error",
            ),
            rpc(
                -32500,
                "UserOperation failed validation with reason: AA23 reverted",
            ),
            rpc(-32602, "Already known"),
            // The same words under another code are not Alto's refusal.
            rpc(
                -32603,
                "preVerificationGas is not enough, required: 1, got: 0",
            ),
            BundlerError::Http {
                status: 503,
                body: String::new(),
            },
        ] {
            assert!(!is_gas_refusal(&other), "{other}");
        }
    }

    #[test]
    fn recent_fees_are_given_only_within_their_age() {
        let recent = RecentFees::default();
        let t0 = Instant::now();
        let age = Duration::from_secs(1);
        assert_eq!(recent.get(t0, age), None);
        let fees = Fees {
            max_fee_per_gas: 7,
            max_priority_fee_per_gas: 2,
        };
        recent.put(t0, fees);
        assert_eq!(recent.get(t0, age), Some(fees));
        assert_eq!(recent.get(t0 + age, age), Some(fees));
        assert_eq!(recent.get(t0 + age + Duration::from_millis(1), age), None);
        // Newer fees replace older ones.
        let newer = Fees {
            max_fee_per_gas: 9,
            ..fees
        };
        recent.put(t0 + age, newer);
        assert_eq!(recent.get(t0 + age, age), Some(newer));
    }

    #[test]
    fn intrinsic_gas_counts_zero_and_other_bytes() {
        assert_eq!(intrinsic_gas(&[]), 21_000);
        assert_eq!(intrinsic_gas(&[0, 0, 1]), 21_000 + 4 + 4 + 16);
    }
}
