//! Sessions on `SessionKeyValidator`: what the owner grants, what the chain holds, and the
//! companion's pre-check of an intent against it.
//!
//! - [`SessionGrant`]: the fields of `grantSession` and the owner call that registers them.
//! - [`SessionSnapshot`]: one agent key's session on one account as read from the chain (see
//!   [`crate::client::ChainClient::read_session`]), consistent at one block.
//! - [`precheck`]: refuses, with a machine-readable [`RefusalCode`], an intent that the validator
//!   (or the bundler, for the validity window) would reject — before anything is signed.
//!
//! The pre-check is a courtesy and a guard against wasting TA signatures, not a security layer:
//! the chain enforces the same rules whatever the companion decides.

use std::collections::BTreeMap;
use std::fmt;

use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::SolCall;
use kms_contracts::SessionKeyValidator;
use serde::{Deserialize, Serialize};

use crate::account::{total_value, Call};

/// Largest timestamp the validator stores (`uint48`).
pub const MAX_UINT48: u64 = (1 << 48) - 1;

/// The fields of a session grant (`SessionKeyValidator.grantSession`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionGrant {
    /// The agent key address.
    pub key: Address,
    /// The call targets the key may call.
    pub targets: Vec<Address>,
    /// Cap on the cumulative native value the key may move, in wei.
    pub spend_cap: u128,
    /// First valid timestamp (unix seconds).
    pub valid_after: u64,
    /// Last valid timestamp (unix seconds; 0 = no end).
    pub valid_until: u64,
    /// An address that may revoke the session besides the account (the operator key), or zero.
    pub revoker: Address,
}

/// A grant the validator would refuse (checked before building the owner's operation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidGrant {
    /// The key is the zero address.
    #[error("the session key is the zero address")]
    ZeroKey,
    /// A timestamp does not fit 48 bits.
    #[error("{field} = {value} does not fit the validator's 48-bit timestamps")]
    TimestampTooLarge {
        /// `validAfter` or `validUntil`.
        field: &'static str,
        /// The value given.
        value: u64,
    },
    /// `validUntil` is set and not after `validAfter`.
    #[error("validUntil ({valid_until}) must be 0 or after validAfter ({valid_after})")]
    EmptyWindow {
        /// Window start.
        valid_after: u64,
        /// Window end.
        valid_until: u64,
    },
    /// A target is the account itself or the validator, which sessions may never call.
    #[error("{0} cannot be a session target (it is the account or the validator)")]
    ForbiddenTarget(Address),
    /// No target at all: the session could do nothing.
    #[error("a session needs at least one target")]
    NoTargets,
}

impl SessionGrant {
    /// Checks the grant as the validator will, for `account` and `validator`.
    pub fn validate(&self, account: Address, validator: Address) -> Result<(), InvalidGrant> {
        if self.key == Address::ZERO {
            return Err(InvalidGrant::ZeroKey);
        }
        for (field, value) in [
            ("validAfter", self.valid_after),
            ("validUntil", self.valid_until),
        ] {
            if value > MAX_UINT48 {
                return Err(InvalidGrant::TimestampTooLarge { field, value });
            }
        }
        if self.valid_until != 0 && self.valid_until <= self.valid_after {
            return Err(InvalidGrant::EmptyWindow {
                valid_after: self.valid_after,
                valid_until: self.valid_until,
            });
        }
        if self.targets.is_empty() {
            return Err(InvalidGrant::NoTargets);
        }
        if let Some(t) = self
            .targets
            .iter()
            .find(|t| **t == account || **t == validator)
        {
            return Err(InvalidGrant::ForbiddenTarget(*t));
        }
        Ok(())
    }

    /// `grantSession(key, targets, spendCap, validAfter, validUntil, revoker)` call data (for the
    /// validator, called by the account). Timestamps above 48 bits are clamped; call
    /// [`SessionGrant::validate`] first.
    pub fn grant_call_data(&self) -> Bytes {
        SessionKeyValidator::grantSessionCall {
            key: self.key,
            targets: self.targets.clone(),
            spendCap: self.spend_cap,
            validAfter: to_u48(self.valid_after),
            validUntil: to_u48(self.valid_until),
            revoker: self.revoker,
        }
        .abi_encode()
        .into()
    }

    /// The call the account makes to register this grant: `validator.grantSession(…)` with no
    /// value. Encode it with [`crate::account::encode_calls`] (`execute(validator, 0, …)`).
    pub fn owner_call(&self, validator: Address) -> Call {
        Call::new(validator, U256::ZERO, self.grant_call_data())
    }
}

