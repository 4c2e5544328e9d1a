//! Rust access to the project's contracts and to the canonical ERC-4337 EntryPoints.
//!
//! - [`SessionKeyValidator`], [`AgentAccount`], [`AgentAccountFactory`], [`TestToken`] (an ERC-20
//!   with free minting that only local chains deploy, for token-cap tests) and [`OzAccount7579`]
//!   (OpenZeppelin's `AccountERC7579` with an ECDSA owner, `contracts/testing/`: the third-party
//!   ERC-7579 account the module's tests install the validator on; test chains only) and
//!   [`Eip7702Account`] (the implementation EOAs delegate to with EIP-7702: OpenZeppelin's
//!   `AccountERC7579` with the EOA's own key as signer, EntryPoint v0.8): alloy `sol!` bindings
//!   generated from the committed artifacts in `contracts/artifacts` (ABI and bytecode).
//!   Each has `BYTECODE`/`DEPLOYED_BYTECODE`, typed calls, events and errors, and (with a provider)
//!   `deploy` and instance methods.
//! - [`IEntryPointV07`] and [`IEntryPointV08`]: the parts of the EntryPoints the project uses,
//!   with one shared [`PackedUserOperation`] type.
//! - Canonical addresses ([`ENTRY_POINT_V07`], [`ENTRY_POINT_V08`], [`DETERMINISTIC_DEPLOYER`]) and
//!   the session signature layout ([`SESSION_MARKER`], [`SESSION_SIGNATURE_LENGTH`]).
//!
//! The build script refuses to build when a product `.sol` file (`contracts/*.sol`,
//! `contracts/interfaces/`, `contracts/testing/`) changed after the artifacts were made (run
//! `anvil/build-contracts.sh`), so the bytecode here always matches the sources.
//!
//! The structs generated from each artifact live in that contract's module (for example
//! `SessionKeyValidator::PackedUserOperation`); they are ABI-identical to [`PackedUserOperation`],
//! and [`From`] conversions are provided for the validator's and the account's.

#![warn(missing_docs)]

use alloy::primitives::{address, Address};
use alloy::sol;

/// EntryPoint v0.7, at its canonical address (deterministic deployment).
pub const ENTRY_POINT_V07: Address = address!("0x0000000071727De22E5E9d8BAf0edAc6f37da032");

/// EntryPoint v0.8, at its canonical address (deterministic deployment).
pub const ENTRY_POINT_V08: Address = address!("0x4337084D9E255Ff0702461CF8895CE9E3b5Ff108");

/// The deterministic deployment proxy (Arachnid) through which the EntryPoints are deployed.
pub const DETERMINISTIC_DEPLOYER: Address = address!("0x4e59b44847b379578588920cA78FbF26c0B4956C");

/// First byte of a session signature (`SessionKeyValidator.SESSION_MARKER`), defined once in
/// [`kms_proto::session_signature`].
pub use kms_proto::session_signature::SESSION_MARKER;

/// Length of a session signature (`SessionKeyValidator.SESSION_SIGNATURE_LENGTH`):
/// `marker ‖ account (20) ‖ key (20) ‖ r (32) ‖ s (32) ‖ v (1)`, defined once in
/// [`kms_proto::session_signature`].
pub use kms_proto::session_signature::SESSION_SIGNATURE_LEN as SESSION_SIGNATURE_LENGTH;

sol!(
    #[allow(missing_docs)]
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    SessionKeyValidator,
    "artifacts/SessionKeyValidator.json"
);

sol!(
    #[allow(missing_docs)]
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    AgentAccount,
    "artifacts/AgentAccount.json"
);

sol!(
    #[allow(missing_docs)]
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    AgentAccountFactory,
    "artifacts/AgentAccountFactory.json"
);

sol!(
    #[allow(missing_docs)]
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    TestToken,
    "artifacts/TestToken.json"
);

sol!(
    #[allow(missing_docs)]
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    OzAccount7579,
    "artifacts/OzAccount7579.json"
);

sol!(
    #[allow(missing_docs)]
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    Eip7702Account,
    "artifacts/Eip7702Account.json"
);

