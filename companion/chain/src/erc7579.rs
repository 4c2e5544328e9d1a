//! ERC-7579 modular accounts (OpenZeppelin's `AccountERC7579`, Safe's 7579 adapter, Kernel,
//! Nexus, …) with `SessionKeyValidator` installed as their validator module (type 1).
//!
//! - [`IERC7579Account`]: the account functions the companion uses (execution, module
//!   management, detection), as alloy `sol!` bindings.
//! - [`encode_execute`] turns calls into the account's `execute(mode, executionCalldata)`: one
//!   call is the single call type ([`MODE_SINGLE`], `abi.encodePacked(target, value, data)`),
//!   several the batch call type ([`MODE_BATCH`], `abi.encode(Execution[])`), both with the
//!   default exec type. [`decode_execute`] reads such calldata back the way the validator's module
//!   path does, refusing what it refuses ([`ExecutionRefusal`]: delegatecall, the try exec type, a
//!   mode selector or payload, any other account function, non-canonical encoding).
//! - [`install_module_call`] / [`uninstall_module_call`]: the account's own `installModule(1,
//!   validator, "")` / `uninstallModule(1, validator, "")`, as a [`Call`] to the account itself
//!   (an ERC-7579 account lets itself, and its EntryPoint, manage its modules).
//!
//! The nonce key of an agent on such an account is `validator (20 bytes) ‖ lane (2) ‖ period (2)`
//! ([`crate::nonce::NonceKey::for_module_lane`]); the owner's operations use key 0, which names
//! no module, so the account checks them with its own signer. The session signature is the same
//! 106 bytes as on `AgentAccount` ([`crate::signature`]).

use alloy::primitives::{Address, Bytes, FixedBytes, B256, U256};
use alloy::sol;
use alloy::sol_types::{SolCall, SolValue};

use crate::account::{Call, NoCalls};

sol! {
    /// One call of an ERC-7579 batch (`Execution` of ERC-7579 and OpenZeppelin's
    /// `draft-IERC7579.sol`): `target.call{value}(callData)`.
    #[derive(Debug, PartialEq, Eq)]
    struct Execution {
        /// The address called.
        address target;
        /// Native value sent, in wei.
        uint256 value;
        /// Call data.
        bytes callData;
    }

    /// The functions of an ERC-7579 account the companion uses.
    #[allow(missing_docs)]
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    interface IERC7579Account {
        /// Executes `executionCalldata` in `mode` (EntryPoint or the account itself only).
        function execute(bytes32 mode, bytes calldata executionCalldata) external payable;
        /// Executes for an installed executor module (refused on the session path).
        function executeFromExecutor(bytes32 mode, bytes calldata executionCalldata) external payable returns (bytes[] memory returnData);
        /// Installs a module of `moduleTypeId` (EntryPoint or the account itself only).
        function installModule(uint256 moduleTypeId, address module, bytes calldata initData) external;
        /// Uninstalls a module of `moduleTypeId` (EntryPoint or the account itself only).
        function uninstallModule(uint256 moduleTypeId, address module, bytes calldata deInitData) external;
        /// Whether `module` is installed as a module of `moduleTypeId`.
        function isModuleInstalled(uint256 moduleTypeId, address module, bytes calldata additionalContext) external view returns (bool);
        /// Whether the account supports modules of `moduleTypeId`.
        function supportsModule(uint256 moduleTypeId) external view returns (bool);
        /// Whether the account supports the execution mode `encodedMode`.
        function supportsExecutionMode(bytes32 encodedMode) external view returns (bool);
        /// The account's implementation id (`vendorname.accountname.semver`).
        function accountId() external view returns (string memory accountImplementationId);
    }
}

/// ERC-7579 module type of a validator (what `SessionKeyValidator` is).
pub const MODULE_TYPE_VALIDATOR: U256 = U256::from_limbs([1, 0, 0, 0]);

/// The execution mode of one call: single call type (0x00), default exec type, no selector or
/// payload (all 32 bytes zero).
pub const MODE_SINGLE: B256 = B256::ZERO;

/// The execution mode of a batch: batch call type (0x01) in the first byte, the rest zero.
pub const MODE_BATCH: B256 = {
    let mut m = [0u8; 32];
    m[0] = 0x01;
    FixedBytes(m)
};

/// The call type (first byte of the mode) of one call.
pub const CALLTYPE_SINGLE: u8 = 0x00;
/// The call type of a batch.
pub const CALLTYPE_BATCH: u8 = 0x01;
/// The call type of a delegatecall (refused on the session path).
pub const CALLTYPE_DELEGATECALL: u8 = 0xff;

/// Length of a single execution's head: `target (20) ‖ value (32)`.
const SINGLE_HEAD: usize = 52;
/// `execute(bytes32,bytes)` calldata head: selector, mode, offset, length.
const EXECUTE_HEAD: usize = 100;

