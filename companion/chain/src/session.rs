//! Sessions on `SessionKeyValidator`: what the owner grants, what the chain holds, and the
//! companion's pre-check of an intent against it.
//!
//! - [`SessionGrant`]: the fields of `grantSession` (targets with their functions, ERC-20 caps,
//!   the value and gas caps, paymaster, usage limit, window, revoker) and the owner call that
//!   registers them; [`SessionGrant::validate`] refuses what the validator would.
//! - [`SessionSnapshot`]: one agent key's session on one account as read from the chain (see
//!   [`crate::node::NodeClient::read_session_for_calls`]), consistent at one block.
//! - [`precheck`]: refuses, with a machine-readable [`RefusalCode`], an intent that the validator
//!   (or the bundler, for the validity window) would reject — before anything is signed —
//!   counting what this agent already has in flight ([`InFlight`]).
//!
//! The pre-check is a courtesy and a guard against wasting TA signatures, not a security layer:
//! the chain enforces the same rules whatever the companion decides, and whatever the agent signs
//! through `/kms/sign-agent`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use alloy::primitives::{keccak256, Address, Bytes, FixedBytes, U256};
use alloy::sol_types::SolCall;
use kms_contracts::{ISessionKeyValidator, SessionKeyValidator, ENTRY_POINT_V07, ENTRY_POINT_V08};
use serde::{Deserialize, Serialize};

use crate::account::{total_value, Call};

/// Largest timestamp the validator stores (`uint48`).
pub const MAX_UINT48: u64 = (1 << 48) - 1;
/// Largest gas cap the validator stores (`uint96`).
pub const MAX_GAS_CAP: u128 = (1 << 96) - 1;
/// Largest token cap the validator stores (`uint112`).
pub const MAX_TOKEN_CAP: u128 = (1 << 112) - 1;
/// Shortest budget period the validator accepts, in seconds.
pub const MIN_PERIOD: u32 = 60;
/// Most targets (and, separately, tokens) in one grant.
pub const MAX_TARGETS: usize = 64;
/// Most tokens in one grant.
pub const MAX_TOKENS: usize = 16;
/// Most selectors listed for one target.
pub const MAX_SELECTORS: usize = 32;

/// A 4-byte function selector.
pub type Selector = FixedBytes<4>;

/// ERC-20 `transfer(address,uint256)`, counted against a token cap.
pub const TRANSFER: Selector = FixedBytes([0xa9, 0x05, 0x9c, 0xbb]);
/// ERC-20 `approve(address,uint256)`, counted (the approved amount) against a token cap.
pub const APPROVE: Selector = FixedBytes([0x09, 0x5e, 0xa7, 0xb3]);
/// `increaseAllowance(address,uint256)`, counted against a token cap.
pub const INCREASE_ALLOWANCE: Selector = FixedBytes([0x39, 0x50, 0x93, 0x51]);
/// ERC-20 `transferFrom(address,address,uint256)`, counted when `from` is the account.
pub const TRANSFER_FROM: Selector = FixedBytes([0x23, 0xb8, 0x72, 0xdd]);

/// Parses a selector given as 4-byte hex (`"0xa9059cbb"`) or as a function signature
/// (`"transfer(address,uint256)"`, spaces ignored).
pub fn parse_selector(s: &str) -> Result<Selector, String> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        let bytes = alloy::primitives::hex::decode(hex)
            .map_err(|_| format!("selector {s:?} is not valid hex"))?;
        return <[u8; 4]>::try_from(bytes.as_slice())
            .map(FixedBytes)
            .map_err(|_| format!("selector {s:?} is not 4 bytes"));
    }
    let sig: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let well_formed = sig.find('(').is_some_and(|open| {
        open > 0
            && sig.ends_with(')')
            && sig[..open]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
            && sig[open..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "(),[]".contains(c))
    });
    if !well_formed {
        return Err(format!(
            "selector {s:?} is neither 4-byte hex nor a function signature like \"transfer(address,uint256)\""
        ));
    }
    Ok(FixedBytes(
        keccak256(sig.as_bytes())[..4]
            .try_into()
            .expect("four bytes"),
    ))
}

/// The selector of call data (zero-padded when shorter than four bytes; `None` when empty).
pub fn selector_of(data: &[u8]) -> Option<Selector> {
    if data.is_empty() {
        return None;
    }
    let mut s = [0u8; 4];
    let n = data.len().min(4);
    s[..n].copy_from_slice(&data[..n]);
    Some(FixedBytes(s))
}

/// The functions a session may call on one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetPermission {
    /// The address called.
    pub target: Address,
    /// Every function allowed (only with an empty `selectors`).
    #[serde(default)]
    pub any_selector: bool,
    /// The functions allowed. Plain transfers (empty call data) are allowed on any listed target.
    #[serde(default)]
    pub selectors: Vec<Selector>,
}

impl TargetPermission {
    /// Plain transfers to `target` only.
    pub fn transfers_only(target: Address) -> Self {
        Self {
            target,
            any_selector: false,
            selectors: Vec::new(),
        }
    }

    /// Every function of `target`.
    pub fn any(target: Address) -> Self {
        Self {
            target,
            any_selector: true,
            selectors: Vec::new(),
        }
    }

    /// The listed functions of `target`.
    pub fn with_selectors(target: Address, selectors: Vec<Selector>) -> Self {
        Self {
            target,
            any_selector: false,
            selectors,
        }
    }
}

/// A cumulative cap on one ERC-20 token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenLimit {
    /// The token contract.
    pub token: Address,
    /// The most the session may move or approve in total, in the token's units (1 to
    /// [`MAX_TOKEN_CAP`]).
    #[serde(with = "u128_string")]
    pub cap: u128,
}

/// The fields of a session grant (`SessionKeyValidator.grantSession`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionGrant {
    /// The agent key address.
    pub key: Address,
    /// The call targets and their functions.
    pub targets: Vec<TargetPermission>,
    /// ERC-20 caps.
    #[serde(default)]
    pub tokens: Vec<TokenLimit>,
    /// Cap on the cumulative native value the key may move, in wei.
    #[serde(with = "u128_string")]
    pub spend_cap: u128,
    /// Cap on the cumulative maximum gas cost of the key's operations, in wei (≤ 2^96 − 1).
    #[serde(with = "u128_string")]
    pub gas_cap: u128,
    /// The one paymaster the key's operations may use (none: the account pays gas).
    #[serde(default)]
    pub paymaster: Option<Address>,
    /// Most operations in this grant (0 = no limit).
    #[serde(default)]
    pub max_ops: u32,
    /// Budget period in seconds (0 = none, else at least [`MIN_PERIOD`]); period `p` starts at
    /// `valid_after + p × period`.
    #[serde(default)]
    pub period: u32,
    /// Cap on the native value of one period, in wei (with a period only, then > 0).
    #[serde(default, with = "u128_string")]
    pub period_cap: u128,
    /// First valid timestamp (unix seconds).
    pub valid_after: u64,
    /// Last valid timestamp (unix seconds; 0 = no end).
    pub valid_until: u64,
    /// An address that may revoke the session besides the account (the operator key), or zero.
    pub revoker: Address,
}

/// Decimal-string serde for `u128` amounts (JSON numbers lose precision above 2^53).
mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Num {
            S(String),
            N(u64),
        }
        match Num::deserialize(d)? {
            Num::S(s) => s.parse().map_err(serde::de::Error::custom),
            Num::N(n) => Ok(u128::from(n)),
        }
    }
}

/// A grant the validator would refuse, or one the companion will not send (checked before
/// building the owner's operation).
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
    /// A target is the account itself, the validator or an EntryPoint, which sessions may
    /// never call.
    #[error("{0} cannot be a session target (it is the account, the validator or an EntryPoint)")]
    ForbiddenTarget(Address),
    /// No target and no token: the session could do nothing.
    #[error("a session needs at least one target or token")]
    NoTargets,
    /// Too many entries of one kind.
    #[error("at most {max} {what} per session")]
    TooMany {
        /// What: `targets`, `tokens` or `selectors of one target`.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A target or token is listed twice.
    #[error("{0} is listed twice")]
    DuplicateTarget(Address),
    /// A selector is listed twice for one target.
    #[error("selector {selector} is listed twice for {target}")]
    DuplicateSelector {
        /// The target.
        target: Address,
        /// The selector.
        selector: Selector,
    },
    /// `anySelector` with a selector list, or on a capped token.
    #[error(
        "{0}: anySelector cannot come with a selector list, nor be given to a capped token (its other functions would move tokens uncounted)"
    )]
    ConflictingPermission(Address),
    /// A token with a zero cap.
    #[error("token {0} has a zero cap: leave it out instead")]
    ZeroTokenCap(Address),
    /// A token cap over 112 bits.
    #[error("token {token} has a cap of {cap}, over the validator's 112 bits")]
    TokenCapTooLarge {
        /// The token.
        token: Address,
        /// The cap given.
        cap: u128,
    },
    /// A period without a cap, a cap without a period, or a period under [`MIN_PERIOD`].
    #[error(
        "period {period} s with periodCap {period_cap}: give both (a period of at least {MIN_PERIOD} s and a cap above 0) or neither"
    )]
    InvalidPeriod {
        /// The period given.
        period: u32,
        /// The periodic cap given.
        period_cap: u128,
    },
    /// The gas cap does not fit 96 bits.
    #[error("gasCap {0} does not fit the validator's 96 bits")]
    GasCapTooLarge(u128),
    /// The paymaster is the zero address.
    #[error("the paymaster cannot be the zero address (leave it out for none)")]
    ZeroPaymaster,
    /// A target with a selector list, or a token, has no code on chain.
    #[error("{0} has no code: selectors and token caps need a contract")]
    NotAContract(Address),
}