sol! {
    /// A user operation in the packed form of EntryPoint v0.7 and v0.8.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct PackedUserOperation {
        /// The account.
        address sender;
        /// Nonce: key (upper 192 bits) and sequence (lower 64 bits).
        uint256 nonce;
        /// `factory ‖ factoryData`, or empty.
        bytes initCode;
        /// The call the EntryPoint makes on the account.
        bytes callData;
        /// `verificationGasLimit (16 bytes) ‖ callGasLimit (16 bytes)`.
        bytes32 accountGasLimits;
        /// Gas paid for the bundler's overhead.
        uint256 preVerificationGas;
        /// `maxPriorityFeePerGas (16 bytes) ‖ maxFeePerGas (16 bytes)`.
        bytes32 gasFees;
        /// `paymaster ‖ verificationGasLimit (16) ‖ postOpGasLimit (16) ‖ data`, or empty.
        bytes paymasterAndData;
        /// The account-specific signature.
        bytes signature;
    }

    /// EntryPoint v0.7 (`0x0000000071727De22E5E9d8BAf0edAc6f37da032`): the functions, events and
    /// errors the project uses.
    #[allow(missing_docs)]
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    interface IEntryPointV07 {
        error FailedOp(uint256 opIndex, string reason);
        error FailedOpWithRevert(uint256 opIndex, string reason, bytes inner);
        error SenderAddressResult(address sender);

        event UserOperationEvent(bytes32 indexed userOpHash, address indexed sender, address indexed paymaster, uint256 nonce, bool success, uint256 actualGasCost, uint256 actualGasUsed);
        event AccountDeployed(bytes32 indexed userOpHash, address indexed sender, address factory, address paymaster);
        event UserOperationRevertReason(bytes32 indexed userOpHash, address indexed sender, uint256 nonce, bytes revertReason);
        event Deposited(address indexed account, uint256 totalDeposit);

        function handleOps(PackedUserOperation[] calldata ops, address payable beneficiary) external;
        function getUserOpHash(PackedUserOperation calldata userOp) external view returns (bytes32);
        function getNonce(address sender, uint192 key) external view returns (uint256 nonce);
        function getSenderAddress(bytes memory initCode) external;
        function balanceOf(address account) external view returns (uint256);
        function depositTo(address account) external payable;
    }

    /// EntryPoint v0.8 (`0x4337084D9E255Ff0702461CF8895CE9E3b5Ff108`): as v0.7, plus its EIP-712
    /// hashing helpers. Its userOpHash is an EIP-712 hash (domain `ERC4337`, version `1`).
    #[allow(missing_docs)]
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    interface IEntryPointV08 {
        error FailedOp(uint256 opIndex, string reason);
        error FailedOpWithRevert(uint256 opIndex, string reason, bytes inner);
        error SenderAddressResult(address sender);

        event UserOperationEvent(bytes32 indexed userOpHash, address indexed sender, address indexed paymaster, uint256 nonce, bool success, uint256 actualGasCost, uint256 actualGasUsed);
        event AccountDeployed(bytes32 indexed userOpHash, address indexed sender, address factory, address paymaster);
        event UserOperationRevertReason(bytes32 indexed userOpHash, address indexed sender, uint256 nonce, bytes revertReason);
        event Deposited(address indexed account, uint256 totalDeposit);

        function handleOps(PackedUserOperation[] calldata ops, address payable beneficiary) external;
        function getUserOpHash(PackedUserOperation calldata userOp) external view returns (bytes32);
        function getNonce(address sender, uint192 key) external view returns (uint256 nonce);
        function getSenderAddress(bytes memory initCode) external;
        function balanceOf(address account) external view returns (uint256);
        function depositTo(address account) external payable;
        function getPackedUserOpTypeHash() external pure returns (bytes32);
        function getDomainSeparatorV4() external view returns (bytes32);
        function senderCreator() external view returns (address);
    }
}

macro_rules! packed_conversions {
    ($($module:ident),*) => {$(
        impl From<PackedUserOperation> for $module::PackedUserOperation {
            fn from(op: PackedUserOperation) -> Self {
                Self {
                    sender: op.sender,
                    nonce: op.nonce,
                    initCode: op.initCode,
                    callData: op.callData,
                    accountGasLimits: op.accountGasLimits,
                    preVerificationGas: op.preVerificationGas,
                    gasFees: op.gasFees,
                    paymasterAndData: op.paymasterAndData,
                    signature: op.signature,
                }
            }
        }

        impl From<$module::PackedUserOperation> for PackedUserOperation {
            fn from(op: $module::PackedUserOperation) -> Self {
                Self {
                    sender: op.sender,
                    nonce: op.nonce,
                    initCode: op.initCode,
                    callData: op.callData,
                    accountGasLimits: op.accountGasLimits,
                    preVerificationGas: op.preVerificationGas,
                    gasFees: op.gasFees,
                    paymasterAndData: op.paymasterAndData,
                    signature: op.signature,
                }
            }
        }
    )*};
}

