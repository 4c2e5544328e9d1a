//! The operator's spend budget: the leaky bucket behind
//! [`kms_proto::operator::SPEND_BUDGET_WEI`].
//!
//! Every operator transaction the TA signs is charged its maximum cost
//! (`gas_limit × max_fee_per_gas`, what it could burn if mined, whatever it ends up using). The
//! charges fill a bucket of [`SPEND_BUDGET_WEI`] that drains linearly, completely in
//! [`SPEND_WINDOW_SECS`]; a transaction that would overflow it is refused with the time it
//! would fit. So at most one budget can be spent at once, and one budget per window
//! sustained (at most two within any one window: a full bucket's worth plus what drains
//! meanwhile).
//!
//! The bucket is kept in sealed storage ([`SPEND_KEY`]) and written, in the state's version
//! order like every other write, *before* the signature is returned: a TA restart, a crash or a
//! lost answer never gives budget back. Limits of the clock: the TA's time is the host's REE
//! time, which cannot go backwards past a time the TA has seen (see [`crate::clock`]) but can
//! be moved forward. Moving it forward by a window refills at most one budget, and does so for
//! good (the time floor is sealed): every credential and pending nonce ages with it. Restoring an
//! older sealed state brings back that state's bucket, but only through `AcceptRestore`.

use kms_proto::operator::{OperatorLimit, SPEND_BUDGET_WEI, SPEND_WINDOW_SECS};
use serde::{Deserialize, Serialize};

/// Storage key of the spend bucket.
pub(crate) const SPEND_KEY: &str = "operator-spend";

/// The spend bucket as sealed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SpendBucket {
    pub version: u8,
    /// Wei in the bucket at `updated_at`.
    pub level: u128,
    /// TA time (unix seconds) of `level`.
    pub updated_at: u64,
}

impl SpendBucket {
    /// The level at `now`, after draining since `updated_at` (never below 0; rounded so the
    /// bucket drains no faster than [`SPEND_BUDGET_WEI`] per [`SPEND_WINDOW_SECS`]).
    pub(crate) fn level_at(&self, now: u64) -> u128 {
        let elapsed = now.saturating_sub(self.updated_at);
        if elapsed >= SPEND_WINDOW_SECS {
            return 0;
        }
        // elapsed < 86,400 and the budget is 1e17: no overflow.
        let drained = SPEND_BUDGET_WEI * u128::from(elapsed) / u128::from(SPEND_WINDOW_SECS);
        self.level.saturating_sub(drained)
    }

    /// The bucket after charging `cost` at `now`, or the refusal (nothing charged).
    pub(crate) fn charge(&self, cost: u128, now: u64) -> Result<SpendBucket, OperatorLimit> {
        let level = self.level_at(now);
        let available = SPEND_BUDGET_WEI.saturating_sub(level);
        if cost > available {
            // The excess drains in excess × window / budget seconds (rounded up).
            let excess = cost - available;
            let window = u128::from(SPEND_WINDOW_SECS);
            let wait = (excess.saturating_mul(window)).div_ceil(SPEND_BUDGET_WEI);
            let wait = u64::try_from(wait).unwrap_or(u64::MAX);
            return Err(OperatorLimit::SpendBudget {
                requested: cost,
                available,
                budget: SPEND_BUDGET_WEI,
                window_secs: SPEND_WINDOW_SECS,
                retry_at: now.saturating_add(wait),
            });
        }
        Ok(SpendBucket {
            version: self.version,
            level: level + cost,
            updated_at: now.max(self.updated_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000;

    #[test]
    fn fills_to_the_budget_and_no_further() {
        let b = SpendBucket::default();
        let b = b.charge(SPEND_BUDGET_WEI - 1, T).unwrap();
        let b = b.charge(1, T).unwrap();
        assert_eq!(b.level, SPEND_BUDGET_WEI);
        let err = b.charge(1, T).unwrap_err();
        assert!(
            matches!(err, OperatorLimit::SpendBudget { requested: 1, available: 0, retry_at, .. } if retry_at == T + 1),
            "{err:?}"
        );
    }

    #[test]
    fn drains_linearly_and_completely_in_a_window() {
        let full = SpendBucket {
            version: 1,
            level: SPEND_BUDGET_WEI,
            updated_at: T,
        };
        assert_eq!(
            full.level_at(T + SPEND_WINDOW_SECS / 2),
            SPEND_BUDGET_WEI / 2
        );
        assert_eq!(full.level_at(T + SPEND_WINDOW_SECS), 0);
        assert_eq!(full.level_at(u64::MAX), 0);
        // A clock reading before the last update drains nothing.
        assert_eq!(full.level_at(T - 100), SPEND_BUDGET_WEI);
        // The refusal's retry time is exact: the charge fits then, not a second before.
        let half = SPEND_BUDGET_WEI / 2;
        let Err(OperatorLimit::SpendBudget { retry_at, .. }) = full.charge(half, T) else {
            panic!("a full bucket took a charge");
        };
        assert_eq!(retry_at, T + SPEND_WINDOW_SECS / 2);
        assert!(full.charge(half, retry_at - 1).is_err());
        assert_eq!(full.charge(half, retry_at).unwrap().level, SPEND_BUDGET_WEI);
    }
}