fn to_u48(t: u64) -> alloy::primitives::aliases::U48 {
    alloy::primitives::aliases::U48::from(t.min(MAX_UINT48))
}

/// `SessionKeyValidator.revokeSession(account, key)` call data (what the TA builds for the
/// operator's transaction; used here to estimate its gas).
pub fn revoke_call_data(account: Address, key: Address) -> Bytes {
    SessionKeyValidator::revokeSessionCall { account, key }
        .abi_encode()
        .into()
}

/// A session as stored by the validator (`getSession`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnChainSession {
    /// First valid timestamp.
    pub valid_after: u64,
    /// Last valid timestamp (0 = no end).
    pub valid_until: u64,
    /// The additional revoker (zero = none).
    pub revoker: Address,
    /// The spend cap, in wei.
    pub spend_cap: u128,
    /// Spent so far in this grant, in wei (recorded at validation).
    pub spent: u128,
    /// Grant counter (0 = never granted).
    pub epoch: u64,
    /// Granted and not revoked.
    pub active: bool,
}

impl From<kms_contracts::ISessionKeyValidator::Session> for OnChainSession {
    fn from(s: kms_contracts::ISessionKeyValidator::Session) -> Self {
        Self {
            valid_after: s.validAfter.to::<u64>(),
            valid_until: s.validUntil.to::<u64>(),
            revoker: s.revoker,
            spend_cap: s.spendCap,
            spent: s.spent,
            epoch: s.epoch,
            active: s.active,
        }
    }
}

/// One agent key's session on one account, read at one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionSnapshot {
    /// The account.
    pub account: Address,
    /// The agent key.
    pub key: Address,
    /// The validator it was read from.
    pub validator: Address,
    /// The block it was read at.
    pub block_number: u64,
    /// That block's timestamp.
    pub block_timestamp: u64,
    /// The stored session.
    pub session: OnChainSession,
    /// `remainingBudget(account, key)`.
    pub remaining_budget: U256,
    /// `isTargetAllowed(account, key, target)` for each target asked about.
    pub allowed_targets: BTreeMap<Address, bool>,
}

/// Why an intent is refused before signing. [`RefusalCode::as_str`] is the machine-readable
/// code of the HTTP error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// The agent key has never been granted a session on the account.
    NoSession,
    /// The session was revoked.
    SessionRevoked,
    /// The session's window has not started (with the bundler's margin).
    SessionNotYetValid,
    /// The session's window has ended, or ends too soon for a bundler to accept the operation.
    SessionExpired,
    /// A call goes to a target the session does not allow (or to the account or validator).
    TargetNotAllowed,
    /// The intent's value exceeds the remaining budget minus the value of intents in flight.
    OverBudget,
}

impl RefusalCode {
    /// `"no_session"`, `"session_revoked"`, `"session_not_yet_valid"`, `"session_expired"`,
    /// `"target_not_allowed"` or `"over_budget"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::NoSession => "no_session",
            RefusalCode::SessionRevoked => "session_revoked",
            RefusalCode::SessionNotYetValid => "session_not_yet_valid",
            RefusalCode::SessionExpired => "session_expired",
            RefusalCode::TargetNotAllowed => "target_not_allowed",
            RefusalCode::OverBudget => "over_budget",
        }
    }
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a target is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetProblem {
    /// The target is the account itself.
    IsAccount,
    /// The target is the validator.
    IsValidator,
    /// The target is not on the session's allowlist.
    NotListed,
}

/// An intent the on-chain session would reject, refused before signing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No session for this key on this account.
    #[error("agent key {key} has no session on account {account}")]
    NoSession {
        /// The account.
        account: Address,
        /// The agent key.
        key: Address,
    },
    /// The session was revoked.
    #[error("the session of agent key {key} on account {account} was revoked")]
    SessionRevoked {
        /// The account.
        account: Address,
        /// The agent key.
        key: Address,
    },
    /// The window has not started.
    #[error("the session is valid from {valid_after} (unix seconds); now is {now}")]
    SessionNotYetValid {
        /// Window start.
        valid_after: u64,
        /// The time checked.
        now: u64,
    },
    /// The window has ended or ends within the margin.
    #[error(
        "the session ends at {valid_until} (unix seconds); now is {now} and bundlers need {margin_secs} s of validity left"
    )]
    SessionExpired {
        /// Window end.
        valid_until: u64,
        /// The time checked.
        now: u64,
        /// The margin required.
        margin_secs: u64,
    },
    /// A call's target is refused.
    #[error("call target {target} is not allowed by the session ({problem:?})")]
    TargetNotAllowed {
        /// The first refused target.
        target: Address,
        /// Why.
        problem: TargetProblem,
    },
    /// Too much value.
    #[error(
        "the intent moves {requested} wei but only {available} wei are available (remaining budget {remaining}, in flight {in_flight})"
    )]
    OverBudget {
        /// Total value of the intent.
        requested: U256,
        /// `remaining - in_flight` (saturating).
        available: U256,
        /// The on-chain remaining budget.
        remaining: U256,
        /// Value of this agent's intents still in flight.
        in_flight: U256,
    },
}

