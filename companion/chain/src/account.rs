//! The project's smart account ([`AgentAccount`]) and its factory, as call data.
//!
//! - [`Call`] is one call an operation makes from the account; [`encode_calls`] turns a list into
//!   the account's callData (`execute` for one call, `executeBatch` for several) and
//!   [`decode_calls`] reads it back (the validator's view).
//! - [`factory_data`] is the `factoryData` that deploys the account of (owner, salt) in an
//!   operation's validation phase.

use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::SolCall;
use kms_contracts::{AgentAccount, AgentAccountFactory};
use serde::{Deserialize, Serialize};

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
