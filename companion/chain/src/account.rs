//! The project's smart account ([`AgentAccount`]) and its factory, as call data, and the kinds of
//! account a session can live on.
//!
//! - [`Call`] is one call an operation makes from the account; [`encode_calls`] turns a list into
//!   the account's callData (`execute` for one call, `executeBatch` for several) and
//!   [`decode_calls`] reads it back (the validator's view).
//! - [`AccountKind`]: `AgentAccount` or a third-party ERC-7579 account with the validator
//!   installed as a module; [`AccountKind::encode_calls`] and [`AccountKind::decode_calls`] pick
//!   the account's own `execute` (for ERC-7579 see [`crate::erc7579`]).
//! - [`factory_data`] is the `factoryData` that deploys the account of (owner, salt) in an
//!   operation's validation phase.

use std::fmt;
use std::str::FromStr;

use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::SolCall;
use kms_contracts::{AgentAccount, AgentAccountFactory};
use serde::{Deserialize, Serialize};

/// The kind of smart account a session lives on: what decides its callData, the agents' nonce
/// keys and the validator path (`SessionKeyValidator.validateSessionUserOp` for `AgentAccount`,
/// the ERC-7579 module's `validateUserOp` for the others). The session signature (106 bytes) and
/// its stub are the same for both. Serialised as `"agent-account"` / `"erc7579"`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum AccountKind {
    /// The project's `AgentAccount` (deployed by its factory): `execute(target, value, data)` /
    /// `executeBatch(Call[])`, an agent's nonce key is its key address
    /// ([`crate::nonce::NonceKey::for_agent`]).
    #[default]
    #[serde(rename = "agent-account")]
    AgentAccount,
    /// A third-party ERC-7579 account (OpenZeppelin's `AccountERC7579`, …) with
    /// `SessionKeyValidator` installed as its validator module: ERC-7579 `execute(mode,
    /// executionCalldata)` ([`crate::erc7579`]), an agent's nonce key is `validator ‖ lane ‖
    /// period` ([`crate::nonce::NonceKey::for_module_lane`]), the lane given at its first grant.
    #[serde(rename = "erc7579")]
    Erc7579,
}

impl AccountKind {
    /// Every kind, in declaration order.
    pub const ALL: [AccountKind; 2] = [AccountKind::AgentAccount, AccountKind::Erc7579];

    /// `"agent-account"` or `"erc7579"` (the serialised form).
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::AgentAccount => "agent-account",
            AccountKind::Erc7579 => "erc7579",
        }
    }

    /// The account's callData for `calls`: [`encode_calls`] for `AgentAccount`,
    /// [`crate::erc7579::encode_execute`] for an ERC-7579 account.
    pub fn encode_calls(self, calls: &[Call]) -> Result<Bytes, NoCalls> {
        match self {
            AccountKind::AgentAccount => encode_calls(calls),
            AccountKind::Erc7579 => crate::erc7579::encode_execute(calls),
        }
    }

    /// The calls of an account callData as the validator's path for this kind reads them;
    /// `None` for anything that path refuses (for ERC-7579 the reason is
    /// [`crate::erc7579::decode_execute`]'s).
    pub fn decode_calls(self, call_data: &[u8]) -> Option<Vec<Call>> {
        match self {
            AccountKind::AgentAccount => decode_calls(call_data),
            AccountKind::Erc7579 => crate::erc7579::decode_execute(call_data).ok(),
        }
    }
}

impl fmt::Display for AccountKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`AccountKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown account kind {0:?} (expected \"agent-account\" or \"erc7579\")")]
pub struct UnknownAccountKind(pub String);

impl FromStr for AccountKind {
    type Err = UnknownAccountKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AccountKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownAccountKind(s.to_owned()))
    }
}

/// One call made from the account: `to.call{value}(data)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Call {
    /// The address called.
    pub to: Address,
    /// Native value sent, in wei.
    #[serde(default)]
    pub value: U256,
    /// Call data (empty for a plain transfer).
    #[serde(default)]
    pub data: Bytes,
}

impl Call {
    /// A call to `to` with `value` and `data`.
    pub fn new(to: Address, value: U256, data: impl Into<Bytes>) -> Self {
        Self {
            to,
            value,
            data: data.into(),
        }
    }

    /// A plain native transfer of `value` to `to`.
    pub fn transfer(to: Address, value: U256) -> Self {
        Self::new(to, value, Bytes::new())
    }
}

/// An operation must make at least one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an operation needs at least one call")]
pub struct NoCalls;

/// The account's callData for `calls`: `execute(to, value, data)` for one call,
/// `executeBatch(Call[])` for several.
pub fn encode_calls(calls: &[Call]) -> Result<Bytes, NoCalls> {
    match calls {
        [] => Err(NoCalls),
        [call] => Ok(AgentAccount::executeCall {
            target: call.to,
            value: call.value,
            data: call.data.clone(),
        }
        .abi_encode()
        .into()),
        calls => Ok(AgentAccount::executeBatchCall {
            calls: calls
                .iter()
                .map(|c| AgentAccount::Call {
                    target: c.to,
                    value: c.value,
                    data: c.data.clone(),
                })
                .collect(),
        }
        .abi_encode()
        .into()),
    }
}