impl Refusal {
    /// The machine-readable code.
    pub fn code(&self) -> RefusalCode {
        match self {
            Refusal::NoSession { .. } => RefusalCode::NoSession,
            Refusal::SessionRevoked { .. } => RefusalCode::SessionRevoked,
            Refusal::SessionNotYetValid { .. } => RefusalCode::SessionNotYetValid,
            Refusal::SessionExpired { .. } => RefusalCode::SessionExpired,
            Refusal::TargetNotAllowed { .. } => RefusalCode::TargetNotAllowed,
            Refusal::OverBudget { .. } => RefusalCode::OverBudget,
        }
    }
}

/// Margins on the validity window, so an operation that passes the pre-check is also accepted by
/// bundlers (Alto refuses `validUntil < now + 5` in unsafe mode and `< now + 30` in safe mode,
/// and `validAfter > now`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidityMargins {
    /// Validity that must be left after `now`, in seconds.
    pub min_remaining_secs: u64,
    /// How far `validAfter` must lie in the past, in seconds.
    pub min_elapsed_secs: u64,
}

impl Default for ValidityMargins {
    /// 30 s left (the strictest bundler rule seen) and `validAfter <= now`.
    fn default() -> Self {
        Self {
            min_remaining_secs: 30,
            min_elapsed_secs: 0,
        }
    }
}

/// What a passing pre-check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrecheckPass {
    /// Total native value of the intent.
    pub value: U256,
    /// Budget left for further intents once this one lands (and those in flight).
    pub budget_after: U256,
}

