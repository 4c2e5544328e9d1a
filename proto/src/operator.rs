//! The ceilings the TA applies to the operator's transactions (`OperatorSignRevokeSession`).
//!
//! The host chooses the chain fields of the operator's `revokeSession` transaction (nonce, gas
//! limit, fees); the TA builds its call data. Without ceilings, whoever can call the TA could
//! have it sign transactions with any gas limit and fee, and with fresh nonces burn the
//! operator account's ETH (or hand it to a block builder as priority fees). So the TA refuses,
//! with [`crate::TaError::OperatorTxRefused`] naming the limit:
//!
//! * a gas limit above [`MAX_GAS_LIMIT`];
//! * a max fee per gas above [`MAX_FEE_PER_GAS`];
//! * a max priority fee per gas above the max fee per gas (the node would refuse it anyway);
//! * a transaction whose maximum cost (`gas_limit × max_fee_per_gas`) does not fit the spend
//!   budget: the maximum costs of the transactions signed may add up to [`SPEND_BUDGET_WEI`],
//!   and that allowance refills at [`SPEND_BUDGET_WEI`] per [`SPEND_WINDOW_SECS`] (a leaky
//!   bucket kept in the TA's sealed state, so a TA restart does not reset it).
//!
//! These are constants of the TA build, not settings: the host must not be able to raise them.
//! The companion keeps its transactions under them ([`check_fees`] is the one rule both sides
//! use) and fails clearly when the network's fees are above them.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Highest gas limit of an operator transaction. `revokeSession` costs 31,934 gas, the
/// intrinsic 21,000 included (forge, `test_Revoke_ByRevoker --isolate --gas-report`); the
/// companion asks for the node's estimate plus 20 %. 100,000 leaves room for a costlier
/// validator without letting one transaction buy much gas.
pub const MAX_GAS_LIMIT: u64 = 100_000;

/// Highest max fee per gas of an operator transaction: 200 gwei. Mainnet's base fee has been far
/// below this except in rare spikes; the companion offers at most this and refuses to sign when
/// the network's base fee is above it (the transaction could not be included).
pub const MAX_FEE_PER_GAS: u128 = 200_000_000_000;

/// The spend budget: the maximum costs (`gas_limit × max_fee_per_gas`) of the operator
/// transactions the TA signs may add up to 0.1 ETH, refilled at that rate per
/// [`SPEND_WINDOW_SECS`]. At the ceilings one transaction may cost 0.02 ETH (5 per budget); the
/// companion's usual `revokeSession` (about 38,000 gas at twice the base fee plus the tip, e.g.
/// 21 gwei) costs about 0.0008 ETH (over 100 a day).
pub const SPEND_BUDGET_WEI: u128 = 100_000_000_000_000_000;

/// The time over which the spend budget refills completely: one day (TA clock).
pub const SPEND_WINDOW_SECS: u64 = 86_400;

// One transaction at the ceilings must fit an empty budget.
const _: () = assert!(MAX_GAS_LIMIT as u128 * MAX_FEE_PER_GAS <= SPEND_BUDGET_WEI);

/// Which operator-transaction limit a request broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum OperatorLimit {
    /// The gas limit is above [`MAX_GAS_LIMIT`].
    #[error("gas limit {requested} is above the TA's ceiling of {max}")]
    GasLimit {
        /// The gas limit asked for.
        requested: u64,
        /// The ceiling.
        max: u64,
    },
    /// The max fee per gas is above [`MAX_FEE_PER_GAS`].
    #[error("max fee per gas {requested} wei is above the TA's ceiling of {max} wei")]
    MaxFeePerGas {
        /// The max fee per gas asked for.
        requested: u128,
        /// The ceiling.
        max: u128,
    },
    /// The max priority fee per gas is above the max fee per gas.
    #[error("max priority fee per gas {priority} wei is above the max fee per gas {max_fee} wei")]
    PriorityAboveMaxFee {
        /// The max priority fee per gas asked for.
        priority: u128,
        /// The max fee per gas asked for.
        max_fee: u128,
    },
    /// The transaction's maximum cost does not fit what is left of the spend budget.
    #[error(
        "the transaction's maximum cost of {requested} wei is above the {available} wei left \
         of the operator's spend budget ({budget} wei per {window_secs} s); it fits from \
         {retry_at} (unix seconds, TA clock)"
    )]
    SpendBudget {
        /// `gas_limit × max_fee_per_gas` of the refused transaction.
        requested: u128,
        /// What is left of the budget now.
        available: u128,
        /// [`SPEND_BUDGET_WEI`].
        budget: u128,
        /// [`SPEND_WINDOW_SECS`].
        window_secs: u64,
        /// When enough of the budget has refilled for this transaction.
        retry_at: u64,
    },
}

/// Check the per-transaction ceilings; returns the transaction's maximum cost in wei
/// (`gas_limit × max_fee_per_gas`, what the spend budget is charged).
pub fn check_fees(
    gas_limit: u64,
    max_fee_per_gas: u128,
    max_priority_fee_per_gas: u128,
) -> Result<u128, OperatorLimit> {
    if gas_limit > MAX_GAS_LIMIT {
        return Err(OperatorLimit::GasLimit {
            requested: gas_limit,
            max: MAX_GAS_LIMIT,
        });
    }
    if max_fee_per_gas > MAX_FEE_PER_GAS {
        return Err(OperatorLimit::MaxFeePerGas {
            requested: max_fee_per_gas,
            max: MAX_FEE_PER_GAS,
        });
    }
    if max_priority_fee_per_gas > max_fee_per_gas {
        return Err(OperatorLimit::PriorityAboveMaxFee {
            priority: max_priority_fee_per_gas,
            max_fee: max_fee_per_gas,
        });
    }
    // At most 1e5 × 2e11: no overflow.
    Ok(u128::from(gas_limit) * max_fee_per_gas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_are_inclusive() {
        assert_eq!(
            check_fees(MAX_GAS_LIMIT, MAX_FEE_PER_GAS, MAX_FEE_PER_GAS),
            Ok(20_000_000_000_000_000)
        );
        assert_eq!(
            check_fees(MAX_GAS_LIMIT + 1, 1, 1),
            Err(OperatorLimit::GasLimit {
                requested: MAX_GAS_LIMIT + 1,
                max: MAX_GAS_LIMIT
            })
        );
        assert_eq!(
            check_fees(21_000, MAX_FEE_PER_GAS + 1, 0),
            Err(OperatorLimit::MaxFeePerGas {
                requested: MAX_FEE_PER_GAS + 1,
                max: MAX_FEE_PER_GAS
            })
        );
        assert_eq!(
            check_fees(21_000, 10, 11),
            Err(OperatorLimit::PriorityAboveMaxFee {
                priority: 11,
                max_fee: 10
            })
        );
    }
}