impl SessionGrant {
    /// Checks the grant as the validator will for `account`, `validator` and the account's
    /// `entry_point`, plus the companion's own limits. Whether targets with selectors and
    /// tokens have code is checked on chain (see [`SessionGrant::needs_code`]).
    pub fn validate(
        &self,
        account: Address,
        validator: Address,
        entry_point: Address,
    ) -> Result<(), InvalidGrant> {
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
        if self.gas_cap > MAX_GAS_CAP {
            return Err(InvalidGrant::GasCapTooLarge(self.gas_cap));
        }
        if (self.period == 0) != (self.period_cap == 0)
            || (self.period != 0 && self.period < MIN_PERIOD)
        {
            return Err(InvalidGrant::InvalidPeriod {
                period: self.period,
                period_cap: self.period_cap,
            });
        }
        if self.paymaster == Some(Address::ZERO) {
            return Err(InvalidGrant::ZeroPaymaster);
        }
        if self.targets.is_empty() && self.tokens.is_empty() {
            return Err(InvalidGrant::NoTargets);
        }
        if self.targets.len() > MAX_TARGETS {
            return Err(InvalidGrant::TooMany {
                what: "targets",
                max: MAX_TARGETS,
            });
        }
        if self.tokens.len() > MAX_TOKENS {
            return Err(InvalidGrant::TooMany {
                what: "tokens",
                max: MAX_TOKENS,
            });
        }
        let forbidden = [
            account,
            validator,
            entry_point,
            ENTRY_POINT_V07,
            ENTRY_POINT_V08,
        ];
        let mut any_selector = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for t in &self.targets {
            if forbidden.contains(&t.target) {
                return Err(InvalidGrant::ForbiddenTarget(t.target));
            }
            if !seen.insert(t.target) {
                return Err(InvalidGrant::DuplicateTarget(t.target));
            }
            if t.any_selector && !t.selectors.is_empty() {
                return Err(InvalidGrant::ConflictingPermission(t.target));
            }
            if t.selectors.len() > MAX_SELECTORS {
                return Err(InvalidGrant::TooMany {
                    what: "selectors of one target",
                    max: MAX_SELECTORS,
                });
            }
            let mut selectors = BTreeSet::new();
            if let Some(dup) = t.selectors.iter().find(|s| !selectors.insert(**s)) {
                return Err(InvalidGrant::DuplicateSelector {
                    target: t.target,
                    selector: *dup,
                });
            }
            if t.any_selector {
                any_selector.insert(t.target);
            }
        }
        let mut tokens = BTreeSet::new();
        for l in &self.tokens {
            if forbidden.contains(&l.token) {
                return Err(InvalidGrant::ForbiddenTarget(l.token));
            }
            if l.cap == 0 {
                return Err(InvalidGrant::ZeroTokenCap(l.token));
            }
            if l.cap > MAX_TOKEN_CAP {
                return Err(InvalidGrant::TokenCapTooLarge {
                    token: l.token,
                    cap: l.cap,
                });
            }
            if !tokens.insert(l.token) {
                return Err(InvalidGrant::DuplicateTarget(l.token));
            }
            if any_selector.contains(&l.token) {
                return Err(InvalidGrant::ConflictingPermission(l.token));
            }
        }
        Ok(())
    }

    /// The addresses that must have code for the validator to accept the grant: targets with a
    /// selector list, and tokens.
    pub fn needs_code(&self) -> Vec<Address> {
        let mut v: Vec<Address> = self
            .targets
            .iter()
            .filter(|t| !t.selectors.is_empty())
            .map(|t| t.target)
            .chain(self.tokens.iter().map(|l| l.token))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// `grantSession(grant)` call data (for the validator, called by the account). Timestamps
    /// above 48 bits and gas caps above 96 bits are clamped; call [`SessionGrant::validate`]
    /// first.
    pub fn grant_call_data(&self) -> Bytes {
        SessionKeyValidator::grantSessionCall {
            grant: ISessionKeyValidator::SessionGrant {
                key: self.key,
                validAfter: to_u48(self.valid_after),
                validUntil: to_u48(self.valid_until),
                revoker: self.revoker,
                spendCap: self.spend_cap,
                gasCap: alloy::primitives::aliases::U96::from(self.gas_cap.min(MAX_GAS_CAP)),
                paymaster: self.paymaster.unwrap_or(Address::ZERO),
                maxOps: self.max_ops,
                period: self.period,
                periodCap: self.period_cap,
                targets: self
                    .targets
                    .iter()
                    .map(|t| ISessionKeyValidator::TargetPermission {
                        target: t.target,
                        anySelector: t.any_selector,
                        selectors: t.selectors.clone(),
                    })
                    .collect(),
                tokens: self
                    .tokens
                    .iter()
                    .map(|l| ISessionKeyValidator::TokenLimit {
                        token: l.token,
                        cap: alloy::primitives::aliases::U112::from(l.cap.min(MAX_TOKEN_CAP)),
                    })
                    .collect(),
            },
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
    /// The gas cap, in wei.
    pub gas_cap: u128,
    /// Maximum gas cost charged so far in this grant, in wei.
    pub gas_spent: u128,
    /// Most operations (0 = no limit).
    pub max_ops: u32,
    /// Operations validated so far in this grant.
    pub ops_used: u32,
    /// The one paymaster allowed (zero = none).
    pub paymaster: Address,
    /// Grant counter (0 = never granted).
    pub epoch: u64,
    /// Granted and not revoked.
    pub active: bool,
    /// Budget period in seconds (0 = none).
    pub period: u32,
    /// Native-value cap per period, in wei.
    pub period_cap: u128,
    /// The key's lane on an ERC-7579 account (the nonce key's 2 bytes after the module's
    /// address), given at its first grant there; unused on `AgentAccount`.
    #[serde(default)]
    pub lane: u16,
    /// The account's module generation at the grant (ERC-7579 accounts: the session is ended once
    /// the account's [`ModuleState::generation`] moves on, i.e. after an uninstallation).
    #[serde(default)]
    pub generation: u32,
}

impl OnChainSession {
    /// The window of period `index` of a periodic session, `(start, end)` inclusive: from
    /// `valid_after + index × period`, `period` seconds long, clipped to `valid_until`. `None`
    /// without a period, or when the period lies outside the window (the validator's
    /// `PeriodOutsideWindow`).
    pub fn period_window(&self, index: u64) -> Option<(u64, u64)> {
        if self.period == 0 {
            return None;
        }
        let period = u64::from(self.period);
        let start = self.valid_after.checked_add(index.checked_mul(period)?)?;
        let mut end = start.checked_add(period - 1)?;
        if self.valid_until != 0 {
            end = end.min(self.valid_until);
        }
        (start <= end && end <= MAX_UINT48).then_some((start, end))
    }

    /// The index of the period containing `at` (0 before the window starts; 0 without a period).
    pub fn period_index(&self, at: u64) -> u64 {
        if self.period == 0 || at <= self.valid_after {
            0
        } else {
            (at - self.valid_after) / u64::from(self.period)
        }
    }

    /// The native value the key may still move (0 unless active).
    pub fn remaining_value(&self) -> U256 {
        if self.active {
            U256::from(self.spend_cap.saturating_sub(self.spent))
        } else {
            U256::ZERO
        }
    }

    /// The gas budget left, in wei (0 unless active).
    pub fn remaining_gas(&self) -> U256 {
        if self.active {
            U256::from(self.gas_cap.saturating_sub(self.gas_spent))
        } else {
            U256::ZERO
        }
    }
}

impl From<ISessionKeyValidator::Session> for OnChainSession {
    fn from(s: ISessionKeyValidator::Session) -> Self {
        Self {
            valid_after: s.validAfter.to::<u64>(),
            valid_until: s.validUntil.to::<u64>(),
            revoker: s.revoker,
            spend_cap: s.spendCap,
            spent: s.spent,
            gas_cap: s.gasCap.to::<u128>(),
            gas_spent: s.gasSpent.to::<u128>(),
            max_ops: s.maxOps,
            ops_used: s.opsUsed,
            paymaster: s.paymaster,
            epoch: u64::from(s.epoch),
            active: s.active,
            period: s.period,
            period_cap: s.periodCap,
            lane: s.lane,
            generation: s.generation,
        }
    }
}

/// The validator module's state on an ERC-7579 account (`moduleState(account)`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleState {
    /// Installed (between `onInstall` and `onUninstall`).
    pub installed: bool,
    /// The account's number of uninstallations: sessions granted in an older generation are
    /// ended on the module path.
    pub generation: u32,
    /// Lanes given on the account (the last lane given).
    pub lanes: u16,
}

impl ModuleState {
    /// Whether `session` can validate on the module path: the module installed and the session
    /// granted in the current generation.
    pub fn admits(&self, session: &OnChainSession) -> bool {
        self.installed && session.generation == self.generation
    }
}

/// Which path of `SessionKeyValidator` an account's operations take, with what the path needs
/// beyond the session: see [`precheck_on`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidatorPath {
    /// `AgentAccount` (`validateSessionUserOp`).
    AgentAccount,
    /// An ERC-7579 account with the validator as its module (`validateUserOp`), and the module's
    /// state on it as read with the session.
    Erc7579(ModuleState),
}

/// What the session's current grant allows on one target (`getPermission`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetState {
    /// Listed (as a target or a token).
    pub allowed: bool,
    /// Every function allowed.
    pub any_selector: bool,
    /// A capped ERC-20 token.
    pub is_token: bool,
    /// The token cap.
    pub token_cap: u128,
    /// Counted so far against the token cap.
    pub token_spent: u128,
}

