// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Test} from "forge-std/Test.sol";

import {AgentAccount} from "../../src/AgentAccount.sol";
import {AgentAccountFactory} from "../../src/AgentAccountFactory.sol";
import {SessionKeyValidator} from "../../src/SessionKeyValidator.sol";
import {PackedUserOperation} from "../../src/interfaces/IERC4337.sol";
import {Call, IAgentAccount} from "../../src/interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "../../src/interfaces/ISessionKeyValidator.sol";

/// @notice The parts of EntryPoint v0.7 / v0.8 the tests use (ABI-identical in both versions).
interface IEntryPoint {
    error FailedOp(uint256 opIndex, string reason);
    error FailedOpWithRevert(uint256 opIndex, string reason, bytes inner);

    event UserOperationEvent(
        bytes32 indexed userOpHash,
        address indexed sender,
        address indexed paymaster,
        uint256 nonce,
        bool success,
        uint256 actualGasCost,
        uint256 actualGasUsed
    );

    function handleOps(PackedUserOperation[] calldata ops, address payable beneficiary) external;
    function getUserOpHash(PackedUserOperation calldata userOp) external view returns (bytes32);
    function getNonce(address sender, uint192 key) external view returns (uint256);
    function balanceOf(address account) external view returns (uint256);
    function depositTo(address account) external payable;
}

/// @notice Shared fixtures: canonical EntryPoints from the npm artifacts, the project's contracts,
/// keys, and builders of operations and signatures.
abstract contract TestBase is Test {
    address internal constant CREATE2_DEPLOYER = 0x4e59b44847b379578588920cA78FbF26c0B4956C;
    address internal constant ENTRY_POINT_V07 = 0x0000000071727De22E5E9d8BAf0edAc6f37da032;
    address internal constant ENTRY_POINT_V08 = 0x4337084D9E255Ff0702461CF8895CE9E3b5Ff108;
    bytes32 internal constant SALT_V07 = 0x90d8084deab30c2a37c45e8d47f49f2f7965183cb6990a98943ef94940681de3;
    bytes32 internal constant SALT_V08 = 0x0a59dbff790c23c976a548690c27297883cc66b4c67024f9117b0238995e35e9;
    string internal constant ARTIFACT_V07 = "node_modules/@account-abstraction/contracts/artifacts/EntryPoint.json";
    string internal constant ARTIFACT_V08 = "node_modules/aa-contracts-v08/artifacts/EntryPoint.json";
    /// @dev Runtime code of the deterministic deployment proxy (Arachnid), as anvil has it.
    bytes internal constant CREATE2_DEPLOYER_CODE =
        hex"7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffe03601600081602082378035828234f58015156039578182fd5b8082525050506014600cf3";

    SessionKeyValidator internal validator;
    AgentAccountFactory internal factory;

    address internal owner;
    uint256 internal ownerKey;
    address internal agent;
    uint256 internal agentKey;
    address internal revoker = makeAddr("revoker");
    address internal recipient = makeAddr("recipient");
    address internal bundler = makeAddr("bundler");

    function _setUpKeys() internal {
        (owner, ownerKey) = makeAddrAndKey("owner");
        (agent, agentKey) = makeAddrAndKey("agent");
    }

    /// @dev Deploys EntryPoint v0.7 or v0.8 at its canonical address the way anvil/stack.sh does:
    /// `salt ‖ creation code from the npm artifact` sent to the deterministic deployer.
    function _deployEntryPoint(bool v08) internal returns (IEntryPoint) {
        if (CREATE2_DEPLOYER.code.length == 0) vm.etch(CREATE2_DEPLOYER, CREATE2_DEPLOYER_CODE);
        bytes memory creationCode = vm.parseJsonBytes(vm.readFile(v08 ? ARTIFACT_V08 : ARTIFACT_V07), ".bytecode");
        (bool ok, bytes memory ret) = CREATE2_DEPLOYER.call(abi.encodePacked(v08 ? SALT_V08 : SALT_V07, creationCode));
        require(ok, "deterministic deployment failed");
        address deployed = address(bytes20(ret));
        address expected = v08 ? ENTRY_POINT_V08 : ENTRY_POINT_V07;
        assertEq(deployed, expected, "EntryPoint not at its canonical address");
        assertGt(expected.code.length, 0);
        return IEntryPoint(expected);
    }

    /// @dev A 65-byte owner signature: EIP-191 over `hash`.
    function _ownerSig(uint256 pk, bytes32 hash) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, _ethSigned(hash));
        return abi.encodePacked(r, s, v);
    }

    /// @dev A 106-byte session signature by `pk` over `userOpHash`, naming `account`.
    function _sessionSig(uint256 pk, address account, bytes32 userOpHash) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, _ethSigned(userOpHash));
        return abi.encodePacked(bytes1(0x08), account, vm.addr(pk), r, s, v);
    }

    /// @dev A well-formed stub session signature (right layout, low s, wrong signer).
    function _stubSessionSig(address account, address key) internal pure returns (bytes memory) {
        return abi.encodePacked(bytes1(0x08), account, key, bytes32(uint256(1)), bytes32(uint256(1)), uint8(27));
    }

    function _ethSigned(bytes32 hash) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", hash));
    }

    /// @dev An operation with generous gas limits and a 1 gwei fee; no paymaster, no signature.
    function _op(address sender, uint256 nonce, bytes memory initCode, bytes memory callData)
        internal
        pure
        returns (PackedUserOperation memory op)
    {
        op.sender = sender;
        op.nonce = nonce;
        op.initCode = initCode;
        op.callData = callData;
        op.accountGasLimits = bytes32((uint256(1_500_000) << 128) | uint256(300_000));
        op.preVerificationGas = 60_000;
        op.gasFees = bytes32((uint256(1 gwei) << 128) | uint256(2 gwei));
    }

    function _initCode(address owner_, uint256 salt) internal view returns (bytes memory) {
        return abi.encodePacked(address(factory), abi.encodeCall(AgentAccountFactory.createAccount, (owner_, salt)));
    }

    function _execute(address target, uint256 value, bytes memory data) internal pure returns (bytes memory) {
        return abi.encodeCall(IAgentAccount.execute, (target, value, data));
    }

    function _executeBatch(Call[] memory calls) internal pure returns (bytes memory) {
        return abi.encodeCall(IAgentAccount.executeBatch, (calls));
    }

    function _targets(address a) internal pure returns (address[] memory t) {
        t = new address[](1);
        t[0] = a;
    }

    function _targets(address a, address b) internal pure returns (address[] memory t) {
        t = new address[](2);
        t[0] = a;
        t[1] = b;
    }

    function _grantCall(address key, address[] memory targets, uint128 cap, uint48 validAfter, uint48 validUntil)
        internal
        view
        returns (bytes memory)
    {
        return _execute(
            address(validator),
            0,
            abi.encodeCall(ISessionKeyValidator.grantSession, (key, targets, cap, validAfter, validUntil, revoker))
        );
    }

    function _one(PackedUserOperation memory op) internal pure returns (PackedUserOperation[] memory ops) {
        ops = new PackedUserOperation[](1);
        ops[0] = op;
    }
}
