// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {
    PackedUserOperation as AAPackedUserOperation
} from "@account-abstraction/contracts/interfaces/PackedUserOperation.sol";
import {IEntryPointSimulations} from "@account-abstraction/contracts/interfaces/IEntryPointSimulations.sol";

import {Clones} from "@openzeppelin/contracts/proxy/Clones.sol";
import {
    Execution,
    IERC7579Execution,
    MODULE_TYPE_VALIDATOR
} from "@openzeppelin/contracts/interfaces/draft-IERC7579.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {TestBase} from "./utils/TestBase.sol";
import {Recorder} from "./utils/Mocks.sol";
import {OzAccount7579} from "../testing/OzAccount7579.sol";
import {Simulator} from "./vendor/rhinestone-erc4337-validation/Simulator.sol";
import {ERC4337SpecsParser} from "./vendor/rhinestone-erc4337-validation/SpecsParser.sol";
import {ENTRYPOINT_ADDR, etchEntrypoint} from "./vendor/rhinestone-erc4337-validation/lib/ERC4337.sol";
import {AgentAccount} from "../AgentAccount.sol";
import {AgentAccountFactory} from "../AgentAccountFactory.sol";
import {SessionKeyValidator} from "../SessionKeyValidator.sol";
import {PackedUserOperation, _packValidationData} from "../interfaces/IERC4337.sol";
import {Call} from "../interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "../interfaces/ISessionKeyValidator.sol";
import {TestToken} from "../testing/TestToken.sol";

interface IEntryPointSim {
    function getUserOpHash(AAPackedUserOperation calldata userOp) external view returns (bytes32);
}

/// @dev Negative control: a validator that reads TIMESTAMP in validation (banned, OP-011).
contract TimestampValidator {
    function validateSessionUserOp(PackedUserOperation calldata, bytes32) external view returns (uint256) {
        return block.timestamp > 1 ? 0 : 1;
    }
}

/// @dev Negative control: a validator whose state is not keyed by the account (STO-021).
contract GlobalCounterValidator {
    uint256 public counter;

    function validateSessionUserOp(PackedUserOperation calldata, bytes32) external returns (uint256) {
        counter += 1;
        return 0;
    }
}

/// @dev Negative control: a factory using OpenZeppelin's Clones, whose balance check executes
/// SELFBALANCE (banned for an unstaked factory, OP-080) — the reason AgentAccountFactory has its own.
contract OzClonesFactory {
    address public immutable implementation;

    constructor(address impl) {
        implementation = impl;
    }

    function createAccount(address owner, uint256 salt) external returns (address account) {
        account = Clones.cloneDeterministic(implementation, keccak256(abi.encode(owner, salt)));
        AgentAccount(payable(account)).initialize(owner);
    }

    function getAddress(address owner, uint256 salt) external view returns (address) {
        return Clones.predictDeterministicAddress(implementation, keccak256(abi.encode(owner, salt)));
    }
}

/// @dev Negative control: an unstaked factory writing its own storage (STO-031 needs a stake).
contract CountingFactory {
    AgentAccountFactory public immutable inner;
    uint256 public created;

    constructor(AgentAccountFactory inner_) {
        inner = inner_;
    }

    function createAccount(address owner, uint256 salt) external returns (address) {
        created += 1;
        return address(inner.createAccount(owner, salt));
    }
}