impl From<ISessionKeyValidator::Permission> for TargetState {
    fn from(p: ISessionKeyValidator::Permission) -> Self {
        Self {
            allowed: p.allowed,
            any_selector: p.anySelector,
            is_token: p.isToken,
            token_cap: p.tokenCap.to::<u128>(),
            token_spent: p.tokenSpent.to::<u128>(),
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
    /// The native value left (`spendCap − spent`; 0 unless active).
    pub remaining_budget: U256,
    /// Whether each target asked about is listed by the current grant (false once revoked).
    pub allowed_targets: BTreeMap<Address, bool>,
    /// The permission of each target asked about (in the current epoch).
    pub permissions: BTreeMap<Address, TargetState>,
    /// The (target, selector) pairs asked about that the current grant lists explicitly.
    pub listed_selectors: BTreeSet<(Address, Selector)>,
    /// The time the period was chosen for (the caller's "now"; unix seconds).
    pub at: u64,
    /// The period containing `at` (0 without a period): an operation built now names it.
    pub period_index: u64,
    /// The native value spent in that period, in wei.
    pub period_spent: u128,
}

/// What this agent already has in flight: intents recorded but neither settled nor passed by
/// the chain's nonce, whose validation will still charge the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InFlight {
    /// Native value.
    pub value: U256,
    /// Maximum gas cost charged to the gas budget.
    pub gas: U256,
    /// Operations.
    pub ops: u32,
    /// Token amounts, per token.
    pub tokens: BTreeMap<Address, U256>,
    /// Native value of those in the period of the intent being checked (its nonce lane).
    pub period_value: U256,
}

impl InFlight {
    /// Adds one intent's charges; `same_period` when it is in the period (the lane) of the
    /// intent being checked.
    pub fn add(
        &mut self,
        value: U256,
        gas: U256,
        tokens: &BTreeMap<Address, U256>,
        same_period: bool,
    ) {
        if same_period {
            self.period_value = self.period_value.saturating_add(value);
        }
        self.value = self.value.saturating_add(value);
        self.gas = self.gas.saturating_add(gas);
        self.ops = self.ops.saturating_add(1);
        for (t, a) in tokens {
            let e = self.tokens.entry(*t).or_default();
            *e = e.saturating_add(*a);
        }
    }
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
    /// A call's function is not allowed on its target.
    SelectorNotAllowed,
    /// The intent's value exceeds the remaining budget minus the value of intents in flight.
    OverBudget,
    /// The operation's maximum gas cost exceeds the gas budget left (minus intents in flight).
    GasOverBudget,
    /// A token amount exceeds what is left of that token's cap (minus intents in flight).
    TokenOverBudget,
    /// A counted token call is too short for its arguments or has a dirty address.
    MalformedTokenCall,
    /// The session's usage limit is reached (counting intents in flight).
    UsageExhausted,
    /// The operation names a paymaster the session does not allow (from the chain).
    PaymasterNotAllowed,
    /// The operation's nonce key is not the agent's own lane (from the chain).
    LaneNotAllowed,
    /// The intent's value exceeds what is left of the current period's cap.
    PeriodOverBudget,
    /// The current budget period ends too soon for a bundler to accept the operation.
    PeriodEnding,
}

impl RefusalCode {
    /// Every code, in declaration order.
    pub const ALL: [RefusalCode; 15] = [
        RefusalCode::NoSession,
        RefusalCode::SessionRevoked,
        RefusalCode::SessionNotYetValid,
        RefusalCode::SessionExpired,
        RefusalCode::TargetNotAllowed,
        RefusalCode::SelectorNotAllowed,
        RefusalCode::OverBudget,
        RefusalCode::GasOverBudget,
        RefusalCode::TokenOverBudget,
        RefusalCode::MalformedTokenCall,
        RefusalCode::UsageExhausted,
        RefusalCode::PaymasterNotAllowed,
        RefusalCode::LaneNotAllowed,
        RefusalCode::PeriodOverBudget,
        RefusalCode::PeriodEnding,
    ];