/// Checks `calls` of `snapshot.key` on `snapshot.account` against the on-chain session, in the
/// validator's order: session exists, not revoked, window (with `margins`, at `now`), every
/// target allowed (and neither the account nor `snapshot.validator`), and the total value within
/// `remaining budget − in_flight`.
///
/// `snapshot.allowed_targets` must hold every target of `calls`; a target missing from it counts
/// as not allowed.
// A refusal (128 bytes) is returned once per refused request; boxing it buys nothing.
#[allow(clippy::result_large_err)]
pub fn precheck(
    snapshot: &SessionSnapshot,
    calls: &[Call],
    in_flight: U256,
    now: u64,
    margins: ValidityMargins,
) -> Result<PrecheckPass, Refusal> {
    let s = &snapshot.session;
    if s.epoch == 0 {
        return Err(Refusal::NoSession {
            account: snapshot.account,
            key: snapshot.key,
        });
    }
    if !s.active {
        return Err(Refusal::SessionRevoked {
            account: snapshot.account,
            key: snapshot.key,
        });
    }
    if s.valid_after.saturating_add(margins.min_elapsed_secs) > now {
        return Err(Refusal::SessionNotYetValid {
            valid_after: s.valid_after,
            now,
        });
    }
    if s.valid_until != 0 && s.valid_until < now.saturating_add(margins.min_remaining_secs) {
        return Err(Refusal::SessionExpired {
            valid_until: s.valid_until,
            now,
            margin_secs: margins.min_remaining_secs,
        });
    }
    for call in calls {
        let problem = if call.to == snapshot.account {
            Some(TargetProblem::IsAccount)
        } else if call.to == snapshot.validator {
            Some(TargetProblem::IsValidator)
        } else if !snapshot
            .allowed_targets
            .get(&call.to)
            .copied()
            .unwrap_or(false)
        {
            Some(TargetProblem::NotListed)
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(Refusal::TargetNotAllowed {
                target: call.to,
                problem,
            });
        }
    }
    let requested = total_value(calls);
    let remaining = snapshot.remaining_budget;
    let available = remaining.saturating_sub(in_flight);
    if requested > available {
        return Err(Refusal::OverBudget {
            requested,
            available,
            remaining,
            in_flight,
        });
    }
    Ok(PrecheckPass {
        value: requested,
        budget_after: available - requested,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::address;

    const ACCOUNT: Address = address!("0xAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    const KEY: Address = address!("0x4b39F7b0624b9dB86AD293686bc38B903142dbBc");
    const VALIDATOR: Address = address!("0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0");
    const ALLOWED: Address = address!("0x1111111111111111111111111111111111111111");
    const OTHER: Address = address!("0x2222222222222222222222222222222222222222");
    const NOW: u64 = 1_800_000_000;

    fn snapshot() -> SessionSnapshot {
        SessionSnapshot {
            account: ACCOUNT,
            key: KEY,
            validator: VALIDATOR,
            block_number: 10,
            block_timestamp: NOW,
            session: OnChainSession {
                valid_after: NOW - 100,
                valid_until: NOW + 3600,
                revoker: OTHER,
                spend_cap: 1000,
                spent: 400,
                epoch: 1,
                active: true,
            },
            remaining_budget: U256::from(600),
            allowed_targets: [(ALLOWED, true), (OTHER, false)].into_iter().collect(),
        }
    }

    fn pay(to: Address, wei: u64) -> Call {
        Call::transfer(to, U256::from(wei))
    }

    fn code(r: Result<PrecheckPass, Refusal>) -> RefusalCode {
        r.unwrap_err().code()
    }

    #[test]
    fn within_policy_passes() {
        let pass = precheck(
            &snapshot(),
            &[pay(ALLOWED, 100), pay(ALLOWED, 200)],
            U256::from(100),
            NOW,
            ValidityMargins::default(),
        )
        .unwrap();
        assert_eq!(pass.value, U256::from(300));
        assert_eq!(pass.budget_after, U256::from(200));
    }

    #[test]
    fn session_existence_and_revocation() {
        let mut s = snapshot();
        s.session.active = false;
        let m = ValidityMargins::default();
        assert_eq!(
            code(precheck(&s, &[pay(ALLOWED, 1)], U256::ZERO, NOW, m)),
            RefusalCode::SessionRevoked
        );
        s.session = OnChainSession::default();
        assert_eq!(
            code(precheck(&s, &[pay(ALLOWED, 1)], U256::ZERO, NOW, m)),
            RefusalCode::NoSession
        );
    }

    #[test]
    fn window_with_margins() {
        let m = ValidityMargins::default();
        let mut s = snapshot();
        s.session.valid_until = NOW + 29;
        assert_eq!(
            code(precheck(&s, &[pay(ALLOWED, 1)], U256::ZERO, NOW, m)),
            RefusalCode::SessionExpired
        );
        s.session.valid_until = NOW + 30;
        assert!(precheck(&s, &[pay(ALLOWED, 1)], U256::ZERO, NOW, m).is_ok());
        s.session.valid_until = 0; // no end
        assert!(precheck(&s, &[pay(ALLOWED, 1)], U256::ZERO, NOW, m).is_ok());
        s.session.valid_after = NOW + 1;
        assert_eq!(
            code(precheck(&s, &[pay(ALLOWED, 1)], U256::ZERO, NOW, m)),
            RefusalCode::SessionNotYetValid
        );
        s.session.valid_after = NOW - 3;
        let strict = ValidityMargins {
            min_elapsed_secs: 5,
            ..m
        };
        assert_eq!(
            code(precheck(&s, &[pay(ALLOWED, 1)], U256::ZERO, NOW, strict)),
            RefusalCode::SessionNotYetValid
        );
    }

    #[test]
    fn targets() {
        let m = ValidityMargins::default();
        for (target, problem) in [
            (OTHER, TargetProblem::NotListed),
            (
                address!("0x3333333333333333333333333333333333333333"),
                TargetProblem::NotListed,
            ),
            (ACCOUNT, TargetProblem::IsAccount),
            (VALIDATOR, TargetProblem::IsValidator),
        ] {
            let mut s = snapshot();
            // Even if the chain said it was allowed, the account and validator never are.
            s.allowed_targets.insert(ACCOUNT, true);
            s.allowed_targets.insert(VALIDATOR, true);
            let err =
                precheck(&s, &[pay(ALLOWED, 1), pay(target, 0)], U256::ZERO, NOW, m).unwrap_err();
            assert_eq!(err, Refusal::TargetNotAllowed { target, problem });
            assert_eq!(err.code().as_str(), "target_not_allowed");
        }
    }

    #[test]
    fn budget_counts_in_flight_intents() {
        let m = ValidityMargins::default();
        let s = snapshot();
        assert!(precheck(&s, &[pay(ALLOWED, 600)], U256::ZERO, NOW, m).is_ok());
        assert_eq!(
            precheck(&s, &[pay(ALLOWED, 600)], U256::from(1), NOW, m).unwrap_err(),
            Refusal::OverBudget {
                requested: U256::from(600),
                available: U256::from(599),
                remaining: U256::from(600),
                in_flight: U256::from(1),
            }
        );
        // In flight above the remaining budget leaves nothing, without underflow.
        assert_eq!(
            code(precheck(&s, &[pay(ALLOWED, 1)], U256::from(700), NOW, m)),
            RefusalCode::OverBudget
        );
        // Zero-value calls pass even with nothing left.
        assert!(precheck(&s, &[pay(ALLOWED, 0)], U256::from(700), NOW, m).is_ok());
        // A sum over the budget across calls of one intent.
        assert_eq!(
            code(precheck(
                &s,
                &[pay(ALLOWED, 300), pay(ALLOWED, 301)],
                U256::ZERO,
                NOW,
                m
            )),
            RefusalCode::OverBudget
        );
    }

    #[test]
    fn order_matches_the_validator() {
        // Revoked beats everything; targets beat budget.
        let m = ValidityMargins::default();
        let mut s = snapshot();
        assert_eq!(
            code(precheck(&s, &[pay(OTHER, 10_000)], U256::ZERO, NOW, m)),
            RefusalCode::TargetNotAllowed
        );
        s.session.active = false;
        assert_eq!(
            code(precheck(&s, &[pay(OTHER, 10_000)], U256::ZERO, NOW, m)),
            RefusalCode::SessionRevoked
        );
    }

    #[test]
    fn codes_are_stable_strings() {
        let all = [
            (RefusalCode::NoSession, "no_session"),
            (RefusalCode::SessionRevoked, "session_revoked"),
            (RefusalCode::SessionNotYetValid, "session_not_yet_valid"),
            (RefusalCode::SessionExpired, "session_expired"),
            (RefusalCode::TargetNotAllowed, "target_not_allowed"),
            (RefusalCode::OverBudget, "over_budget"),
        ];
        for (c, s) in all {
            assert_eq!(c.as_str(), s);
            assert_eq!(serde_json::to_value(c).unwrap(), s);
        }
    }

    #[test]
    fn grant_validation_and_encoding() {
        let g = SessionGrant {
            key: KEY,
            targets: vec![ALLOWED],
            spend_cap: 10,
            valid_after: 5,
            valid_until: 0,
            revoker: OTHER,
        };
        assert_eq!(g.validate(ACCOUNT, VALIDATOR), Ok(()));
        let call = SessionKeyValidator::grantSessionCall::abi_decode(&g.grant_call_data()).unwrap();
        assert_eq!(call.key, KEY);
        assert_eq!(call.targets, vec![ALLOWED]);
        assert_eq!(call.spendCap, 10);
        assert_eq!(call.validAfter.to::<u64>(), 5);
        assert_eq!(call.revoker, OTHER);
        let owner_call = g.owner_call(VALIDATOR);
        assert_eq!((owner_call.to, owner_call.value), (VALIDATOR, U256::ZERO));

        let bad = |f: &dyn Fn(&mut SessionGrant)| {
            let mut g = g.clone();
            f(&mut g);
            g.validate(ACCOUNT, VALIDATOR).unwrap_err()
        };
        assert_eq!(bad(&|g| g.key = Address::ZERO), InvalidGrant::ZeroKey);
        assert_eq!(
            bad(&|g| g.valid_until = 5),
            InvalidGrant::EmptyWindow {
                valid_after: 5,
                valid_until: 5
            }
        );
        assert_eq!(
            bad(&|g| g.targets.push(ACCOUNT)),
            InvalidGrant::ForbiddenTarget(ACCOUNT)
        );
        assert_eq!(
            bad(&|g| g.targets = vec![VALIDATOR]),
            InvalidGrant::ForbiddenTarget(VALIDATOR)
        );
        assert_eq!(bad(&|g| g.targets.clear()), InvalidGrant::NoTargets);
        assert!(matches!(
            bad(&|g| g.valid_until = 1 << 48),
            InvalidGrant::TimestampTooLarge {
                field: "validUntil",
                ..
            }
        ));
    }

    #[test]
    fn revoke_call_data_is_revoke_session() {
        let data = revoke_call_data(ACCOUNT, KEY);
        let call = SessionKeyValidator::revokeSessionCall::abi_decode(&data).unwrap();
        assert_eq!((call.account, call.key), (ACCOUNT, KEY));
    }
}