/// @notice ERC-7562 validation rules (banned opcodes, storage access, calls, CREATE2) checked on
/// validation of owner and session operations, with and without deployment, by the Rhinestone
/// simulator (vendored under test/vendor) running EntryPointSimulations v0.7; and on the module path:
/// session operations of an OpenZeppelin `AccountERC7579` with the validator installed as its module.
contract Erc7562Test is TestBase {
    using Simulator for AAPackedUserOperation;

    address internal target = makeAddr("target");
    Recorder internal rec;
    TestToken internal token;

    function setUp() public {
        _setUpKeys();
        etchEntrypoint();
        validator = new SessionKeyValidator();
        factory = new AgentAccountFactory(ENTRYPOINT_ADDR, validator);
        rec = new Recorder();
        token = new TestToken();
    }

    /// @dev Grants the agent, from `acct`: plain transfers to `target`, `hit` on `rec`, `token` capped,
    /// with a gas budget (so every operation without a paymaster writes the gas counter).
    function _grantFrom(address acct) internal {
        ISessionKeyValidator.SessionGrant memory g = _grantOf(agent, _targets(target), 1 ether, 1 ether);
        g.revoker = revoker;
        _addTarget(g, address(rec), false, _sels(Recorder.hit.selector));
        _addToken(g, address(token), 100e18);
        vm.prank(acct);
        validator.grantSession(g);
    }

    /// @dev The agent's operation on its own lane, signed, for a deployed account.
    function _sessionOp(address acct, bytes memory callData) internal view returns (PackedUserOperation memory op) {
        op = _op(acct, _lane(agent, 0), "", callData);
        op.signature = _sessionSig(agentKey, acct, _hash(op));
    }

    /// @dev Simulates `op` and checks that validation charged the session (the simulation itself
    /// leaves no state behind, so the charge is read from a plain run of simulateValidation).
    function _simulateAndCheckCharged(PackedUserOperation memory op, uint256 tokenAmount) internal {
        _simulateAndCheckCharged(op, tokenAmount, 0);
    }

    /// @dev The same, and checks the value counted in the operation's period (its nonce's top 32 bits).
    function _simulateAndCheckCharged(PackedUserOperation memory op, uint256 tokenAmount, uint256 periodAmount)
        internal
    {
        _simulateAndCheckCharged(op, tokenAmount, op.nonce >> 224, periodAmount);
    }

    /// @dev The same, with the period given (on the module path the period is the nonce key's low 16 bits).
    function _simulateAndCheckCharged(
        PackedUserOperation memory op,
        uint256 tokenAmount,
        uint256 periodIndex,
        uint256 periodAmount
    ) internal {
        address acct = op.sender;
        uint256 snap = vm.snapshotState();
        (bool ok,) = ENTRYPOINT_ADDR.call(abi.encodeCall(IEntryPointSimulations.simulateValidation, (_aa(op))));
        assertTrue(ok, "simulateValidation reverted");
        // simulateValidation reverts nothing on success, so the validator's writes are visible here.
        ISessionKeyValidator.Session memory s = validator.getSession(acct, agent);
        assertEq(s.gasSpent, _maxCost(op), "gas charged");
        assertEq(s.opsUsed, 1);
        assertEq(validator.getPermission(acct, agent, address(token)).tokenSpent, tokenAmount);
        assertEq(validator.periodSpent(acct, agent, periodIndex), periodAmount, "period charged");
        vm.revertToState(snap);
        assertTrue(_simulate(op), "ERC-7562 simulation failed");
    }

    function _aa(PackedUserOperation memory op) internal pure returns (AAPackedUserOperation memory) {
        return abi.decode(abi.encode(op), (AAPackedUserOperation));
    }

    function _hash(PackedUserOperation memory op) internal view returns (bytes32) {
        return IEntryPointSim(ENTRYPOINT_ADDR).getUserOpHash(_aa(op));
    }

    function _simulate(PackedUserOperation memory op) internal returns (bool) {
        return _aa(op).simulateUserOp(ENTRYPOINT_ADDR);
    }

    /// @dev External so that `vm.expectRevert` can catch the parser's errors.
    function simulateExternal(PackedUserOperation memory op) external returns (bool) {
        return _simulate(op);
    }

    /// @dev Runs EntryPointSimulations.simulateValidation alone (state restored afterwards).
    function _rawValidation(PackedUserOperation memory op) internal returns (bool ok, bytes memory ret) {
        uint256 snap = vm.snapshotState();
        (ok, ret) = ENTRYPOINT_ADDR.call(abi.encodeCall(IEntryPointSimulations.simulateValidation, (_aa(op))));
        vm.revertToState(snap);
    }

    function _deployed(uint256 salt) internal returns (address acct) {
        acct = address(factory.createAccount(owner, salt));
        vm.deal(acct, 10 ether);
    }

    function test_OwnerOp_WithInitCode() public {
        address acct = factory.getAddress(owner, 0);
        vm.deal(acct, 10 ether);
        PackedUserOperation memory op = _op(acct, 0, _initCode(owner, 0), _execute(recipient, 1 ether, ""));
        op.signature = _ownerSig(ownerKey, _hash(op));
        assertTrue(_simulate(op));
    }

    function test_OwnerOp_Deployed() public {
        address acct = _deployed(0);
        PackedUserOperation memory op = _op(acct, 0, "", _execute(recipient, 1 ether, ""));
        op.signature = _ownerSig(ownerKey, _hash(op));
        assertTrue(_simulate(op));
    }

    function test_SessionOp_Deployed() public {
        address acct = _deployed(0);
        _grantFrom(acct);
        _simulateAndCheckCharged(_sessionOp(acct, _execute(target, 0.5 ether, "")), 0);
    }

    function test_SessionOp_ListedFunction() public {
        address acct = _deployed(0);
        _grantFrom(acct);
        _simulateAndCheckCharged(_sessionOp(acct, _execute(address(rec), 0, abi.encodeCall(Recorder.hit, (1)))), 0);
    }

    function test_SessionOp_CappedTokenTransfer() public {
        address acct = _deployed(0);
        _grantFrom(acct);
        token.mint(acct, 1000e18);
        bytes memory data = abi.encodeWithSelector(IERC20.transfer.selector, recipient, 30e18);
        _simulateAndCheckCharged(_sessionOp(acct, _execute(address(token), 0, data)), 30e18);
    }

    function test_SessionOp_Batch() public {
        address acct = _deployed(0);
        _grantFrom(acct);
        token.mint(acct, 1000e18);
        Call[] memory calls = new Call[](4);
        calls[0] = Call(target, 0.1 ether, "");
        calls[1] = Call(address(rec), 0.1 ether, abi.encodeCall(Recorder.hit, (1)));
        calls[2] = Call(address(token), 0, abi.encodeWithSelector(IERC20.approve.selector, recipient, 10e18));
        calls[3] = Call(address(token), 0, abi.encodeWithSelector(IERC20.transfer.selector, recipient, 5e18));
        _simulateAndCheckCharged(_sessionOp(acct, _executeBatch(calls)), 15e18);
    }

    /// A periodic session: validation also writes the period's counter (`_periodSpent`, keyed with the
    /// account innermost) and returns the period's window, without reading the clock.
    function test_SessionOp_Periodic() public {
        address acct = _deployed(0);
        ISessionKeyValidator.SessionGrant memory g = _grantOf(agent, _targets(target), 1 ether, 1 ether);
        _addTarget(g, address(rec), false, _sels(Recorder.hit.selector));
        _addToken(g, address(token), 100e18);
        _setPeriod(g, 1 days, 0.3 ether);
        vm.prank(acct);
        validator.grantSession(g);
        token.mint(acct, 1000e18);
        vm.warp(3 days + 5);

        Call[] memory calls = new Call[](3);
        calls[0] = Call(target, 0.1 ether, "");
        calls[1] = Call(address(rec), 0.1 ether, abi.encodeCall(Recorder.hit, (1)));
        calls[2] = Call(address(token), 0, abi.encodeWithSelector(IERC20.transfer.selector, recipient, 5e18));
        PackedUserOperation memory op = _op(acct, _periodLane(agent, 3, 0), "", _executeBatch(calls));
        op.signature = _sessionSig(agentKey, acct, _hash(op));
        (bool ok, bytes memory ret) = _rawValidation(op);
        assertTrue(ok);
        IEntryPointSimulations.ValidationResult memory result =
            abi.decode(ret, (IEntryPointSimulations.ValidationResult));
        assertEq(result.returnInfo.accountValidationData, _packValidationData(false, 4 days - 1, 3 days));
        _simulateAndCheckCharged(op, 5e18, 0.2 ether);

        // Another period, in a later block: its own counter slot, still associated with the account.
        vm.warp(10 days);
        op = _op(acct, _periodLane(agent, 9, 0), "", _execute(target, 0.3 ether, ""));
        op.signature = _sessionSig(agentKey, acct, _hash(op));
        _simulateAndCheckCharged(op, 0, 0.3 ether);
    }

    /// A session op cannot deploy its account: a session is granted by the deployed account, and the
    /// validator's account-keyed storage may be touched during a deployment only with a staked
    /// factory (STO-022). Shown here by granting from the counterfactual address beforehand.
    function test_SessionOp_WithInitCode_NeedsStakedFactory() public {
        address acct = factory.getAddress(owner, 0);
        vm.deal(acct, 10 ether);
        _grantFrom(acct);
        PackedUserOperation memory op = _op(acct, _lane(agent, 0), _initCode(owner, 0), _execute(target, 0.5 ether, ""));
        op.signature = _sessionSig(agentKey, acct, _hash(op));
        vm.expectPartialRevert(ERC4337SpecsParser.InvalidStorageLocation.selector);
        this.simulateExternal(op);
    }

    /// And without a grant (the only real case), validation refuses it by name.
    function test_SessionOp_WithInitCode_UnknownSession() public {
        address acct = factory.getAddress(owner, 0);
        vm.deal(acct, 10 ether);
        PackedUserOperation memory op = _op(acct, _lane(agent, 0), _initCode(owner, 0), _execute(target, 0.5 ether, ""));
        op.signature = _sessionSig(agentKey, acct, _hash(op));
        (bool ok, bytes memory ret) = _rawValidation(op);
        assertFalse(ok);
        assertEq(
            ret,
            abi.encodeWithSignature(
                "FailedOpWithRevert(uint256,string,bytes)",
                0,
                "AA23 reverted",
                abi.encodeWithSelector(ISessionKeyValidator.UnknownSession.selector, acct, agent)
            )
        );
        assertFalse(_simulate(op));
    }

    function test_SessionOp_StubSignature_SameRules() public {
        address acct = _deployed(0);
        _grantFrom(acct);
        Call[] memory calls = new Call[](2);
        calls[0] = Call(address(rec), 0, abi.encodeCall(Recorder.hit, (1)));
        calls[1] = Call(address(token), 0, abi.encodeWithSelector(IERC20.transfer.selector, recipient, 5e18));
        PackedUserOperation memory op = _op(acct, _lane(agent, 0), "", _executeBatch(calls));
        op.signature = _stubSessionSig(acct, agent);
        // Validation itself does not revert: it reports a signature failure.
        (bool ok, bytes memory ret) = _rawValidation(op);
        assertTrue(ok);
        IEntryPointSimulations.ValidationResult memory result =
            abi.decode(ret, (IEntryPointSimulations.ValidationResult));
        assertEq(result.returnInfo.accountValidationData, _packValidationData(true, 0, 0));
        // The simulator then reports false because of the signature, after the rules passed
        // (a rule violation would revert instead).
        assertFalse(_simulate(op));
    }

    // ------------------------------------------------------------------ module path (ERC-7579)

    /// @dev An OpenZeppelin `AccountERC7579` (ECDSA owner) with the validator installed as its module.
    function _moduleAccount() internal returns (address a) {
        a = address(new OzAccount7579(ENTRYPOINT_ADDR, owner));
        vm.deal(a, 10 ether);
        vm.prank(ENTRYPOINT_ADDR);
        OzAccount7579(payable(a)).installModule(MODULE_TYPE_VALIDATOR, address(validator), "");
    }

    /// @dev The agent's module-path operation on its lane, period `p`: nonce key `validator ‖ lane ‖ p`.
    function _moduleOp(address a, uint16 p, bytes memory callData)
        internal
        view
        returns (PackedUserOperation memory op)
    {
        uint192 key = (uint192(uint160(address(validator))) << 32)
            | (uint192(validator.getSession(a, agent).lane) << 16) | p;
        op = _op(a, uint256(key) << 64, "", callData);
        op.signature = _sessionSig(agentKey, a, _hash(op));
    }

    function _exec7579(address to, uint256 value, bytes memory data) internal pure returns (bytes memory) {
        return abi.encodeCall(IERC7579Execution.execute, (bytes32(0), abi.encodePacked(to, value, data)));
    }

    function test_ModuleOwnerOp_Deployed() public {
        address a = _moduleAccount();
        PackedUserOperation memory op = _op(a, 0, "", _exec7579(recipient, 1 ether, ""));
        op.signature = _ownerSig(ownerKey, _hash(op));
        assertTrue(_simulate(op));
    }

    function test_ModuleSessionOp_PlainTransfer() public {
        address a = _moduleAccount();
        _grantFrom(a);
        _simulateAndCheckCharged(_moduleOp(a, 0, _exec7579(target, 0.5 ether, "")), 0);
    }

    function test_ModuleSessionOp_Batch() public {
        address a = _moduleAccount();
        _grantFrom(a);
        token.mint(a, 1000e18);
        Execution[] memory calls = new Execution[](4);
        calls[0] = Execution(target, 0.1 ether, "");
        calls[1] = Execution(address(rec), 0.1 ether, abi.encodeCall(Recorder.hit, (1)));
        calls[2] = Execution(address(token), 0, abi.encodeWithSelector(IERC20.approve.selector, recipient, 10e18));
        calls[3] = Execution(address(token), 0, abi.encodeWithSelector(IERC20.transfer.selector, recipient, 5e18));
        bytes memory callData = abi.encodeCall(IERC7579Execution.execute, (bytes32(bytes1(0x01)), abi.encode(calls)));
        _simulateAndCheckCharged(_moduleOp(a, 0, callData), 15e18);
    }

    /// A periodic session on the module path: the period's counter is written (account innermost) and
    /// its window returned, without reading the clock.
    function test_ModuleSessionOp_Periodic() public {
        address a = _moduleAccount();
        ISessionKeyValidator.SessionGrant memory g = _grantOf(agent, _targets(target), 1 ether, 1 ether);
        _setPeriod(g, 1 days, 0.3 ether);
        vm.prank(a);
        validator.grantSession(g);
        vm.warp(3 days + 5);
        PackedUserOperation memory op = _moduleOp(a, 3, _exec7579(target, 0.2 ether, ""));
        (bool ok, bytes memory ret) = _rawValidation(op);
        assertTrue(ok);
        IEntryPointSimulations.ValidationResult memory result =
            abi.decode(ret, (IEntryPointSimulations.ValidationResult));
        assertEq(result.returnInfo.accountValidationData, _packValidationData(false, 4 days - 1, 3 days));
        _simulateAndCheckCharged(op, 0, 3, 0.2 ether);
    }

    function test_ModuleSessionOp_StubSignature_SameRules() public {
        address a = _moduleAccount();
        _grantFrom(a);
        PackedUserOperation memory op = _moduleOp(a, 0, _exec7579(address(rec), 0, abi.encodeCall(Recorder.hit, (1))));
        op.signature = _stubSessionSig(a, agent);
        (bool ok, bytes memory ret) = _rawValidation(op);
        assertTrue(ok);
        IEntryPointSimulations.ValidationResult memory result =
            abi.decode(ret, (IEntryPointSimulations.ValidationResult));
        assertEq(result.returnInfo.accountValidationData, _packValidationData(true, 0, 0));
        assertFalse(_simulate(op));
    }

    // ------------------------------------------------------------------ negative controls

    function test_Control_TimestampInValidatorIsCaught() public {
        AgentAccountFactory bad =
            new AgentAccountFactory(ENTRYPOINT_ADDR, ISessionKeyValidator(address(new TimestampValidator())));
        address acct = address(bad.createAccount(owner, 0));
        vm.deal(acct, 10 ether);
        PackedUserOperation memory op = _op(acct, 0, "", _execute(target, 0, ""));
        op.signature = _sessionSig(agentKey, acct, _hash(op));
        vm.expectRevert(
            abi.encodeWithSelector(ERC4337SpecsParser.InvalidOpcode.selector, address(bad.validator()), 0x42)
        );
        this.simulateExternal(op);
    }

    function test_Control_UnkeyedStorageInValidatorIsCaught() public {
        AgentAccountFactory bad =
            new AgentAccountFactory(ENTRYPOINT_ADDR, ISessionKeyValidator(address(new GlobalCounterValidator())));
        address acct = address(bad.createAccount(owner, 0));
        vm.deal(acct, 10 ether);
        PackedUserOperation memory op = _op(acct, 0, "", _execute(target, 0, ""));
        op.signature = _sessionSig(agentKey, acct, _hash(op));
        vm.expectPartialRevert(ERC4337SpecsParser.InvalidStorageLocation.selector);
        this.simulateExternal(op);
    }

    function test_Control_SelfBalanceInFactoryIsCaught() public {
        OzClonesFactory bad = new OzClonesFactory(address(factory.accountImplementation()));
        address acct = bad.getAddress(owner, 0);
        vm.deal(acct, 10 ether);
        PackedUserOperation memory op =
            _op(acct, 0, abi.encodePacked(address(bad), abi.encodeCall(OzClonesFactory.createAccount, (owner, 0))), "");
        op.signature = _ownerSig(ownerKey, _hash(op));
        vm.expectRevert(abi.encodeWithSelector(ERC4337SpecsParser.InvalidOpcode.selector, address(bad), 0x47));
        this.simulateExternal(op);
    }

    function test_Control_FactoryStorageIsCaught() public {
        CountingFactory bad = new CountingFactory(factory);
        address acct = factory.getAddress(owner, 0);
        vm.deal(acct, 10 ether);
        PackedUserOperation memory op =
            _op(acct, 0, abi.encodePacked(address(bad), abi.encodeCall(CountingFactory.createAccount, (owner, 0))), "");
        op.signature = _ownerSig(ownerKey, _hash(op));
        vm.expectPartialRevert(ERC4337SpecsParser.InvalidStorageLocation.selector);
        this.simulateExternal(op);
    }
}
