//! Decoding the reverts behind an EntryPoint or bundler refusal.
//!
//! When an account's validation reverts, the EntryPoint reports `FailedOpWithRevert(opIndex,
//! "AA23 reverted", inner)` and bundlers put the revert bytes in their error message or data.
//! [`decode`] unwraps those layers and names the innermost error: one of
//! `SessionKeyValidator`'s (`TargetNotAllowed`, `SpendCapExceeded`, `SessionIsRevoked`, …), the
//! account's, the EntryPoint's `FailedOp`, or a plain `Error(string)`.
//! [`DecodedRevert::refusal_code`] maps the validator's errors to the pre-check's
//! [`RefusalCode`]s, so a refusal by the chain reads the same as one by the companion.

use alloy::primitives::{hex, Bytes};
use alloy::sol_types::{Revert, SolError, SolInterface};
use kms_contracts::{AgentAccount, IEntryPointV07, SessionKeyValidator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::session::RefusalCode;

/// A revert, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecodedRevert {
    /// Who defined the error: `SessionKeyValidator`, `AgentAccount`, `EntryPoint` or `Solidity`.
    pub source: String,
    /// The error's name (`TargetNotAllowed`, `FailedOp`, `Error`, …).
    pub name: String,
    /// The error with its arguments, for people.
    pub detail: String,
    /// The EntryPoint's reason string (`AA23 reverted`, …) when the error came wrapped in
    /// `FailedOp`/`FailedOpWithRevert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point_reason: Option<String>,
    /// The raw bytes of the innermost error.
    pub data: Bytes,
}

impl DecodedRevert {
    /// The pre-check code matching a `SessionKeyValidator` error, if there is one. The module
    /// path's calldata errors (`UnsupportedExecutionMode`, `UnsupportedCall`,
    /// `MalformedExecution`) have none: the companion never builds such calldata.
    pub fn refusal_code(&self) -> Option<RefusalCode> {
        if self.source != "SessionKeyValidator" {
            return None;
        }
        Some(match self.name.as_str() {
            "TargetNotAllowed" | "ForbiddenTarget" => RefusalCode::TargetNotAllowed,
            "SelectorNotAllowed" => RefusalCode::SelectorNotAllowed,
            "SpendCapExceeded" => RefusalCode::OverBudget,
            "GasBudgetExceeded" => RefusalCode::GasOverBudget,
            "TokenCapExceeded" => RefusalCode::TokenOverBudget,
            "MalformedTokenCall" => RefusalCode::MalformedTokenCall,
            "UsageLimitReached" => RefusalCode::UsageExhausted,
            "PaymasterNotAllowed" => RefusalCode::PaymasterNotAllowed,
            "NonceLaneNotAllowed" => RefusalCode::LaneNotAllowed,
            "PeriodCapExceeded" => RefusalCode::PeriodOverBudget,
            "PeriodOutsideWindow" => RefusalCode::SessionExpired,
            // On an ERC-7579 account an uninstallation ends the sessions like a revocation.
            "SessionIsRevoked" | "SessionUninstalled" | "ModuleNotInstalled" => {
                RefusalCode::SessionRevoked
            }
            "UnknownSession" => RefusalCode::NoSession,
            _ => return None,
        })
    }
}

/// Decodes revert bytes, unwrapping `FailedOpWithRevert` to the inner error; `None` when the
/// bytes are no known error.
pub fn decode(data: &[u8]) -> Option<DecodedRevert> {
    decode_inner(data, None, 0)
}

fn decode_inner(data: &[u8], ep_reason: Option<String>, depth: u8) -> Option<DecodedRevert> {
    if data.len() < 4 || depth > 4 {
        return None;
    }
    let make = |source: &str, name: &str, detail: String| DecodedRevert {
        source: source.to_owned(),
        name: name.to_owned(),
        detail,
        entry_point_reason: ep_reason.clone(),
        data: Bytes::copy_from_slice(data),
    };
    if let Ok(e) = IEntryPointV07::IEntryPointV07Errors::abi_decode(data) {
        return match e {
            IEntryPointV07::IEntryPointV07Errors::FailedOpWithRevert(e) => {
                decode_inner(&e.inner, Some(e.reason.clone()), depth + 1).or_else(|| {
                    Some(DecodedRevert {
                        entry_point_reason: Some(e.reason.clone()),
                        ..make(
                            "EntryPoint",
                            "FailedOpWithRevert",
                            format!("{} (inner 0x{})", e.reason, hex::encode(&e.inner)),
                        )
                    })
                })
            }
            IEntryPointV07::IEntryPointV07Errors::FailedOp(e) => Some(DecodedRevert {
                entry_point_reason: Some(e.reason.clone()),
                ..make("EntryPoint", "FailedOp", e.reason)
            }),
            IEntryPointV07::IEntryPointV07Errors::SenderAddressResult(e) => {
                Some(make("EntryPoint", "SenderAddressResult", format!("{e:?}")))
            }
        };
    }
    if let Ok(e) = SessionKeyValidator::SessionKeyValidatorErrors::abi_decode(data) {
        let detail = format!("{e:?}");
        let name = detail
            .split([' ', '(', '{'])
            .next()
            .unwrap_or("")
            .to_owned();
        return Some(make("SessionKeyValidator", &name, strip_wrapper(&detail)));
    }
    if let Ok(e) = AgentAccount::AgentAccountErrors::abi_decode(data) {
        let detail = format!("{e:?}");
        let name = detail
            .split([' ', '(', '{'])
            .next()
            .unwrap_or("")
            .to_owned();
        // The account bubbles up its callees' errors too; the validator's are handled above.
        return Some(make("AgentAccount", &name, strip_wrapper(&detail)));
    }
    if data[..4] == Revert::SELECTOR {
        if let Ok(r) = Revert::abi_decode(data) {
            return Some(make("Solidity", "Error", r.reason));
        }
    }
    None
}