/// Why calldata is not an ERC-7579 `execute` the session path accepts; each variant is the
/// `SessionKeyValidator` error the module path reverts with for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExecutionRefusal {
    /// Not `execute(bytes32,bytes)` (`executeFromExecutor`, module management, any other
    /// function; the selector is zero when the calldata is shorter than four bytes): the
    /// validator's `UnsupportedCall`.
    #[error("not an ERC-7579 execute call (selector {0})")]
    UnsupportedCall(FixedBytes<4>),
    /// A mode other than the single or batch call type with the default exec type and zero
    /// selector and payload (delegatecall, try mode, …): `UnsupportedExecutionMode`.
    #[error("ERC-7579 execution mode {0} is not a plain single or batch call")]
    UnsupportedExecutionMode(B256),
    /// The `executionCalldata` is not canonically encoded (not at offset 0x40, past the end, a
    /// single execution shorter than 52 bytes, a batch that does not decode):
    /// `MalformedExecution`.
    #[error("malformed ERC-7579 execution calldata")]
    MalformedExecution,
}

/// The account's `execute(mode, executionCalldata)` for `calls`: [`MODE_SINGLE`] with
/// `abi.encodePacked(target, value, data)` for one call, [`MODE_BATCH`] with
/// `abi.encode(Execution[])` for several.
pub fn encode_execute(calls: &[Call]) -> Result<Bytes, NoCalls> {
    let (mode, execution_calldata) = match calls {
        [] => return Err(NoCalls),
        [call] => (MODE_SINGLE, encode_single(call)),
        calls => (MODE_BATCH, encode_batch(calls)),
    };
    Ok(IERC7579Account::executeCall {
        mode,
        executionCalldata: execution_calldata,
    }
    .abi_encode()
    .into())
}

/// `abi.encodePacked(target, value, data)`: the execution calldata of one call.
pub fn encode_single(call: &Call) -> Bytes {
    let mut out = Vec::with_capacity(SINGLE_HEAD + call.data.len());
    out.extend_from_slice(call.to.as_slice());
    out.extend_from_slice(&call.value.to_be_bytes::<32>());
    out.extend_from_slice(&call.data);
    out.into()
}

/// `abi.encode(Execution[])`: the execution calldata of a batch.
pub fn encode_batch(calls: &[Call]) -> Bytes {
    calls
        .iter()
        .map(|c| Execution {
            target: c.to,
            value: c.value,
            callData: c.data.clone(),
        })
        .collect::<Vec<_>>()
        .abi_encode()
        .into()
}

/// The calls of an account's `execute(mode, executionCalldata)`, read as `SessionKeyValidator`'s
/// module path reads them: the selector must be `execute`, the bytes argument canonically placed
/// (offset 0x40, within the calldata), the mode a single or batch call type with every other byte
/// zero; a single execution is `target ‖ value ‖ data` (at least 52 bytes), a batch
/// `abi.encode(Execution[])`. An empty batch decodes to no calls (the chain accepts it and it does
/// nothing). A batch the validator would decode leniently but that alloy's decoder refuses is
/// [`ExecutionRefusal::MalformedExecution`] here: this side never accepts more than the chain.
pub fn decode_execute(call_data: &[u8]) -> Result<Vec<Call>, ExecutionRefusal> {
    let mut selector = [0u8; 4];
    if call_data.len() >= 4 {
        selector.copy_from_slice(&call_data[..4]);
    }
    if selector != IERC7579Account::executeCall::SELECTOR {
        return Err(ExecutionRefusal::UnsupportedCall(FixedBytes(selector)));
    }
    let word = |at: usize| U256::from_be_slice(&call_data[at..at + 32]);
    if call_data.len() < EXECUTE_HEAD || word(36) != U256::from(0x40) {
        return Err(ExecutionRefusal::MalformedExecution);
    }
    let mode = B256::from_slice(&call_data[4..36]);
    let length = word(68);
    if length > U256::from(call_data.len() - EXECUTE_HEAD) {
        return Err(ExecutionRefusal::MalformedExecution);
    }
    let executions = &call_data[EXECUTE_HEAD..EXECUTE_HEAD + length.to::<usize>()];
    if mode[1..].iter().any(|b| *b != 0) {
        return Err(ExecutionRefusal::UnsupportedExecutionMode(mode));
    }
    match mode[0] {
        CALLTYPE_SINGLE => {
            if executions.len() < SINGLE_HEAD {
                return Err(ExecutionRefusal::MalformedExecution);
            }
            Ok(vec![Call::new(
                Address::from_slice(&executions[..20]),
                U256::from_be_slice(&executions[20..SINGLE_HEAD]),
                Bytes::copy_from_slice(&executions[SINGLE_HEAD..]),
            )])
        }
        CALLTYPE_BATCH => Vec::<Execution>::abi_decode(executions)
            .map(|batch| {
                batch
                    .into_iter()
                    .map(|e| Call::new(e.target, e.value, e.callData))
                    .collect()
            })
            .map_err(|_| ExecutionRefusal::MalformedExecution),
        _ => Err(ExecutionRefusal::UnsupportedExecutionMode(mode)),
    }
}

