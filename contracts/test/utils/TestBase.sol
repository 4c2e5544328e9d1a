// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Test} from "forge-std/Test.sol";

import {AgentAccount} from "../../AgentAccount.sol";
import {AgentAccountFactory} from "../../AgentAccountFactory.sol";
import {SessionKeyValidator} from "../../SessionKeyValidator.sol";
import {PackedUserOperation} from "../../interfaces/IERC4337.sol";
import {Call, IAgentAccount} from "../../interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "../../interfaces/ISessionKeyValidator.sol";

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

    event UserOperationRevertReason(
        bytes32 indexed userOpHash, address indexed sender, uint256 nonce, bytes revertReason
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

    /// @dev A 65-byte owner operation signature: the raw ECDSA signature over `hash` (the userOpHash).
    function _ownerSig(uint256 pk, bytes32 hash) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, hash);
        return abi.encodePacked(r, s, v);
    }

    /// @dev A 65-byte personal-message (EIP-191) signature of `hash`, as `eth_sign`/`personal_sign` of
    /// the 32 bytes would make it. Neither an operation signature nor an ERC-1271 signature any more.
    function _personalSig(uint256 pk, bytes32 hash) internal pure returns (bytes memory) {
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

    /// @dev The first nonce of `key`'s own lane (nonce key `uint192(uint160(key))`, sequence `seq`).
    function _lane(address key, uint64 seq) internal pure returns (uint256) {
        return (uint256(uint160(key)) << 64) | seq;
    }

    /// @dev The nonce key of `key`'s lane for period `p`: `p << 160 | uint160(key)`.
    function _laneKey(address key, uint256 p) internal pure returns (uint192) {
        require(p <= type(uint32).max, "period index above 32 bits");
        return uint192((p << 160) | uint160(key));
    }

    /// @dev A nonce of `key`'s lane for period `p` with sequence `seq`:
    /// `(p << 224) | (uint160(key) << 64) | seq`.
    function _periodLane(address key, uint256 p, uint64 seq) internal pure returns (uint256) {
        return (uint256(_laneKey(key, p)) << 64) | seq;
    }

    /// @dev An operation with generous gas limits and a 2 gwei max fee; no paymaster, no signature.
    /// Its maximum cost, what a session is charged, is {MAX_COST}.
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

    /// @dev `_op`'s maximum cost: (60,000 + 1,500,000 + 300,000) gas × 2 gwei.
    uint256 internal constant MAX_COST = 1_860_000 * 2 gwei;

    /// @dev The maximum cost a session is charged for `op` (no paymaster): the EntryPoint's prefund.
    function _maxCost(PackedUserOperation memory op) internal pure returns (uint256) {
        uint256 limits = uint256(op.accountGasLimits);
        return (op.preVerificationGas + (limits >> 128) + uint128(limits)) * uint128(uint256(op.gasFees));
    }

    /// @dev Sets the gas fields of `op`.
    function _setGas(
        PackedUserOperation memory op,
        uint256 preVerificationGas,
        uint256 verificationGasLimit,
        uint256 callGasLimit,
        uint256 maxPriorityFee,
        uint256 maxFee
    ) internal pure {
        op.preVerificationGas = preVerificationGas;
        op.accountGasLimits = bytes32((verificationGasLimit << 128) | callGasLimit);
        op.gasFees = bytes32((maxPriorityFee << 128) | maxFee);
    }

    /// @dev EntryPoint v0.7/v0.8 paymasterAndData: paymaster ‖ verification gas ‖ postOp gas.
    function _paymasterAndData(address paymaster) internal pure returns (bytes memory) {
        return abi.encodePacked(paymaster, uint128(100_000), uint128(50_000));
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

    // ------------------------------------------------------------------ grants

    /// @dev A grant of `key` with no end, no revoker, no paymaster, no usage limit, the given caps,
    /// and plain-transfer permissions on `targets` (more can be set on the returned struct).
    function _grantOf(address key, address[] memory targets, uint128 spendCap, uint96 gasCap)
        internal
        pure
        returns (ISessionKeyValidator.SessionGrant memory g)
    {
        g.key = key;
        g.spendCap = spendCap;
        g.gasCap = gasCap;
        g.targets = new ISessionKeyValidator.TargetPermission[](targets.length);
        for (uint256 i; i < targets.length; ++i) {
            g.targets[i].target = targets[i];
        }
        g.tokens = new ISessionKeyValidator.TokenLimit[](0);
    }

    /// @dev Makes `g` periodic: `periodCap` wei of native value per `period` seconds.
    function _setPeriod(ISessionKeyValidator.SessionGrant memory g, uint32 period, uint128 periodCap) internal pure {
        g.period = period;
        g.periodCap = periodCap;
    }

    /// @dev One target permission.
    function _perm(address target, bool anySelector, bytes4[] memory selectors)
        internal
        pure
        returns (ISessionKeyValidator.TargetPermission memory p)
    {
        p.target = target;
        p.anySelector = anySelector;
        p.selectors = selectors;
    }

    /// @dev Appends a target permission to `g`.
    function _addTarget(
        ISessionKeyValidator.SessionGrant memory g,
        address target,
        bool anySelector,
        bytes4[] memory selectors
    ) internal pure {
        ISessionKeyValidator.TargetPermission[] memory t =
            new ISessionKeyValidator.TargetPermission[](g.targets.length + 1);
        for (uint256 i; i < g.targets.length; ++i) {
            t[i] = g.targets[i];
        }
        t[g.targets.length] = _perm(target, anySelector, selectors);
        g.targets = t;
    }

    /// @dev Appends a token cap to `g`.
    function _addToken(ISessionKeyValidator.SessionGrant memory g, address token, uint112 cap) internal pure {
        ISessionKeyValidator.TokenLimit[] memory t = new ISessionKeyValidator.TokenLimit[](g.tokens.length + 1);
        for (uint256 i; i < g.tokens.length; ++i) {
            t[i] = g.tokens[i];
        }
        t[g.tokens.length] = ISessionKeyValidator.TokenLimit(token, cap);
        g.tokens = t;
    }

    function _sels(bytes4 a) internal pure returns (bytes4[] memory s) {
        s = new bytes4[](1);
        s[0] = a;
    }

    function _sels(bytes4 a, bytes4 b) internal pure returns (bytes4[] memory s) {
        s = new bytes4[](2);
        s[0] = a;
        s[1] = b;
    }

    function _noSels() internal pure returns (bytes4[] memory) {
        return new bytes4[](0);
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

    function _noTargets() internal pure returns (address[] memory) {
        return new address[](0);
    }

    /// @dev The account's call of {ISessionKeyValidator.grantSession} with `g`.
    function _grantCall(ISessionKeyValidator.SessionGrant memory g) internal view returns (bytes memory) {
        return _execute(address(validator), 0, abi.encodeCall(ISessionKeyValidator.grantSession, (g)));
    }

    function _one(PackedUserOperation memory op) internal pure returns (PackedUserOperation[] memory ops) {
        ops = new PackedUserOperation[](1);
        ops[0] = op;
    }
}