/// `TargetNotAllowed(TargetNotAllowed { target: 0x… })` → `TargetNotAllowed { target: 0x… }`.
fn strip_wrapper(debug: &str) -> String {
    match debug.split_once('(') {
        Some((_, rest)) if rest.ends_with(')') => rest[..rest.len() - 1].to_owned(),
        _ => debug.to_owned(),
    }
}

/// Finds and decodes a revert in a bundler's JSON-RPC error: in its `data` (a hex string, or an
/// object with a hex `data`/`revertData`/`reason` field) or in hex words of its message. Returns
/// the first candidate that decodes.
pub fn decode_from_rpc_error(message: &str, data: Option<&Value>) -> Option<DecodedRevert> {
    let mut candidates = Vec::new();
    if let Some(v) = data {
        collect_hex(v, &mut candidates, 0);
    }
    candidates.extend(hex_words(message));
    candidates.iter().find_map(|c| decode(c))
}

fn collect_hex(v: &Value, out: &mut Vec<Vec<u8>>, depth: u8) {
    if depth > 3 {
        return;
    }
    match v {
        Value::String(s) => out.extend(hex_words(s)),
        Value::Object(map) => map.values().for_each(|v| collect_hex(v, out, depth + 1)),
        Value::Array(items) => items.iter().for_each(|v| collect_hex(v, out, depth + 1)),
        _ => {}
    }
}