/// `installModule(1, validator, "")` as a call of `account` to itself (the data is ignored by
/// `SessionKeyValidator.onInstall`; sessions are granted with `grantSession`, e.g. in the same
/// batch).
pub fn install_module_call(account: Address, validator: Address) -> Call {
    Call::new(
        account,
        U256::ZERO,
        IERC7579Account::installModuleCall {
            moduleTypeId: MODULE_TYPE_VALIDATOR,
            module: validator,
            initData: Bytes::new(),
        }
        .abi_encode(),
    )
}

/// `uninstallModule(1, validator, "")` as a call of `account` to itself: ends every session the
/// account granted on the module path (`SessionKeyValidator.onUninstall` bumps the account's
/// module generation).
pub fn uninstall_module_call(account: Address, validator: Address) -> Call {
    Call::new(
        account,
        U256::ZERO,
        IERC7579Account::uninstallModuleCall {
            moduleTypeId: MODULE_TYPE_VALIDATOR,
            module: validator,
            deInitData: Bytes::new(),
        }
        .abi_encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{address, bytes, hex, keccak256};

    const A: Address = address!("0x1111111111111111111111111111111111111111");
    const B: Address = address!("0x2222222222222222222222222222222222222222");

    fn with_mode(call_data: &[u8], mode: B256) -> Vec<u8> {
        let mut v = call_data.to_vec();
        v[4..36].copy_from_slice(mode.as_slice());
        v
    }

    #[test]
    fn selectors_are_the_erc7579_ones() {
        let sel = |sig: &str| <[u8; 4]>::try_from(&keccak256(sig)[..4]).unwrap();
        assert_eq!(
            IERC7579Account::executeCall::SELECTOR,
            sel("execute(bytes32,bytes)")
        );
        assert_eq!(
            IERC7579Account::installModuleCall::SELECTOR,
            sel("installModule(uint256,address,bytes)")
        );
        assert_eq!(
            IERC7579Account::isModuleInstalledCall::SELECTOR,
            sel("isModuleInstalled(uint256,address,bytes)")
        );
        assert_eq!(
            IERC7579Account::supportsModuleCall::SELECTOR,
            sel("supportsModule(uint256)")
        );
        assert_eq!(IERC7579Account::accountIdCall::SELECTOR, sel("accountId()"));
    }

    /// The forge tests' `_exec(to, value, data)`: `abi.encodeCall(execute, (bytes32(0),
    /// abi.encodePacked(to, value, data)))`, byte for byte.
    #[test]
    fn single_is_execute_of_packed_target_value_data() {
        let data = encode_execute(&[Call::new(A, U256::from(5), bytes!("c0ffee"))]).unwrap();
        let expected = hex::decode(concat!(
            "e9ae5c53",
            "0000000000000000000000000000000000000000000000000000000000000000", // mode
            "0000000000000000000000000000000000000000000000000000000000000040", // offset
            "0000000000000000000000000000000000000000000000000000000000000037", // 55 bytes
            "1111111111111111111111111111111111111111",                         // target
            "0000000000000000000000000000000000000000000000000000000000000005", // value
            "c0ffee",                                                           // data
            "000000000000000000",                                               // to 64 bytes
        ))
        .unwrap();
        assert_eq!(data.len(), 4 + 32 * 3 + 64);
        assert_eq!(&data[..], &expected[..]);
    }

    #[test]
    fn batch_is_execute_of_abi_encoded_executions() {
        let calls = vec![
            Call::transfer(A, U256::from(1)),
            Call::new(B, U256::from(2), bytes!("deadbeef")),
        ];
        let data = encode_execute(&calls).unwrap();
        let call = IERC7579Account::executeCall::abi_decode(&data).unwrap();
        assert_eq!(call.mode, MODE_BATCH);
        assert_eq!(call.mode[0], CALLTYPE_BATCH);
        // abi.encode(Execution[]): an offset (0x20), then the array.
        assert_eq!(
            U256::from_be_slice(&call.executionCalldata[..32]),
            U256::from(32)
        );
        let batch = Vec::<Execution>::abi_decode(&call.executionCalldata).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!((batch[1].target, batch[1].value), (B, U256::from(2)));
        assert_eq!(encode_execute(&[]), Err(NoCalls));
    }

    #[test]
    fn decode_round_trips() {
        for calls in [
            vec![Call::transfer(A, U256::from(7))],
            vec![Call::new(A, U256::from(7), bytes!("01"))],
            vec![
                Call::transfer(A, U256::from(1)),
                Call::new(B, U256::from(2), bytes!("deadbeef")),
                Call::transfer(B, U256::ZERO),
            ],
        ] {
            assert_eq!(decode_execute(&encode_execute(&calls).unwrap()), Ok(calls));
        }
    }

    #[test]
    fn decode_refuses_what_the_module_path_refuses() {
        let single = encode_execute(&[Call::transfer(A, U256::from(1))]).unwrap();
        let batch = encode_execute(&[
            Call::transfer(A, U256::from(1)),
            Call::transfer(B, U256::ZERO),
        ])
        .unwrap();
        // Delegatecall, try mode (single and batch), a mode selector, a payload, unknown call type.
        let mut modes = Vec::new();
        for (at, byte) in [(0, 0xff), (1, 0x01), (6, 0x12), (31, 0x01), (0, 0x02)] {
            let mut m = [0u8; 32];
            m[at] = byte;
            modes.push(B256::from(m));
        }
        let mut try_batch = [0u8; 32];
        try_batch[..2].copy_from_slice(&[0x01, 0x01]);
        modes.push(B256::from(try_batch));
        for mode in modes {
            for data in [&single, &batch] {
                assert_eq!(
                    decode_execute(&with_mode(data, mode)),
                    Err(ExecutionRefusal::UnsupportedExecutionMode(mode)),
                    "{mode}"
                );
            }
        }
        // Other functions of the account.
        let install = install_module_call(A, B).data;
        assert_eq!(
            decode_execute(&install),
            Err(ExecutionRefusal::UnsupportedCall(
                IERC7579Account::installModuleCall::SELECTOR.into()
            ))
        );
        let from_executor = IERC7579Account::executeFromExecutorCall {
            mode: MODE_SINGLE,
            executionCalldata: encode_single(&Call::transfer(A, U256::ZERO)),
        }
        .abi_encode();
        assert!(matches!(
            decode_execute(&from_executor),
            Err(ExecutionRefusal::UnsupportedCall(_))
        ));
        // AgentAccount's execute is not ERC-7579's.
        let agent = crate::account::encode_calls(&[Call::transfer(A, U256::ZERO)]).unwrap();
        assert!(matches!(
            decode_execute(&agent),
            Err(ExecutionRefusal::UnsupportedCall(_))
        ));
        assert_eq!(
            decode_execute(&[0xe9, 0xae]),
            Err(ExecutionRefusal::UnsupportedCall(FixedBytes::ZERO))
        );
        // Non-canonical: another offset, a length past the end, a head only, a short single.
        let mut moved = single.to_vec();
        moved[67] = 0x60;
        assert_eq!(
            decode_execute(&moved),
            Err(ExecutionRefusal::MalformedExecution)
        );
        let mut long = single.to_vec();
        long[99] = 0xff;
        assert_eq!(
            decode_execute(&long),
            Err(ExecutionRefusal::MalformedExecution)
        );
        assert_eq!(
            decode_execute(&single[..EXECUTE_HEAD - 1]),
            Err(ExecutionRefusal::MalformedExecution)
        );
        let short = IERC7579Account::executeCall {
            mode: MODE_SINGLE,
            executionCalldata: Bytes::from(vec![0x11; 51]),
        }
        .abi_encode();
        assert_eq!(
            decode_execute(&short),
            Err(ExecutionRefusal::MalformedExecution)
        );
        let garbage = IERC7579Account::executeCall {
            mode: MODE_BATCH,
            executionCalldata: Bytes::from(vec![0xff; 40]),
        }
        .abi_encode();
        assert_eq!(
            decode_execute(&garbage),
            Err(ExecutionRefusal::MalformedExecution)
        );
        // An empty batch is no calls (the chain accepts it, and nothing happens).
        let empty = IERC7579Account::executeCall {
            mode: MODE_BATCH,
            executionCalldata: Vec::<Execution>::new().abi_encode().into(),
        }
        .abi_encode();
        assert_eq!(decode_execute(&empty), Ok(vec![]));
    }

    #[test]
    fn module_management_calls_go_to_the_account_itself() {
        let install = install_module_call(A, B);
        assert_eq!((install.to, install.value), (A, U256::ZERO));
        let c = IERC7579Account::installModuleCall::abi_decode(&install.data).unwrap();
        assert_eq!(
            (c.moduleTypeId, c.module, c.initData.len()),
            (MODULE_TYPE_VALIDATOR, B, 0)
        );
        let uninstall = uninstall_module_call(A, B);
        let c = IERC7579Account::uninstallModuleCall::abi_decode(&uninstall.data).unwrap();
        assert_eq!(
            (uninstall.to, c.moduleTypeId, c.module),
            (A, U256::from(1), B)
        );
    }
}