    /// The code's string: `"no_session"`, `"session_revoked"`, `"session_not_yet_valid"`,
    /// `"session_expired"`, `"target_not_allowed"`, `"selector_not_allowed"`, `"over_budget"`,
    /// `"gas_over_budget"`, `"token_over_budget"`, `"malformed_token_call"`,
    /// `"usage_exhausted"`, `"paymaster_not_allowed"`, `"lane_not_allowed"`,
    /// `"period_over_budget"` or `"period_ending"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::NoSession => "no_session",
            RefusalCode::SessionRevoked => "session_revoked",
            RefusalCode::SessionNotYetValid => "session_not_yet_valid",
            RefusalCode::SessionExpired => "session_expired",
            RefusalCode::TargetNotAllowed => "target_not_allowed",
            RefusalCode::SelectorNotAllowed => "selector_not_allowed",
            RefusalCode::OverBudget => "over_budget",
            RefusalCode::GasOverBudget => "gas_over_budget",
            RefusalCode::TokenOverBudget => "token_over_budget",
            RefusalCode::MalformedTokenCall => "malformed_token_call",
            RefusalCode::UsageExhausted => "usage_exhausted",
            RefusalCode::PaymasterNotAllowed => "paymaster_not_allowed",
            RefusalCode::LaneNotAllowed => "lane_not_allowed",
            RefusalCode::PeriodOverBudget => "period_over_budget",
            RefusalCode::PeriodEnding => "period_ending",
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
    /// Address 0 on an ERC-7579 account, which takes it for itself (`ForbiddenTarget`).
    ZeroAddress,
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
    /// The current budget period ends within the margin.
    #[error(
        "budget period {period_index} ends at {ends_at} (unix seconds); now is {now} and bundlers need {margin_secs} s of validity left: retry once the next period starts"
    )]
    PeriodEnding {
        /// The current period.
        period_index: u64,
        /// Its last second.
        ends_at: u64,
        /// The time checked.
        now: u64,
        /// The margin required.
        margin_secs: u64,
    },
    /// The usage limit is reached.
    #[error(
        "the session allows {max_ops} operations: {used} were made and {in_flight} are in flight"
    )]
    UsageExhausted {
        /// The limit.
        max_ops: u32,
        /// Operations validated on chain.
        used: u32,
        /// This agent's operations in flight.
        in_flight: u32,
    },
    /// The operation's maximum gas cost exceeds the gas budget left.
    #[error(
        "the operation may cost up to {max_cost} wei in gas but only {available} wei of the gas budget are available (left {remaining}, in flight {in_flight})"
    )]
    GasOverBudget {
        /// `(preVerificationGas + verificationGasLimit + callGasLimit) × maxFeePerGas`.
        max_cost: U256,
        /// `remaining − in_flight` (saturating).
        available: U256,
        /// The gas budget left on chain.
        remaining: U256,
        /// Maximum gas cost of this agent's intents in flight.
        in_flight: U256,
    },
    /// A call's target is refused.
    #[error("call target {target} is not allowed by the session ({problem:?})")]
    TargetNotAllowed {
        /// The first refused target.
        target: Address,
        /// Why.
        problem: TargetProblem,
    },
    /// A call's function is not allowed on its target.
    #[error("function {selector} of {target} is not allowed by the session")]
    SelectorNotAllowed {
        /// The target.
        target: Address,
        /// The selector (zero-padded when the data is shorter than four bytes).
        selector: Selector,
    },
    /// A counted token call cannot be read.
    #[error("the {selector} call to token {token} is too short for its arguments or has a dirty address")]
    MalformedTokenCall {
        /// The token.
        token: Address,
        /// The function.
        selector: Selector,
    },
    /// Too much of a token.
    #[error(
        "the intent moves or approves {requested} of token {token} but only {available} are available (left {remaining}, in flight {in_flight})"
    )]
    TokenOverBudget {
        /// The token.
        token: Address,
        /// What this intent counts against the token so far (up to the refused call).
        requested: U256,
        /// `remaining − in_flight` (saturating).
        available: U256,
        /// What is left of the cap on chain.
        remaining: U256,
        /// Token amounts of this agent's intents in flight.
        in_flight: U256,
    },
    /// Too much value for the current period.
    #[error(
        "the intent moves {requested} wei but only {available} wei of budget period {period_index} are available (left {remaining}, in flight {in_flight}); the next period starts at {resets_at}"
    )]
    PeriodOverBudget {
        /// The current period.
        period_index: u64,
        /// Total value of the intent.
        requested: U256,
        /// `remaining − in_flight` (saturating).
        available: U256,
        /// What is left of the period's cap on chain.
        remaining: U256,
        /// Value of this agent's intents in flight in this period.
        in_flight: U256,
        /// When the next period starts (unix seconds).
        resets_at: u64,
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
            Refusal::PeriodEnding { .. } => RefusalCode::PeriodEnding,
            Refusal::PeriodOverBudget { .. } => RefusalCode::PeriodOverBudget,
            Refusal::UsageExhausted { .. } => RefusalCode::UsageExhausted,
            Refusal::GasOverBudget { .. } => RefusalCode::GasOverBudget,
            Refusal::TargetNotAllowed { .. } => RefusalCode::TargetNotAllowed,
            Refusal::SelectorNotAllowed { .. } => RefusalCode::SelectorNotAllowed,
            Refusal::MalformedTokenCall { .. } => RefusalCode::MalformedTokenCall,
            Refusal::TokenOverBudget { .. } => RefusalCode::TokenOverBudget,
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

/// What a passing pre-check found: what the operation will charge the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrecheckPass {
    /// Total native value of the intent.
    pub value: U256,
    /// Value budget left for further intents once this one lands (and those in flight).
    pub budget_after: U256,
    /// Token amounts counted, per token.
    pub tokens: BTreeMap<Address, U256>,
    /// The gas charge checked (the operation's maximum cost), when one was given.
    pub gas: Option<U256>,
}

/// A call as the validator sees it on a capped token: counted, or left to the selector rules.
enum TokenCall {
    Counted(U256),
    NotCounted,
    Malformed,
}

/// Mirrors the validator's `_countTokenCall` for `data` sent by `account`.
fn token_call(selector: Selector, data: &[u8], account: Address) -> TokenCall {
    let word = |offset: usize| U256::from_be_slice(&data[offset..offset + 32]);
    if selector == TRANSFER || selector == APPROVE || selector == INCREASE_ALLOWANCE {
        if data.len() < 68 {
            return TokenCall::Malformed;
        }
        TokenCall::Counted(word(36))
    } else if selector == TRANSFER_FROM {
        if data.len() < 100 {
            return TokenCall::Malformed;
        }
        let from = word(4);
        if from >> 160 != U256::ZERO {
            return TokenCall::Malformed;
        }
        if Address::from_word(from.into()) != account {
            return TokenCall::NotCounted;
        }
        TokenCall::Counted(word(68))
    } else {
        TokenCall::NotCounted
    }
}

/// Checks `calls` of `snapshot.key` on `snapshot.account` against the on-chain session in the
/// validator's order — session exists and is not revoked, window (with `margins`, at `now`),
/// usage limit, gas budget (when `max_gas_cost` is known), then each call: target listed (and
/// neither the account nor `snapshot.validator`), function allowed, token amounts within their
/// caps, and the total value within the remaining budget — each budget net of what this agent
/// has `in_flight`.
///
/// `max_gas_cost` is the operation's maximum cost once its gas is estimated (`None` before: the
/// gas rule is then skipped; call again with it). The companion's operations name no paymaster,
/// so the gas is always charged. `snapshot` must hold the permission of every target of `calls`
/// and the selectors asked about; a missing target counts as not listed.
///
/// This is `AgentAccount`'s path; [`precheck_on`] takes the account's [`ValidatorPath`].
// A refusal (about 160 bytes) is returned once per refused request; boxing it buys nothing.
#[allow(clippy::result_large_err)]
pub fn precheck(
    snapshot: &SessionSnapshot,
    calls: &[Call],
    in_flight: &InFlight,
    max_gas_cost: Option<U256>,
    now: u64,
    margins: ValidityMargins,
) -> Result<PrecheckPass, Refusal> {
    precheck_on(
        ValidatorPath::AgentAccount,
        snapshot,
        calls,
        in_flight,
        max_gas_cost,
        now,
        margins,
    )
}