packed_conversions!(
    SessionKeyValidator,
    AgentAccount,
    OzAccount7579,
    Eip7702Account
);

#[cfg(test)]
#[path = "../build_support/manifest.rs"]
mod manifest;

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::sol_types::{SolCall, SolError, SolValue};
    use std::fs;
    use std::path::Path;

    #[test]
    fn bytecode_is_embedded() {
        assert!(SessionKeyValidator::BYTECODE.len() > 1000);
        assert!(
            AgentAccountFactory::BYTECODE.len() > AgentAccount::BYTECODE.len(),
            "factory embeds the account"
        );
        assert!(!SessionKeyValidator::DEPLOYED_BYTECODE.is_empty());
        assert!(OzAccount7579::BYTECODE.len() > 1000);
    }

    /// The EIP-7702 implementation: no constructor (its creation code is the runtime code behind the
    /// usual deployment prologue), an ERC-7579 account with the module management of OzAccount7579.
    #[test]
    fn eip7702_account_bytecode_and_api() {
        use alloy::primitives::keccak256;
        let sel = |sig: &str| <[u8; 4]>::try_from(&keccak256(sig)[..4]).unwrap();
        let runtime = &Eip7702Account::DEPLOYED_BYTECODE;
        assert!(runtime.len() > 1000);
        assert!(
            Eip7702Account::BYTECODE.ends_with(runtime),
            "no constructor arguments, no immutables: the creation code returns the runtime code as is"
        );
        assert_ne!(Eip7702Account::BYTECODE, OzAccount7579::BYTECODE);
        assert_eq!(
            Eip7702Account::executeCall::SELECTOR,
            sel("execute(bytes32,bytes)")
        );
        assert_eq!(
            Eip7702Account::installModuleCall::SELECTOR,
            OzAccount7579::installModuleCall::SELECTOR
        );
        assert_eq!(
            Eip7702Account::isValidSignatureCall::SELECTOR,
            [0x16, 0x26, 0xba, 0x7e]
        );
        assert_eq!(
            Eip7702Account::entryPointCall::SELECTOR,
            sel("entryPoint()")
        );
    }

    #[test]
    fn selectors_match_the_solidity_api() {
        use alloy::primitives::keccak256;
        let sel = |sig: &str| <[u8; 4]>::try_from(&keccak256(sig)[..4]).unwrap();
        assert_eq!(
            SessionKeyValidator::grantSessionCall::SELECTOR,
            sel("grantSession((address,uint48,uint48,address,uint128,uint96,address,uint32,uint32,uint128,(address,bool,bytes4[])[],(address,uint112)[]))")
        );
        assert_eq!(
            SessionKeyValidator::revokeSessionCall::SELECTOR,
            sel("revokeSession(address,address)")
        );
        assert_eq!(
            SessionKeyValidator::validateSessionUserOpCall::SELECTOR,
            sel("validateSessionUserOp((address,uint256,bytes,bytes,bytes32,uint256,bytes32,bytes,bytes),bytes32)")
        );
        assert_eq!(
            AgentAccount::executeCall::SELECTOR,
            sel("execute(address,uint256,bytes)")
        );
        assert_eq!(
            AgentAccount::executeBatchCall::SELECTOR,
            sel("executeBatch((address,uint256,bytes)[])")
        );
        assert_eq!(
            OzAccount7579::executeCall::SELECTOR,
            sel("execute(bytes32,bytes)")
        );
        assert_eq!(
            OzAccount7579::installModuleCall::SELECTOR,
            sel("installModule(uint256,address,bytes)")
        );
        assert_eq!(
            AgentAccountFactory::createAccountCall::SELECTOR,
            sel("createAccount(address,uint256)")
        );
        assert_eq!(
            IEntryPointV07::getUserOpHashCall::SELECTOR,
            sel("getUserOpHash((address,uint256,bytes,bytes,bytes32,uint256,bytes32,bytes,bytes))")
        );
        assert_eq!(
            IEntryPointV07::FailedOpWithRevert::SELECTOR,
            sel("FailedOpWithRevert(uint256,string,bytes)")
        );
        assert_eq!(
            SessionKeyValidator::SpendCapExceeded::SELECTOR,
            sel("SpendCapExceeded(uint256,uint256)")
        );
    }

    #[test]
    fn packed_conversions_round_trip() {
        let op = PackedUserOperation {
            nonce: alloy::primitives::U256::from(7),
            ..Default::default()
        };
        let v: SessionKeyValidator::PackedUserOperation = op.clone().into();
        assert_eq!(v.abi_encode(), op.abi_encode());
        assert_eq!(PackedUserOperation::from(v), op);
    }

    #[test]
    fn committed_artifacts_match_sources() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let sources = manifest::check(dir).expect("build.rs would have failed");
        assert!(sources
            .iter()
            .any(|p| p.ends_with("contracts/SessionKeyValidator.sol")));
    }

    /// A copy of the real contracts dir layout in a temp dir, with a manifest made like
    /// anvil/build-contracts.sh makes it.
    fn fixture() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for dir in [
            "interfaces",
            "artifacts",
            "src",
            "test",
            "out/A.sol",
            "node_modules/x",
        ] {
            fs::create_dir_all(tmp.path().join(dir)).unwrap();
        }
        fs::write(tmp.path().join("A.sol"), "contract A {}").unwrap();
        fs::write(tmp.path().join("interfaces/IA.sol"), "interface IA {}").unwrap();
        fs::write(tmp.path().join("src/lib.rs"), "// not Solidity").unwrap();
        // Not product sources: tests, packages, forge output.
        fs::write(tmp.path().join("test/A.t.sol"), "contract T {}").unwrap();
        fs::write(tmp.path().join("node_modules/x/X.sol"), "contract X {}").unwrap();
        fs::write(tmp.path().join("out/A.sol/A.json"), "{}").unwrap();
        let manifest: String = manifest::solidity_sources(tmp.path())
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{}  {p}\n",
                    manifest::sha256_hex(&tmp.path().join(p)).unwrap()
                )
            })
            .collect();
        fs::write(
            tmp.path().join("artifacts").join(manifest::MANIFEST),
            manifest,
        )
        .unwrap();
        tmp
    }

    #[test]
    fn manifest_fresh() {
        let tmp = fixture();
        let sources = manifest::check(tmp.path()).unwrap();
        assert_eq!(sources.len(), 2, "only product .sol files, recursively");
        assert_eq!(
            manifest::solidity_sources(tmp.path()).unwrap(),
            ["A.sol", "interfaces/IA.sol"]
        );
    }

    #[test]
    fn manifest_detects_a_changed_source() {
        let tmp = fixture();
        fs::write(tmp.path().join("A.sol"), "contract A { uint x; }").unwrap();
        let problems = manifest::check(tmp.path()).unwrap_err();
        assert_eq!(problems, vec![manifest::Staleness::Changed("A.sol".into())]);
        assert_eq!(
            problems[0].to_string(),
            "contracts/A.sol changed after its artifact; run anvil/build-contracts.sh"
        );
    }

    #[test]
    fn manifest_detects_added_removed_missing_and_malformed() {
        let tmp = fixture();
        fs::write(tmp.path().join("B.sol"), "contract B {}").unwrap();
        fs::remove_file(tmp.path().join("interfaces/IA.sol")).unwrap();
        let problems = manifest::check(tmp.path()).unwrap_err();
        assert!(problems.contains(&manifest::Staleness::Added("B.sol".into())));
        assert!(problems.contains(&manifest::Staleness::Removed("interfaces/IA.sol".into())));

        let path = tmp.path().join("artifacts").join(manifest::MANIFEST);
        fs::write(&path, "not a hash  A.sol\n").unwrap();
        let problems = manifest::check(tmp.path()).unwrap_err();
        assert!(matches!(problems[0], manifest::Staleness::Malformed(_)));

        fs::remove_file(&path).unwrap();
        assert_eq!(
            manifest::check(tmp.path()).unwrap_err(),
            vec![manifest::Staleness::MissingManifest]
        );
    }
}