/// Every `0x…` run of at least 4 bytes of even-length hex in `text`, decoded.
fn hex_words(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'0' && (bytes[i + 1] == b'x' || bytes[i + 1] == b'X') {
            let start = i + 2;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_hexdigit() {
                end += 1;
            }
            let run = &text[start..end];
            if run.len() >= 8 && run.len().is_multiple_of(2) {
                if let Ok(b) = hex::decode(run) {
                    out.push(b);
                }
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{address, U256};

    fn target_not_allowed() -> Vec<u8> {
        SessionKeyValidator::TargetNotAllowed {
            target: address!("0x1111111111111111111111111111111111111111"),
        }
        .abi_encode()
    }

    #[test]
    fn unwraps_failed_op_with_revert() {
        let wrapped = IEntryPointV07::FailedOpWithRevert {
            opIndex: U256::ZERO,
            reason: "AA23 reverted".into(),
            inner: target_not_allowed().into(),
        }
        .abi_encode();
        let d = decode(&wrapped).unwrap();
        assert_eq!(d.source, "SessionKeyValidator");
        assert_eq!(d.name, "TargetNotAllowed");
        assert!(
            d.detail
                .contains("0x1111111111111111111111111111111111111111"),
            "{}",
            d.detail
        );
        assert_eq!(d.entry_point_reason.as_deref(), Some("AA23 reverted"));
        assert_eq!(d.refusal_code(), Some(RefusalCode::TargetNotAllowed));
        assert_eq!(&d.data[..], &target_not_allowed()[..]);
    }

    #[test]
    fn names_each_validator_error_code() {
        let cases: Vec<(Vec<u8>, Option<RefusalCode>)> = vec![
            (
                SessionKeyValidator::SpendCapExceeded {
                    requested: U256::from(2),
                    remaining: U256::from(1),
                }
                .abi_encode(),
                Some(RefusalCode::OverBudget),
            ),
            (
                SessionKeyValidator::SessionIsRevoked {
                    account: Default::default(),
                    key: Default::default(),
                }
                .abi_encode(),
                Some(RefusalCode::SessionRevoked),
            ),
            (
                SessionKeyValidator::UnknownSession {
                    account: Default::default(),
                    key: Default::default(),
                }
                .abi_encode(),
                Some(RefusalCode::NoSession),
            ),
            (
                SessionKeyValidator::SessionUninstalled {
                    account: Default::default(),
                    key: Default::default(),
                }
                .abi_encode(),
                Some(RefusalCode::SessionRevoked),
            ),
            (
                SessionKeyValidator::ModuleNotInstalled {
                    account: Default::default(),
                }
                .abi_encode(),
                Some(RefusalCode::SessionRevoked),
            ),
            (
                SessionKeyValidator::UnsupportedExecutionMode {
                    mode: Default::default(),
                }
                .abi_encode(),
                None,
            ),
            (
                SessionKeyValidator::MalformedExecution {}.abi_encode(),
                None,
            ),
            (
                SessionKeyValidator::ForbiddenTarget {
                    target: Default::default(),
                }
                .abi_encode(),
                Some(RefusalCode::TargetNotAllowed),
            ),
            (
                SessionKeyValidator::GasBudgetExceeded {
                    maxCost: U256::from(9),
                    remaining: U256::from(1),
                }
                .abi_encode(),
                Some(RefusalCode::GasOverBudget),
            ),
            (
                SessionKeyValidator::TokenCapExceeded {
                    token: Default::default(),
                    requested: U256::from(9),
                    remaining: U256::from(1),
                }
                .abi_encode(),
                Some(RefusalCode::TokenOverBudget),
            ),
            (
                SessionKeyValidator::SelectorNotAllowed {
                    target: Default::default(),
                    selector: Default::default(),
                }
                .abi_encode(),
                Some(RefusalCode::SelectorNotAllowed),
            ),
            (
                SessionKeyValidator::MalformedTokenCall {
                    token: Default::default(),
                    selector: Default::default(),
                }
                .abi_encode(),
                Some(RefusalCode::MalformedTokenCall),
            ),
            (
                SessionKeyValidator::UsageLimitReached { maxOps: 3 }.abi_encode(),
                Some(RefusalCode::UsageExhausted),
            ),
            (
                SessionKeyValidator::PaymasterNotAllowed {
                    paymaster: Default::default(),
                }
                .abi_encode(),
                Some(RefusalCode::PaymasterNotAllowed),
            ),
            (
                SessionKeyValidator::NonceLaneNotAllowed {
                    nonceKey: Default::default(),
                    expected: Default::default(),
                }
                .abi_encode(),
                Some(RefusalCode::LaneNotAllowed),
            ),
            (
                SessionKeyValidator::PeriodCapExceeded {
                    periodIndex: U256::from(1),
                    requested: U256::from(9),
                    remaining: U256::from(1),
                }
                .abi_encode(),
                Some(RefusalCode::PeriodOverBudget),
            ),
            (
                SessionKeyValidator::PeriodOutsideWindow {
                    periodIndex: U256::from(9),
                }
                .abi_encode(),
                Some(RefusalCode::SessionExpired),
            ),
            (
                SessionKeyValidator::AccountMismatch {
                    signedAccount: Default::default(),
                    sender: Default::default(),
                    caller: Default::default(),
                }
                .abi_encode(),
                None,
            ),
        ];
        for (data, code) in cases {
            let d = decode(&data).unwrap();
            assert_eq!(d.source, "SessionKeyValidator");
            assert_eq!(d.refusal_code(), code, "{d:?}");
        }
    }

    #[test]
    fn failed_op_and_plain_errors() {
        let d = decode(
            &IEntryPointV07::FailedOp {
                opIndex: U256::ZERO,
                reason: "AA22 expired or not due".into(),
            }
            .abi_encode(),
        )
        .unwrap();
        assert_eq!(
            (d.source.as_str(), d.name.as_str()),
            ("EntryPoint", "FailedOp")
        );
        assert_eq!(
            d.entry_point_reason.as_deref(),
            Some("AA22 expired or not due")
        );
        assert_eq!(d.refusal_code(), None);
        let d = decode(&Revert::from("nope").abi_encode()).unwrap();
        assert_eq!((d.name.as_str(), d.detail.as_str()), ("Error", "nope"));
        assert_eq!(decode(&[1, 2, 3, 4, 5]), None);
        assert_eq!(decode(&[]), None);
    }

    #[test]
    fn finds_reverts_in_bundler_errors() {
        let hex_data = format!("0x{}", hex::encode(target_not_allowed()));
        let msg = format!("UserOperation reverted during simulation with reason: {hex_data}");
        let d = decode_from_rpc_error(&msg, None).unwrap();
        assert_eq!(d.name, "TargetNotAllowed");
        let d = decode_from_rpc_error(
            "AA23 reverted",
            Some(&serde_json::json!({"revertData": hex_data})),
        )
        .unwrap();
        assert_eq!(d.name, "TargetNotAllowed");
        assert_eq!(decode_from_rpc_error("AA24 signature error", None), None);
        assert_eq!(
            decode_from_rpc_error("sender 0x1234567890 is bad", None),
            None
        );
    }
}