/// [`precheck`] on the validator's `path` (read it with the snapshot, at one block, with
/// [`crate::node::NodeClient::read_session_for_calls_on`]). On an ERC-7579 account's module path, as the
/// validator: a session is refused as revoked ([`Refusal::SessionRevoked`]) when the module is
/// not installed or the session was granted before its last uninstallation
/// (`ModuleNotInstalled`, `SessionUninstalled`); a call to address 0 is refused
/// ([`TargetProblem::ZeroAddress`]); a period index beyond the 16 bits of the module's nonce key
/// cannot be named ([`Refusal::SessionExpired`]).
///
/// The pre-check takes calls, not callData: the companion encodes them itself with the kind's
/// `execute` ([`crate::account::AccountKind::encode_calls`]), which only ever makes plain single
/// and batch calls. To check a callData from elsewhere, decode it first with
/// [`crate::account::AccountKind::decode_calls`], which refuses what the validator's path
/// refuses (delegatecall, try mode, `executeFromExecutor`, non-canonical encoding: see
/// [`crate::erc7579::decode_execute`]).
#[allow(clippy::result_large_err)]
pub fn precheck_on(
    path: ValidatorPath,
    snapshot: &SessionSnapshot,
    calls: &[Call],
    in_flight: &InFlight,
    max_gas_cost: Option<U256>,
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
    let ended = match path {
        ValidatorPath::AgentAccount => false,
        ValidatorPath::Erc7579(module) => !module.admits(s),
    };
    if !s.active || ended {
        return Err(Refusal::SessionRevoked {
            account: snapshot.account,
            key: snapshot.key,
        });
    }
    if matches!(path, ValidatorPath::Erc7579(_))
        && s.period != 0
        && snapshot.period_index > u64::from(u16::MAX)
    {
        return Err(Refusal::SessionExpired {
            valid_until: s.valid_until,
            now,
            margin_secs: margins.min_remaining_secs,
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
    // A periodic session: the operation names the period containing `now`, valid until its end.
    let period = if s.period == 0 {
        None
    } else {
        let index = snapshot.period_index;
        let Some((start, end)) = s.period_window(index) else {
            return Err(Refusal::SessionExpired {
                valid_until: s.valid_until,
                now,
                margin_secs: margins.min_remaining_secs,
            });
        };
        if start.saturating_add(margins.min_elapsed_secs) > now {
            return Err(Refusal::SessionNotYetValid {
                valid_after: start,
                now,
            });
        }
        if end < now.saturating_add(margins.min_remaining_secs) {
            return Err(Refusal::PeriodEnding {
                period_index: index,
                ends_at: end,
                now,
                margin_secs: margins.min_remaining_secs,
            });
        }
        Some((index, end))
    };
    if s.max_ops != 0 && u64::from(s.ops_used) + u64::from(in_flight.ops) >= u64::from(s.max_ops) {
        return Err(Refusal::UsageExhausted {
            max_ops: s.max_ops,
            used: s.ops_used,
            in_flight: in_flight.ops,
        });
    }
    if let Some(max_cost) = max_gas_cost {
        let remaining = s.remaining_gas();
        let available = remaining.saturating_sub(in_flight.gas);
        if max_cost > available {
            return Err(Refusal::GasOverBudget {
                max_cost,
                available,
                remaining,
                in_flight: in_flight.gas,
            });
        }
    }
    let mut tokens: BTreeMap<Address, U256> = BTreeMap::new();
    for call in calls {
        let problem = if call.to == Address::ZERO && matches!(path, ValidatorPath::Erc7579(_)) {
            Some(TargetProblem::ZeroAddress)
        } else if call.to == snapshot.account {
            Some(TargetProblem::IsAccount)
        } else if call.to == snapshot.validator {
            Some(TargetProblem::IsValidator)
        } else {
            None
        };
        let permission = snapshot
            .permissions
            .get(&call.to)
            .copied()
            .unwrap_or_default();
        if let Some(problem) = problem.or((!permission.allowed).then_some(TargetProblem::NotListed))
        {
            return Err(Refusal::TargetNotAllowed {
                target: call.to,
                problem,
            });
        }
        let Some(selector) = selector_of(&call.data) else {
            continue; // a plain transfer
        };
        if permission.is_token {
            match token_call(selector, &call.data, snapshot.account) {
                TokenCall::Malformed => {
                    return Err(Refusal::MalformedTokenCall {
                        token: call.to,
                        selector,
                    })
                }
                TokenCall::Counted(amount) => {
                    let counted = tokens.entry(call.to).or_default();
                    *counted = counted.saturating_add(amount);
                    let remaining =
                        U256::from(permission.token_cap.saturating_sub(permission.token_spent));
                    let pending = in_flight.tokens.get(&call.to).copied().unwrap_or_default();
                    let available = remaining.saturating_sub(pending);
                    if *counted > available {
                        return Err(Refusal::TokenOverBudget {
                            token: call.to,
                            requested: *counted,
                            available,
                            remaining,
                            in_flight: pending,
                        });
                    }
                    continue;
                }
                TokenCall::NotCounted => {}
            }
        }
        if permission.any_selector {
            continue;
        }
        if call.data.len() < 4 || !snapshot.listed_selectors.contains(&(call.to, selector)) {
            return Err(Refusal::SelectorNotAllowed {
                target: call.to,
                selector,
            });
        }
    }
    let requested = total_value(calls);
    let remaining = snapshot.remaining_budget;
    let available = remaining.saturating_sub(in_flight.value);
    if requested > available {
        return Err(Refusal::OverBudget {
            requested,
            available,
            remaining,
            in_flight: in_flight.value,
        });
    }
    if let Some((period_index, end)) = period {
        let remaining = U256::from(s.period_cap.saturating_sub(snapshot.period_spent));
        let available = remaining.saturating_sub(in_flight.period_value);
        if requested > available {
            return Err(Refusal::PeriodOverBudget {
                period_index,
                requested,
                available,
                remaining,
                in_flight: in_flight.period_value,
                resets_at: end.saturating_add(1),
            });
        }
    }
    Ok(PrecheckPass {
        value: requested,
        budget_after: available - requested,
        tokens,
        gas: max_gas_cost,
    })
}

#[cfg(test)]
// The helpers return what `precheck` returns.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use alloy::primitives::{address, bytes};
    use alloy::sol_types::SolValue;

    const ACCOUNT: Address = address!("0xAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    const KEY: Address = address!("0x4b39F7b0624b9dB86AD293686bc38B903142dbBc");
    const VALIDATOR: Address = address!("0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0");
    const ENTRY: Address = address!("0x0000000071727De22E5E9d8BAf0edAc6f37da032");
    const ALLOWED: Address = address!("0x1111111111111111111111111111111111111111");
    const OTHER: Address = address!("0x2222222222222222222222222222222222222222");
    const TOKEN: Address = address!("0x3333333333333333333333333333333333333333");
    const DAPP: Address = address!("0x4444444444444444444444444444444444444444");
    const NOW: u64 = 1_800_000_000;
    const SWAP: Selector = FixedBytes([0x12, 0x34, 0x56, 0x78]);

    fn snapshot() -> SessionSnapshot {
        let session = OnChainSession {
            valid_after: NOW - 100,
            valid_until: NOW + 3600,
            revoker: OTHER,
            spend_cap: 1000,
            spent: 400,
            gas_cap: 10_000,
            gas_spent: 1_000,
            max_ops: 0,
            ops_used: 3,
            paymaster: Address::ZERO,
            epoch: 1,
            active: true,
            period: 0,
            period_cap: 0,
            lane: 1,
            generation: 2,
        };
        let listed = TargetState {
            allowed: true,
            ..Default::default()
        };
        SessionSnapshot {
            account: ACCOUNT,
            key: KEY,
            validator: VALIDATOR,
            block_number: 10,
            block_timestamp: NOW,
            session,
            remaining_budget: session.remaining_value(),
            allowed_targets: [(ALLOWED, true), (OTHER, false)].into_iter().collect(),
            permissions: [
                (ALLOWED, listed),
                (OTHER, TargetState::default()),
                (DAPP, listed),
                (
                    TOKEN,
                    TargetState {
                        allowed: true,
                        is_token: true,
                        token_cap: 500,
                        token_spent: 100,
                        ..Default::default()
                    },
                ),
            ]
            .into_iter()
            .collect(),
            listed_selectors: [(DAPP, SWAP)].into_iter().collect(),
            at: NOW,
            period_index: 0,
            period_spent: 0,
        }
    }

    fn pay(to: Address, wei: u64) -> Call {
        Call::transfer(to, U256::from(wei))
    }

    fn erc20(selector: Selector, args: impl SolValue) -> Bytes {
        // Static arguments only: the tuple encoding is the parameter encoding.
        [selector.as_slice(), &args.abi_encode()].concat().into()
    }

    fn token(selector: Selector, args: impl SolValue) -> Call {
        Call::new(TOKEN, U256::ZERO, erc20(selector, args))
    }

    fn check(s: &SessionSnapshot, calls: &[Call]) -> Result<PrecheckPass, Refusal> {
        precheck(
            s,
            calls,
            &InFlight::default(),
            None,
            NOW,
            ValidityMargins::default(),
        )
    }

    fn code(r: Result<PrecheckPass, Refusal>) -> RefusalCode {
        r.unwrap_err().code()
    }

    #[test]
    fn within_policy_passes() {
        let in_flight = InFlight {
            value: U256::from(100),
            ..Default::default()
        };
        let pass = precheck(
            &snapshot(),
            &[pay(ALLOWED, 100), pay(ALLOWED, 200)],
            &in_flight,
            Some(U256::from(5000)),
            NOW,
            ValidityMargins::default(),
        )
        .unwrap();
        assert_eq!(pass.value, U256::from(300));
        assert_eq!(pass.budget_after, U256::from(200));
        assert_eq!(pass.gas, Some(U256::from(5000)));
        assert!(pass.tokens.is_empty());
    }

    #[test]
    fn session_existence_and_revocation() {
        let mut s = snapshot();
        s.session.active = false;
        assert_eq!(
            code(check(&s, &[pay(ALLOWED, 1)])),
            RefusalCode::SessionRevoked
        );
        s.session = OnChainSession::default();
        assert_eq!(code(check(&s, &[pay(ALLOWED, 1)])), RefusalCode::NoSession);
    }

    #[test]
    fn window_with_margins() {
        let m = ValidityMargins::default();
        let none = InFlight::default();
        let mut s = snapshot();
        s.session.valid_until = NOW + 29;
        assert_eq!(
            code(check(&s, &[pay(ALLOWED, 1)])),
            RefusalCode::SessionExpired
        );
        s.session.valid_until = NOW + 30;
        assert!(check(&s, &[pay(ALLOWED, 1)]).is_ok());
        s.session.valid_until = 0; // no end
        assert!(check(&s, &[pay(ALLOWED, 1)]).is_ok());
        s.session.valid_after = NOW + 1;
        assert_eq!(
            code(check(&s, &[pay(ALLOWED, 1)])),
            RefusalCode::SessionNotYetValid
        );
        s.session.valid_after = NOW - 3;
        let strict = ValidityMargins {
            min_elapsed_secs: 5,
            ..m
        };
        assert_eq!(
            code(precheck(&s, &[pay(ALLOWED, 1)], &none, None, NOW, strict)),
            RefusalCode::SessionNotYetValid
        );
    }

    #[test]
    fn targets() {
        for (target, problem) in [
            (OTHER, TargetProblem::NotListed),
            (
                address!("0x5555555555555555555555555555555555555555"),
                TargetProblem::NotListed,
            ),
            (ACCOUNT, TargetProblem::IsAccount),
            (VALIDATOR, TargetProblem::IsValidator),
        ] {
            let mut s = snapshot();
            // Even if the chain said it was allowed, the account and validator never are.
            for a in [ACCOUNT, VALIDATOR] {
                s.permissions.insert(
                    a,
                    TargetState {
                        allowed: true,
                        any_selector: true,
                        ..Default::default()
                    },
                );
            }
            let err = check(&s, &[pay(ALLOWED, 1), pay(target, 0)]).unwrap_err();
            assert_eq!(err, Refusal::TargetNotAllowed { target, problem });
            assert_eq!(err.code().as_str(), "target_not_allowed");
        }
    }

    #[test]
    fn selectors() {
        let s = snapshot();
        // A listed selector passes; a plain transfer to the same target too.
        let swap = Call::new(DAPP, U256::ZERO, [SWAP.as_slice(), &[7u8; 40]].concat());
        assert!(check(&s, &[swap.clone(), pay(DAPP, 5)]).is_ok());
        // Another selector, short data and a transfer-only target with data are refused.
        for (to, data) in [
            (DAPP, vec![0xde, 0xad, 0xbe, 0xef, 1]),
            (DAPP, vec![0x12, 0x34]),
            (ALLOWED, vec![0x12, 0x34, 0x56, 0x78]),
        ] {
            let err = check(&s, &[Call::new(to, U256::ZERO, data.clone())]).unwrap_err();
            assert_eq!(
                err,
                Refusal::SelectorNotAllowed {
                    target: to,
                    selector: selector_of(&data).unwrap()
                }
            );
        }
        // anySelector lets everything through, short data included.
        let mut s = snapshot();
        s.permissions.get_mut(&ALLOWED).unwrap().any_selector = true;
        assert!(check(&s, &[Call::new(ALLOWED, U256::ZERO, vec![1u8, 2])]).is_ok());
    }

    #[test]
    fn tokens_are_counted_and_capped() {
        let s = snapshot(); // cap 500, spent 100: 400 left
        let to = OTHER;
        let pass = check(
            &s,
            &[
                token(TRANSFER, (to, U256::from(150))),
                token(APPROVE, (to, U256::from(100))),
                token(INCREASE_ALLOWANCE, (to, U256::from(50))),
                token(TRANSFER_FROM, (ACCOUNT, to, U256::from(100))),
            ],
        )
        .unwrap();
        assert_eq!(pass.tokens[&TOKEN], U256::from(400));
        let err = check(
            &s,
            &[
                token(TRANSFER, (to, U256::from(300))),
                token(APPROVE, (to, U256::from(101))),
            ],
        )
        .unwrap_err();
        assert_eq!(
            err,
            Refusal::TokenOverBudget {
                token: TOKEN,
                requested: U256::from(401),
                available: U256::from(400),
                remaining: U256::from(400),
                in_flight: U256::ZERO,
            }
        );
        // In flight counts.
        let in_flight = InFlight {
            tokens: [(TOKEN, U256::from(350))].into_iter().collect(),
            ..Default::default()
        };
        assert_eq!(
            code(precheck(
                &s,
                &[token(TRANSFER, (to, U256::from(51)))],
                &in_flight,
                None,
                NOW,
                ValidityMargins::default()
            )),
            RefusalCode::TokenOverBudget
        );
        // Huge amounts do not wrap.
        assert_eq!(
            code(check(&s, &[token(APPROVE, (to, U256::MAX))])),
            RefusalCode::TokenOverBudget
        );
    }

    #[test]
    fn token_calls_not_counted_need_their_selector() {
        let mut s = snapshot();
        let other_from = token(TRANSFER_FROM, (OTHER, DAPP, U256::from(1)));
        assert_eq!(
            check(&s, std::slice::from_ref(&other_from)).unwrap_err(),
            Refusal::SelectorNotAllowed {
                target: TOKEN,
                selector: TRANSFER_FROM
            }
        );
        let burn = token(FixedBytes([0x42, 0x96, 0x6c, 0x68]), (U256::from(1),));
        assert_eq!(
            code(check(&s, std::slice::from_ref(&burn))),
            RefusalCode::SelectorNotAllowed
        );
        s.listed_selectors.insert((TOKEN, TRANSFER_FROM));
        let pass = check(&s, &[other_from]).unwrap();
        assert!(pass.tokens.is_empty(), "not the account's tokens");
        // A plain transfer to the token is allowed and counts as value only.
        assert!(check(&s, &[pay(TOKEN, 1)]).unwrap().tokens.is_empty());
    }

    #[test]
    fn malformed_token_calls() {
        let s = snapshot();
        let short = Call::new(
            TOKEN,
            U256::ZERO,
            erc20(TRANSFER, (OTHER, U256::from(1)))[..67].to_vec(),
        );
        assert_eq!(code(check(&s, &[short])), RefusalCode::MalformedTokenCall);
        let mut dirty = erc20(TRANSFER_FROM, (ACCOUNT, OTHER, U256::from(1))).to_vec();
        dirty[4] = 1; // upper bits of `from`
        assert_eq!(
            code(check(&s, &[Call::new(TOKEN, U256::ZERO, dirty)])),
            RefusalCode::MalformedTokenCall
        );
    }

    #[test]
    fn gas_budget_counts_in_flight() {
        let s = snapshot(); // 9_000 left
        let m = ValidityMargins::default();
        let mut in_flight = InFlight::default();
        let ok = |f: &InFlight, cost: u64| {
            precheck(&s, &[pay(ALLOWED, 1)], f, Some(U256::from(cost)), NOW, m)
        };
        assert!(ok(&in_flight, 9_000).is_ok());
        assert_eq!(
            ok(&in_flight, 9_001).unwrap_err(),
            Refusal::GasOverBudget {
                max_cost: U256::from(9_001),
                available: U256::from(9_000),
                remaining: U256::from(9_000),
                in_flight: U256::ZERO,
            }
        );
        in_flight.add(U256::ZERO, U256::from(8_000), &BTreeMap::new(), true);
        assert_eq!(code(ok(&in_flight, 1_001)), RefusalCode::GasOverBudget);
        assert!(ok(&in_flight, 1_000).is_ok());
        // Without a known cost the gas rule waits for the second call.
        assert!(precheck(&s, &[pay(ALLOWED, 1)], &in_flight, None, NOW, m).is_ok());
    }

    #[test]
    fn usage_limit_counts_in_flight() {
        let mut s = snapshot();
        s.session.max_ops = 5;
        s.session.ops_used = 3;
        let m = ValidityMargins::default();
        let mut in_flight = InFlight::default();
        assert!(precheck(&s, &[pay(ALLOWED, 1)], &in_flight, None, NOW, m).is_ok());
        // 3 made + 1 in flight: this one is the fifth and last.
        in_flight.add(U256::ZERO, U256::ZERO, &BTreeMap::new(), true);
        assert!(precheck(&s, &[pay(ALLOWED, 1)], &in_flight, None, NOW, m).is_ok());
        in_flight.add(U256::ZERO, U256::ZERO, &BTreeMap::new(), true);
        assert_eq!(
            precheck(&s, &[pay(ALLOWED, 1)], &in_flight, None, NOW, m).unwrap_err(),
            Refusal::UsageExhausted {
                max_ops: 5,
                used: 3,
                in_flight: 2
            }
        );
        s.session.max_ops = 0; // no limit
        assert!(precheck(&s, &[pay(ALLOWED, 1)], &in_flight, None, NOW, m).is_ok());
    }

    #[test]
    fn budget_counts_in_flight_intents() {
        let m = ValidityMargins::default();
        let s = snapshot();
        let value = |v: u64| InFlight {
            value: U256::from(v),
            ..Default::default()
        };
        assert!(check(&s, &[pay(ALLOWED, 600)]).is_ok());
        assert_eq!(
            precheck(&s, &[pay(ALLOWED, 600)], &value(1), None, NOW, m).unwrap_err(),
            Refusal::OverBudget {
                requested: U256::from(600),
                available: U256::from(599),
                remaining: U256::from(600),
                in_flight: U256::from(1),
            }
        );
        // In flight above the remaining budget leaves nothing, without underflow.
        assert_eq!(
            code(precheck(&s, &[pay(ALLOWED, 1)], &value(700), None, NOW, m)),
            RefusalCode::OverBudget
        );
        // Zero-value calls pass even with nothing left.
        assert!(precheck(&s, &[pay(ALLOWED, 0)], &value(700), None, NOW, m).is_ok());
        // A sum over the budget across calls of one intent.
        assert_eq!(
            code(check(&s, &[pay(ALLOWED, 300), pay(ALLOWED, 301)])),
            RefusalCode::OverBudget
        );
    }

    #[test]
    fn order_matches_the_validator() {
        // Revoked beats everything; usage and gas beat targets; targets beat budget.
        let m = ValidityMargins::default();
        let mut s = snapshot();
        let none = InFlight::default();
        assert_eq!(
            code(check(&s, &[pay(OTHER, 10_000)])),
            RefusalCode::TargetNotAllowed
        );
        assert_eq!(
            code(precheck(
                &s,
                &[pay(OTHER, 10_000)],
                &none,
                Some(U256::from(1_000_000)),
                NOW,
                m
            )),
            RefusalCode::GasOverBudget
        );
        s.session.max_ops = 3;
        assert_eq!(
            code(precheck(
                &s,
                &[pay(OTHER, 10_000)],
                &none,
                Some(U256::from(1_000_000)),
                NOW,
                m
            )),
            RefusalCode::UsageExhausted
        );
        s.session.active = false;
        assert_eq!(
            code(check(&s, &[pay(OTHER, 10_000)])),
            RefusalCode::SessionRevoked
        );
    }

    /// A snapshot of a session with 1-hour periods from NOW - 100, 300 wei per period, 120 of it
    /// spent in the current period (0).
    fn periodic() -> SessionSnapshot {
        let mut s = snapshot();
        s.session.period = 3600;
        s.session.period_cap = 300;
        s.period_index = s.session.period_index(NOW);
        s.period_spent = 120;
        s
    }

    const MODULE: ModuleState = ModuleState {
        installed: true,
        generation: 2,
        lanes: 1,
    };

    fn check_7579(
        s: &SessionSnapshot,
        module: ModuleState,
        calls: &[Call],
    ) -> Result<PrecheckPass, Refusal> {
        precheck_on(
            ValidatorPath::Erc7579(module),
            s,
            calls,
            &InFlight::default(),
            None,
            NOW,
            ValidityMargins::default(),
        )
    }

    /// The module path: the same rules as AgentAccount's, plus the module's generation and
    /// address 0 (which an ERC-7579 account takes for itself).
    #[test]
    fn module_path_adds_the_generation_and_address_zero() {
        let s = snapshot();
        let calls = [pay(ALLOWED, 10), token(TRANSFER, (OTHER, U256::from(5)))];
        assert_eq!(
            check_7579(&s, MODULE, &calls),
            check(&s, &calls),
            "same pass as on AgentAccount"
        );
        for calls in [
            vec![pay(OTHER, 1)],
            vec![pay(ALLOWED, 601)],
            vec![pay(ACCOUNT, 0)],
            vec![Call::new(DAPP, U256::ZERO, bytes!("deadbeef"))],
        ] {
            assert_eq!(check_7579(&s, MODULE, &calls), check(&s, &calls));
        }
        // Uninstalled, or uninstalled since the grant (reinstalled or not): ended, as revoked.
        for module in [
            ModuleState {
                installed: false,
                ..MODULE
            },
            ModuleState {
                generation: 3,
                ..MODULE
            },
        ] {
            assert!(!module.admits(&s.session));
            assert_eq!(
                check_7579(&s, module, &[pay(ALLOWED, 1)]).unwrap_err(),
                Refusal::SessionRevoked {
                    account: ACCOUNT,
                    key: KEY
                }
            );
        }
        assert!(MODULE.admits(&s.session));
        // Address 0, even when listed: refused on the module path only.
        let mut zero = s.clone();
        zero.permissions.insert(
            Address::ZERO,
            TargetState {
                allowed: true,
                ..Default::default()
            },
        );
        assert!(check(&zero, &[pay(Address::ZERO, 1)]).is_ok());
        assert_eq!(
            check_7579(&zero, MODULE, &[pay(ALLOWED, 1), pay(Address::ZERO, 1)]).unwrap_err(),
            Refusal::TargetNotAllowed {
                target: Address::ZERO,
                problem: TargetProblem::ZeroAddress
            }
        );
        // A period index the module's 16-bit key cannot name.
        let mut late = periodic();
        late.period_index = 1 << 16;
        late.session.valid_until = 0;
        assert_eq!(
            code(check_7579(&late, MODULE, &[pay(ALLOWED, 1)])),
            RefusalCode::SessionExpired
        );
        // No session is no session on either path.
        let mut none = s.clone();
        none.session.epoch = 0;
        assert_eq!(
            code(check_7579(&none, MODULE, &[pay(ALLOWED, 1)])),
            RefusalCode::NoSession
        );
    }

    #[test]
    fn periods_and_their_windows() {
        let s = periodic().session;
        assert_eq!(s.period_index(NOW), 0);
        assert_eq!(s.period_index(NOW - 1000), 0, "before the window: period 0");
        assert_eq!(s.period_index(NOW - 100 + 3600), 1);
        assert_eq!(s.period_window(0), Some((NOW - 100, NOW - 100 + 3599)));
        assert_eq!(
            s.period_window(1),
            Some((NOW - 100 + 3600, NOW + 3600)),
            "clipped to validUntil"
        );
        assert_eq!(s.period_window(2), None, "past validUntil");
        assert_eq!(s.period_window(u64::MAX), None, "no overflow");
        let mut open_ended = s;
        open_ended.valid_until = 0;
        assert_eq!(
            open_ended.period_window(2),
            Some((NOW - 100 + 7200, NOW - 100 + 10799))
        );
        assert_eq!(snapshot().session.period_window(0), None, "no period");
    }

    #[test]
    fn periodic_cap_counts_the_period_and_its_in_flight() {
        let m = ValidityMargins::default();
        let s = periodic(); // 180 left in period 0
        assert!(check(&s, &[pay(ALLOWED, 180)]).is_ok());
        assert_eq!(
            check(&s, &[pay(ALLOWED, 100), pay(ALLOWED, 81)]).unwrap_err(),
            Refusal::PeriodOverBudget {
                period_index: 0,
                requested: U256::from(181),
                available: U256::from(180),
                remaining: U256::from(180),
                in_flight: U256::ZERO,
                resets_at: NOW - 100 + 3600,
            }
        );
        // Intents in flight in this period count; those of other periods do not.
        let mut in_flight = InFlight::default();
        in_flight.add(U256::from(50), U256::ZERO, &BTreeMap::new(), true);
        in_flight.add(U256::from(70), U256::ZERO, &BTreeMap::new(), false);
        assert_eq!(in_flight.value, U256::from(120));
        assert_eq!(in_flight.period_value, U256::from(50));
        assert!(precheck(&s, &[pay(ALLOWED, 130)], &in_flight, None, NOW, m).is_ok());
        assert_eq!(
            code(precheck(&s, &[pay(ALLOWED, 131)], &in_flight, None, NOW, m)),
            RefusalCode::PeriodOverBudget
        );
        // The overall cap still binds first (600 left, 120 in flight).
        let mut big = periodic();
        big.session.period_cap = 10_000;
        assert_eq!(
            code(precheck(
                &big,
                &[pay(ALLOWED, 481)],
                &in_flight,
                None,
                NOW,
                m
            )),
            RefusalCode::OverBudget
        );
        // Zero-value calls pass a spent period.
        let mut spent = periodic();
        spent.period_spent = 300;
        assert!(check(&spent, &[pay(ALLOWED, 0)]).is_ok());
        assert_eq!(
            code(check(&spent, &[pay(ALLOWED, 1)])),
            RefusalCode::PeriodOverBudget
        );
    }

    #[test]
    fn a_period_ending_within_the_margin_is_refused() {
        let m = ValidityMargins::default();
        let s = periodic();
        let end = NOW - 100 + 3599;
        let at = |now: u64| {
            let mut s = s.clone();
            s.period_index = s.session.period_index(now);
            precheck(&s, &[pay(ALLOWED, 1)], &InFlight::default(), None, now, m)
        };
        assert!(at(end - 30).is_ok());
        assert_eq!(
            at(end - 29).unwrap_err(),
            Refusal::PeriodEnding {
                period_index: 0,
                ends_at: end,
                now: end - 29,
                margin_secs: 30
            }
        );
        // The next period is its own.
        assert!(at(end + 1).is_ok());
        // Where validAfter is exclusive (EntryPoint v0.8), a period's first second is not yet.
        let v08 = ValidityMargins {
            min_elapsed_secs: 1,
            ..m
        };
        let mut next = s.clone();
        next.period_index = 1;
        assert_eq!(
            precheck(
                &next,
                &[pay(ALLOWED, 1)],
                &InFlight::default(),
                None,
                end + 1,
                v08
            )
            .unwrap_err(),
            Refusal::SessionNotYetValid {
                valid_after: end + 1,
                now: end + 1
            }
        );
        assert!(precheck(
            &next,
            &[pay(ALLOWED, 1)],
            &InFlight::default(),
            None,
            end + 2,
            v08
        )
        .is_ok());
    }

    #[test]
    fn codes_are_stable_strings() {
        let expected = [
            "no_session",
            "session_revoked",
            "session_not_yet_valid",
            "session_expired",
            "target_not_allowed",
            "selector_not_allowed",
            "over_budget",
            "gas_over_budget",
            "token_over_budget",
            "malformed_token_call",
            "usage_exhausted",
            "paymaster_not_allowed",
            "lane_not_allowed",
            "period_over_budget",
            "period_ending",
        ];
        for (c, s) in RefusalCode::ALL.into_iter().zip(expected) {
            assert_eq!(c.as_str(), s);
            assert_eq!(serde_json::to_value(c).unwrap(), s);
        }
    }

    #[test]
    fn selectors_parse_from_hex_and_signatures() {
        assert_eq!(parse_selector("0xa9059cbb").unwrap(), TRANSFER);
        assert_eq!(
            parse_selector("transfer(address,uint256)").unwrap(),
            TRANSFER
        );
        assert_eq!(
            parse_selector(" transfer(address, uint256) ").unwrap(),
            TRANSFER
        );
        assert_eq!(parse_selector("approve(address,uint256)").unwrap(), APPROVE);
        assert_eq!(
            parse_selector("increaseAllowance(address,uint256)").unwrap(),
            INCREASE_ALLOWANCE
        );
        assert_eq!(
            parse_selector("transferFrom(address,address,uint256)").unwrap(),
            TRANSFER_FROM
        );
        for bad in [
            "0xa9059c",
            "0xzz059cbb",
            "transfer",
            "(address)",
            "tr ansfer(x",
            "",
        ] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
        assert_eq!(selector_of(&[]), None);
        assert_eq!(selector_of(&[1, 2]), Some(FixedBytes([1, 2, 0, 0])));
    }

    fn grant() -> SessionGrant {
        SessionGrant {
            key: KEY,
            targets: vec![
                TargetPermission::transfers_only(ALLOWED),
                TargetPermission::with_selectors(DAPP, vec![SWAP]),
            ],
            tokens: vec![TokenLimit {
                token: TOKEN,
                cap: 7,
            }],
            spend_cap: 10,
            gas_cap: 20,
            paymaster: None,
            max_ops: 3,
            period: 0,
            period_cap: 0,
            valid_after: 5,
            valid_until: 0,
            revoker: OTHER,
        }
    }

    #[test]
    fn grant_encoding() {
        let g = grant();
        assert_eq!(g.validate(ACCOUNT, VALIDATOR, ENTRY), Ok(()));
        let call = SessionKeyValidator::grantSessionCall::abi_decode(&g.grant_call_data()).unwrap();
        let c = call.grant;
        assert_eq!(c.key, KEY);
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.targets[1].target, DAPP);
        assert_eq!(c.targets[1].selectors, vec![SWAP]);
        assert!(!c.targets[0].anySelector);
        assert_eq!(
            (c.tokens[0].token, c.tokens[0].cap.to::<u128>()),
            (TOKEN, 7)
        );
        assert_eq!(c.spendCap, 10);
        assert_eq!(c.gasCap.to::<u128>(), 20);
        assert_eq!(c.maxOps, 3);
        assert_eq!(c.paymaster, Address::ZERO);
        assert_eq!(c.validAfter.to::<u64>(), 5);
        assert_eq!(c.revoker, OTHER);
        let owner_call = g.owner_call(VALIDATOR);
        assert_eq!((owner_call.to, owner_call.value), (VALIDATOR, U256::ZERO));
        assert_eq!(g.needs_code(), vec![TOKEN, DAPP]);
        // The JSON form round-trips, amounts as decimal strings.
        let json = serde_json::to_value(&g).unwrap();
        assert_eq!(json["spendCap"], "10");
        assert_eq!(json["tokens"][0]["cap"], "7");
        assert_eq!(serde_json::from_value::<SessionGrant>(json).unwrap(), g);
    }

    #[test]
    fn grant_validation() {
        let bad = |f: &dyn Fn(&mut SessionGrant)| {
            let mut g = grant();
            f(&mut g);
            g.validate(ACCOUNT, VALIDATOR, ENTRY).unwrap_err()
        };
        assert_eq!(bad(&|g| g.key = Address::ZERO), InvalidGrant::ZeroKey);
        assert_eq!(
            bad(&|g| g.valid_until = 5),
            InvalidGrant::EmptyWindow {
                valid_after: 5,
                valid_until: 5
            }
        );
        for forbidden in [ACCOUNT, VALIDATOR, ENTRY, ENTRY_POINT_V08] {
            assert_eq!(
                bad(&|g| g.targets.push(TargetPermission::transfers_only(forbidden))),
                InvalidGrant::ForbiddenTarget(forbidden)
            );
            assert_eq!(
                bad(&|g| g.tokens.push(TokenLimit {
                    token: forbidden,
                    cap: 1
                })),
                InvalidGrant::ForbiddenTarget(forbidden)
            );
        }
        assert_eq!(
            bad(&|g| {
                g.targets.clear();
                g.tokens.clear();
            }),
            InvalidGrant::NoTargets
        );
        assert_eq!(
            bad(&|g| g.targets.push(TargetPermission::any(ALLOWED))),
            InvalidGrant::DuplicateTarget(ALLOWED)
        );
        assert_eq!(
            bad(&|g| g.tokens.push(TokenLimit {
                token: TOKEN,
                cap: 1
            })),
            InvalidGrant::DuplicateTarget(TOKEN)
        );
        assert_eq!(
            bad(&|g| g.targets[1].selectors.push(SWAP)),
            InvalidGrant::DuplicateSelector {
                target: DAPP,
                selector: SWAP
            }
        );
        assert_eq!(
            bad(&|g| g.targets[1].any_selector = true),
            InvalidGrant::ConflictingPermission(DAPP)
        );
        assert_eq!(
            bad(&|g| g.targets.push(TargetPermission::any(TOKEN))),
            InvalidGrant::ConflictingPermission(TOKEN)
        );
        assert_eq!(
            bad(&|g| g.tokens[0].cap = 0),
            InvalidGrant::ZeroTokenCap(TOKEN)
        );
        assert_eq!(
            bad(&|g| g.gas_cap = MAX_GAS_CAP + 1),
            InvalidGrant::GasCapTooLarge(MAX_GAS_CAP + 1)
        );
        assert_eq!(
            bad(&|g| g.paymaster = Some(Address::ZERO)),
            InvalidGrant::ZeroPaymaster
        );
        assert_eq!(
            bad(&|g| g.tokens[0].cap = MAX_TOKEN_CAP + 1),
            InvalidGrant::TokenCapTooLarge {
                token: TOKEN,
                cap: MAX_TOKEN_CAP + 1
            }
        );
        for (period, period_cap) in [(3600, 0), (0, 5), (59, 5)] {
            assert_eq!(
                bad(&|g| {
                    g.period = period;
                    g.period_cap = period_cap;
                }),
                InvalidGrant::InvalidPeriod { period, period_cap }
            );
        }
        let mut periodic = grant();
        periodic.period = MIN_PERIOD;
        periodic.period_cap = 1;
        assert_eq!(periodic.validate(ACCOUNT, VALIDATOR, ENTRY), Ok(()));
        let call =
            SessionKeyValidator::grantSessionCall::abi_decode(&periodic.grant_call_data()).unwrap();
        assert_eq!((call.grant.period, call.grant.periodCap), (MIN_PERIOD, 1));
        assert!(matches!(
            bad(&|g| g.valid_until = 1 << 48),
            InvalidGrant::TimestampTooLarge {
                field: "validUntil",
                ..
            }
        ));
        assert!(matches!(
            bad(&|g| g.targets[1].selectors = (0..=MAX_SELECTORS as u32)
                .map(|i| FixedBytes(i.to_be_bytes()))
                .collect()),
            InvalidGrant::TooMany { .. }
        ));
    }

    #[test]
    fn revoke_call_data_is_revoke_session() {
        let data = revoke_call_data(ACCOUNT, KEY);
        let call = SessionKeyValidator::revokeSessionCall::abi_decode(&data).unwrap();
        assert_eq!((call.account, call.key), (ACCOUNT, KEY));
    }
}