/// The calls of an account callData made by [`encode_calls`] (`execute` or `executeBatch`);
/// `None` for anything else.
pub fn decode_calls(call_data: &[u8]) -> Option<Vec<Call>> {
    if let Ok(c) = AgentAccount::executeCall::abi_decode(call_data) {
        return Some(vec![Call::new(c.target, c.value, c.data)]);
    }
    if let Ok(c) = AgentAccount::executeBatchCall::abi_decode(call_data) {
        return Some(
            c.calls
                .into_iter()
                .map(|c| Call::new(c.target, c.value, c.data))
                .collect(),
        );
    }
    None
}

/// The sum of the native values of `calls` (saturating: a sum over 2^256 − 1 cannot fit any cap).
pub fn total_value(calls: &[Call]) -> U256 {
    calls
        .iter()
        .fold(U256::ZERO, |sum, c| sum.saturating_add(c.value))
}

/// `factoryData` deploying the account of (`owner`, `salt`): `createAccount(owner, salt)`.
pub fn factory_data(owner: Address, salt: U256) -> Bytes {
    AgentAccountFactory::createAccountCall { owner, salt }
        .abi_encode()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{address, bytes};

    const A: Address = address!("0x1111111111111111111111111111111111111111");
    const B: Address = address!("0x2222222222222222222222222222222222222222");

    #[test]
    fn one_call_is_execute_several_are_execute_batch() {
        let one = encode_calls(&[Call::transfer(A, U256::from(5))]).unwrap();
        assert_eq!(&one[..4], &AgentAccount::executeCall::SELECTOR);
        let two = encode_calls(&[
            Call::transfer(A, U256::from(5)),
            Call::new(B, U256::ZERO, bytes!("c0ffee")),
        ])
        .unwrap();
        assert_eq!(&two[..4], &AgentAccount::executeBatchCall::SELECTOR);
        assert_eq!(encode_calls(&[]), Err(NoCalls));
    }

    #[test]
    fn decode_round_trips() {
        for calls in [
            vec![Call::new(A, U256::from(7), bytes!("01"))],
            vec![
                Call::transfer(A, U256::from(1)),
                Call::new(B, U256::from(2), bytes!("deadbeef")),
                Call::transfer(B, U256::ZERO),
            ],
        ] {
            assert_eq!(decode_calls(&encode_calls(&calls).unwrap()), Some(calls));
        }
        assert_eq!(decode_calls(&[0xde, 0xad, 0xbe, 0xef]), None);
        assert_eq!(decode_calls(&[]), None);
    }

    #[test]
    fn totals_saturate() {
        assert_eq!(
            total_value(&[
                Call::transfer(A, U256::MAX),
                Call::transfer(B, U256::from(1))
            ]),
            U256::MAX
        );
        assert_eq!(
            total_value(&[
                Call::transfer(A, U256::from(2)),
                Call::transfer(B, U256::from(3))
            ]),
            U256::from(5)
        );
    }

    #[test]
    fn factory_data_is_create_account() {
        let data = factory_data(A, U256::from(9));
        let call = AgentAccountFactory::createAccountCall::abi_decode(&data).unwrap();
        assert_eq!((call.owner, call.salt), (A, U256::from(9)));
    }

    #[test]
    fn kinds_parse_print_and_serialise_alike() {
        for kind in AccountKind::ALL {
            assert_eq!(kind.as_str().parse::<AccountKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.as_str().into())
            );
            assert_eq!(
                serde_json::from_value::<AccountKind>(kind.as_str().into()).unwrap(),
                kind
            );
        }
        assert!("AgentAccount".parse::<AccountKind>().is_err());
        assert_eq!(AccountKind::default(), AccountKind::AgentAccount);
    }

    #[test]
    fn each_kind_round_trips_its_own_call_data_only() {
        let calls = vec![
            Call::transfer(A, U256::from(1)),
            Call::new(B, U256::from(2), bytes!("deadbeef")),
        ];
        for kind in AccountKind::ALL {
            for calls in [&calls[..1], &calls[..]] {
                let data = kind.encode_calls(calls).unwrap();
                assert_eq!(kind.decode_calls(&data).as_deref(), Some(calls));
                let other = AccountKind::ALL.into_iter().find(|k| *k != kind).unwrap();
                assert_eq!(
                    other.decode_calls(&data),
                    None,
                    "{kind} data read as {other}"
                );
            }
            assert_eq!(kind.encode_calls(&[]), Err(NoCalls));
        }
        assert_eq!(
            AccountKind::AgentAccount.encode_calls(&calls).unwrap(),
            encode_calls(&calls).unwrap()
        );
    }

    #[test]
    fn calls_deserialise_with_defaults() {
        let c: Call =
            serde_json::from_str(r#"{"to":"0x1111111111111111111111111111111111111111"}"#).unwrap();
        assert_eq!(c, Call::transfer(A, U256::ZERO));
        let c: Call = serde_json::from_str(
            r#"{"to":"0x1111111111111111111111111111111111111111","value":"0x10","data":"0xab"}"#,
        )
        .unwrap();
        assert_eq!(c, Call::new(A, U256::from(16), bytes!("ab")));
    }
}
