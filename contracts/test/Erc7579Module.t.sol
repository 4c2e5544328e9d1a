// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {
    Execution,
    IERC7579Execution,
    IERC7579Module,
    IERC7579ModuleConfig,
    IERC7579Validator,
    MODULE_TYPE_EXECUTOR,
    MODULE_TYPE_FALLBACK,
    MODULE_TYPE_HOOK,
    MODULE_TYPE_VALIDATOR
} from "@openzeppelin/contracts/interfaces/draft-IERC7579.sol";

import {IEntryPoint, TestBase} from "./utils/TestBase.sol";
import {Recorder} from "./utils/Mocks.sol";
import {OzAccount7579} from "../testing/OzAccount7579.sol";
import {SessionKeyValidator} from "../SessionKeyValidator.sol";
import {PackedUserOperation, _packValidationData} from "../interfaces/IERC4337.sol";
import {ISessionKeyValidator} from "../interfaces/ISessionKeyValidator.sol";
import {TestToken} from "../testing/TestToken.sol";

/// @notice {SessionKeyValidator} as an ERC-7579 validator module on a third-party account,
/// OpenZeppelin's `AccountERC7579` with an ECDSA owner ({OzAccount7579}), through the canonical
/// EntryPoint v0.7 and v0.8 (the two contracts at the end): the module installed by an owner
/// operation, grants, session operations in ERC-7579 `execute` calldata on the key's own lane, sender
/// binding across two accounts, every cap and refusal, uninstallation ending the sessions (a
/// reinstallation does not revive them), and no ERC-1271 power.
abstract contract Erc7579ModuleTest is TestBase {
    IEntryPoint internal ep;
    OzAccount7579 internal acct;
    address internal target = makeAddr("target");
    address internal agent2;
    uint256 internal agent2Key;
    Recorder internal rec;
    TestToken internal token;

    uint128 internal constant CAP = 1 ether;
    uint96 internal constant GAS_CAP = 1 ether;
    uint48 internal constant AFTER = 1_000;
    uint48 internal constant UNTIL = 100 days;

    bytes32 internal constant MODE_SINGLE = bytes32(0);
    bytes32 internal constant MODE_BATCH = bytes32(bytes1(0x01));
    bytes32 internal constant MODE_DELEGATECALL = bytes32(bytes1(0xff));
    bytes32 internal constant MODE_TRY_SINGLE = bytes32(bytes2(0x0001));
    bytes32 internal constant MODE_TRY_BATCH = bytes32(bytes2(0x0101));

    function _v08() internal pure virtual returns (bool);

    function setUp() public {
        _setUpKeys();
        (agent2, agent2Key) = makeAddrAndKey("agent2");
        vm.warp(AFTER + 1);
        ep = _deployEntryPoint(_v08());
        validator = new SessionKeyValidator();
        rec = new Recorder();
        token = new TestToken();
        acct = _newAccount();
    }

    // ------------------------------------------------------------------ helpers

    function _newAccount() internal returns (OzAccount7579 a) {
        a = new OzAccount7579(address(ep), owner);
        vm.deal(address(a), 10 ether);
    }

    function _handle(PackedUserOperation memory op) internal {
        vm.prank(bundler, bundler);
        ep.handleOps(_one(op), payable(bundler));
    }

    function _expectAA23(bytes memory inner) internal {
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOpWithRevert.selector, 0, "AA23 reverted", inner));
    }

    function _expectAA24() internal {
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOp.selector, 0, "AA24 signature error"));
    }

    /// @dev ERC-7579 `execute` of one call.
    function _exec(address to, uint256 value, bytes memory data) internal pure returns (bytes memory) {
        return abi.encodeCall(IERC7579Execution.execute, (MODE_SINGLE, abi.encodePacked(to, value, data)));
    }

    /// @dev ERC-7579 `execute` of a batch.
    function _execBatch(Execution[] memory calls) internal pure returns (bytes memory) {
        return abi.encodeCall(IERC7579Execution.execute, (MODE_BATCH, abi.encode(calls)));
    }

    function _execs(Execution memory a, Execution memory b) internal pure returns (Execution[] memory e) {
        e = new Execution[](2);
        (e[0], e[1]) = (a, b);
    }

    /// @dev An owner operation on the account's default lane (nonce key 0: no module), signed.
    function _ownerOp(OzAccount7579 a, bytes memory callData) internal view returns (PackedUserOperation memory op) {
        op = _op(address(a), ep.getNonce(address(a), 0), "", callData);
        _setGas(op, 60_000, 1_500_000, 1_000_000, 1 gwei, 2 gwei); // room for an installation and a grant
        op.signature = _ownerSig(ownerKey, ep.getUserOpHash(op));
    }

    function _installCall() internal view returns (bytes memory) {
        return abi.encodeCall(IERC7579ModuleConfig.installModule, (MODULE_TYPE_VALIDATOR, address(validator), ""));
    }

    function _uninstallCall() internal view returns (bytes memory) {
        return abi.encodeCall(IERC7579ModuleConfig.uninstallModule, (MODULE_TYPE_VALIDATOR, address(validator), ""));
    }

    function _grantExec(ISessionKeyValidator.SessionGrant memory g) internal view returns (bytes memory) {
        return _exec(address(validator), 0, abi.encodeCall(ISessionKeyValidator.grantSession, (g)));
    }

    /// @dev The default grant of `key`: window [AFTER, UNTIL], CAP, GAS_CAP, plain transfers to `targets`.
    function _grant(address key, address[] memory targets)
        internal
        view
        returns (ISessionKeyValidator.SessionGrant memory g)
    {
        g = _grantOf(key, targets, CAP, GAS_CAP);
        (g.validAfter, g.validUntil, g.revoker) = (AFTER, UNTIL, revoker);
    }

    /// @dev The owner installs the module and grants `g` in one operation: a batch of the account's own
    /// `installModule` and the validator's `grantSession`.
    function _installAndGrant(OzAccount7579 a, ISessionKeyValidator.SessionGrant memory g) internal {
        Execution[] memory calls = _execs(
            Execution(address(a), 0, _installCall()),
            Execution(address(validator), 0, abi.encodeCall(ISessionKeyValidator.grantSession, (g)))
        );
        _handle(_ownerOp(a, _execBatch(calls)));
        assertTrue(validator.isInitialized(address(a)));
        assertTrue(validator.getSession(address(a), g.key).active);
    }

    /// @dev The module-path nonce key of a lane and period: `validator ‖ lane ‖ period`.
    function _moduleKey(uint16 lane, uint16 period) internal view returns (uint192) {
        return (uint192(uint160(address(validator))) << 32) | (uint192(lane) << 16) | period;
    }

    function _laneOf(OzAccount7579 a, address key) internal view returns (uint16) {
        return validator.getSession(address(a), key).lane;
    }

    /// @dev An operation of the key of `pk` on its own lane (period 0), signed.
    function _sessionOp(OzAccount7579 a, uint256 pk, bytes memory callData)
        internal
        view
        returns (PackedUserOperation memory)
    {
        return _sessionOpOn(a, pk, _moduleKey(_laneOf(a, vm.addr(pk)), 0), callData);
    }

    /// @dev An operation of the key of `pk` on nonce key `nonceKey`, signed.
    function _sessionOpOn(OzAccount7579 a, uint256 pk, uint192 nonceKey, bytes memory callData)
        internal
        view
        returns (PackedUserOperation memory op)
    {
        op = _op(address(a), ep.getNonce(address(a), nonceKey), "", callData);
        op.signature = _sessionSig(pk, address(a), ep.getUserOpHash(op));
    }

    // ------------------------------------------------------------------ the module

    function test_Module_TypeAndInterface() public view {
        assertTrue(validator.isModuleType(MODULE_TYPE_VALIDATOR));
        assertFalse(validator.isModuleType(MODULE_TYPE_EXECUTOR));
        assertFalse(validator.isModuleType(MODULE_TYPE_FALLBACK));
        assertFalse(validator.isModuleType(MODULE_TYPE_HOOK));
        assertFalse(validator.isModuleType(0));
        // The project's PackedUserOperation is ABI-identical to OpenZeppelin's: same selectors.
        assertEq(SessionKeyValidator.validateUserOp.selector, IERC7579Validator.validateUserOp.selector);
        assertEq(
            SessionKeyValidator.isValidSignatureWithSender.selector,
            IERC7579Validator.isValidSignatureWithSender.selector
        );
        assertEq(SessionKeyValidator.onInstall.selector, IERC7579Module.onInstall.selector);
        assertEq(SessionKeyValidator.onUninstall.selector, IERC7579Module.onUninstall.selector);
        assertFalse(validator.isInitialized(address(acct)));
    }

    /// The owner installs the module with an operation, grants with another, and the agent's operation
    /// executes a single call and then a batch on its lane.
    function test_InstallByOwnerOp_Grant_SessionOpsExecute() public {
        _handle(_ownerOp(acct, _installCall()));
        assertTrue(acct.isModuleInstalled(MODULE_TYPE_VALIDATOR, address(validator), ""));
        assertTrue(validator.isInitialized(address(acct)));
        (bool installed, uint32 generation, uint16 lanes) = validator.moduleState(address(acct));
        assertTrue(installed);
        assertEq(generation, 0);
        assertEq(lanes, 0);

        _handle(_ownerOp(acct, _grantExec(_grant(agent, _targets(target)))));
        assertEq(_laneOf(acct, agent), 1, "first lane");

        PackedUserOperation memory op = _sessionOp(acct, agentKey, _exec(target, 0.4 ether, ""));
        _handle(op);
        assertEq(target.balance, 0.4 ether);
        ISessionKeyValidator.Session memory s = validator.getSession(address(acct), agent);
        assertEq(s.spent, 0.4 ether);
        assertEq(s.gasSpent, _maxCost(op));
        assertEq(s.opsUsed, 1);

        Execution[] memory calls = _execs(Execution(target, 0.1 ether, ""), Execution(target, 0.2 ether, ""));
        _handle(_sessionOp(acct, agentKey, _execBatch(calls)));
        assertEq(target.balance, 0.7 ether);
        assertEq(validator.remainingBudget(address(acct), agent), 0.3 ether);
        assertEq(ep.getNonce(address(acct), _moduleKey(1, 0)) & type(uint64).max, 2, "the agent's lane");
        assertEq(ep.getNonce(address(acct), 0), 2, "owner lane: install and grant");
    }

    /// Listed functions and a capped token through the module, in one batch; the caps hold.
    function test_ListedFunctionAndToken_CapsHold() public {
        ISessionKeyValidator.SessionGrant memory g = _grant(agent, _targets(target));
        _addTarget(g, address(rec), false, _sels(Recorder.hit.selector));
        _addToken(g, address(token), 100e18);
        _installAndGrant(acct, g);
        token.mint(address(acct), 1000e18);

        Execution[] memory calls = new Execution[](3);
        calls[0] = Execution(target, 0.1 ether, "");
        calls[1] = Execution(address(rec), 0.2 ether, abi.encodeCall(Recorder.hit, (1)));
        calls[2] = Execution(address(token), 0, abi.encodeCall(IERC20.transfer, (recipient, 30e18)));
        _handle(_sessionOp(acct, agentKey, _execBatch(calls)));
        assertEq(rec.calls(), 1);
        assertEq(token.balanceOf(recipient), 30e18);
        assertEq(validator.getPermission(address(acct), agent, address(token)).tokenSpent, 30e18);
        assertEq(validator.getSession(address(acct), agent).spent, 0.3 ether);

        // Token cap: 70e18 left.
        PackedUserOperation memory op =
            _sessionOp(acct, agentKey, _exec(address(token), 0, abi.encodeCall(IERC20.approve, (recipient, 71e18))));
        _expectAA23(
            abi.encodeWithSelector(ISessionKeyValidator.TokenCapExceeded.selector, address(token), 71e18, 70e18)
        );
        _handle(op);

        // Selector not listed.
        op = _sessionOp(acct, agentKey, _exec(address(rec), 0, abi.encodeCall(Recorder.other, ())));
        _expectAA23(
            abi.encodeWithSelector(
                ISessionKeyValidator.SelectorNotAllowed.selector, address(rec), Recorder.other.selector
            )
        );
        _handle(op);

        // Value cap: 0.7 ether left.
        op = _sessionOp(acct, agentKey, _exec(target, 0.8 ether, ""));
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, 0.8 ether, 0.7 ether));
        _handle(op);
        // Across a batch.
        op = _sessionOp(
            acct, agentKey, _execBatch(_execs(Execution(target, 0.5 ether, ""), Execution(target, 0.3 ether, "")))
        );
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, 0.3 ether, 0.2 ether));
        _handle(op);
    }

    /// A batch containing one disallowed call is refused whole; so are the account itself, address 0
    /// (which `AccountERC7579` calls as itself), the validator and the EntryPoint.
    function test_Refuses_DisallowedTargets() public {
        _installAndGrant(acct, _grant(agent, _targets(target)));
        PackedUserOperation memory op =
            _sessionOp(acct, agentKey, _execBatch(_execs(Execution(target, 1, ""), Execution(recipient, 1, ""))));
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, recipient));
        _handle(op);

        op = _sessionOp(acct, agentKey, _exec(address(0), 0, _uninstallCall()));
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.ForbiddenTarget.selector, address(0)));
        _handle(op);

        op = _sessionOp(acct, agentKey, _exec(address(acct), 0, _uninstallCall()));
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.ForbiddenTarget.selector, address(acct)));
        _handle(op);

        ISessionKeyValidator.SessionGrant memory wider = _grantOf(agent, _targets(recipient), CAP, GAS_CAP);
        op = _sessionOp(acct, agentKey, _grantExec(wider));
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.ForbiddenTarget.selector, address(validator)));
        _handle(op);

        op = _sessionOp(
            acct, agentKey, _exec(address(ep), 0, abi.encodeWithSignature("withdrawTo(address,uint256)", agent, 1))
        );
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, address(ep)));
        _handle(op);
        assertEq(validator.getSession(address(acct), agent).opsUsed, 0, "nothing counted");
    }

    /// Delegatecall, the try exec type, a mode selector or payload, `executeFromExecutor`, the
    /// account's module management and malformed `execute` calldata are all refused.
    function test_Refuses_ModesAndOtherCalls() public {
        _installAndGrant(acct, _grant(agent, _targets(target)));
        bytes memory single = abi.encodePacked(target, uint256(1));
        bytes32[5] memory modes = [
            MODE_DELEGATECALL,
            MODE_TRY_SINGLE,
            MODE_TRY_BATCH,
            bytes32(uint256(0xdeadbeef) << 176), // a mode selector
            bytes32(uint256(1)) // a mode payload
        ];
        for (uint256 i; i < modes.length; ++i) {
            PackedUserOperation memory op =
                _sessionOp(acct, agentKey, abi.encodeCall(IERC7579Execution.execute, (modes[i], single)));
            _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.UnsupportedExecutionMode.selector, modes[i]));
            _handle(op);
        }
        // An unknown call type.
        bytes32 staticMode = bytes32(bytes1(0xfe));
        PackedUserOperation memory op2 =
            _sessionOp(acct, agentKey, abi.encodeCall(IERC7579Execution.execute, (staticMode, single)));
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.UnsupportedExecutionMode.selector, staticMode));
        _handle(op2);

        bytes[3] memory others = [
            abi.encodeCall(IERC7579Execution.executeFromExecutor, (MODE_SINGLE, single)),
            _uninstallCall(),
            // AgentAccount's own execute is not the module path's.
            abi.encodeWithSignature("execute(address,uint256,bytes)", target, 1, "")
        ];
        for (uint256 i; i < others.length; ++i) {
            PackedUserOperation memory op = _sessionOp(acct, agentKey, others[i]);
            _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.UnsupportedCall.selector, bytes4(others[i])));
            _handle(op);
        }

        // Non-canonical offset of the execution calldata, and a single execution shorter than its head.
        bytes memory offset = abi.encodePacked(
            IERC7579Execution.execute.selector, MODE_SINGLE, uint256(0x60), uint256(0), uint256(52), single
        );
        bytes memory short = abi.encodeCall(IERC7579Execution.execute, (MODE_SINGLE, abi.encodePacked(target)));
        bytes[2] memory malformed = [offset, short];
        for (uint256 i; i < malformed.length; ++i) {
            PackedUserOperation memory op = _sessionOp(acct, agentKey, malformed[i]);
            _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.MalformedExecution.selector));
            _handle(op);
        }
    }

    /// The agent bundling its own gas drain is refused by the gas budget, as on AgentAccount.
    function test_Refuses_GasDrain() public {
        _installAndGrant(acct, _grant(agent, _targets(target)));
        PackedUserOperation memory op =
            _op(address(acct), ep.getNonce(address(acct), _moduleKey(1, 0)), "", _exec(target, 0, ""));
        _setGas(op, 8_000_000, 1_000_000, 100_000, 1000 gwei, 1000 gwei);
        op.signature = _sessionSig(agentKey, address(acct), ep.getUserOpHash(op));
        _expectAA23(
            abi.encodeWithSelector(ISessionKeyValidator.GasBudgetExceeded.selector, _maxCost(op), uint256(GAS_CAP))
        );
        _handle(op);
    }

    // ------------------------------------------------------------------ lanes

    /// Agents of one account get distinct lanes at grant; a re-grant keeps the lane; an agent on
    /// another agent's lane, lane 0, or a period on a session without one is refused.
    function test_Lanes_DistinctPerAgent_OthersRefused() public {
        _installAndGrant(acct, _grant(agent, _targets(target)));
        vm.expectEmit(true, true, false, true, address(validator));
        emit ISessionKeyValidator.SessionLaneAssigned(address(acct), agent2, 2);
        _handle(_ownerOp(acct, _grantExec(_grant(agent2, _targets(target)))));
        assertEq(_laneOf(acct, agent), 1);
        assertEq(_laneOf(acct, agent2), 2);

        _handle(_sessionOp(acct, agent2Key, _exec(target, 1, "")));
        _handle(_sessionOp(acct, agentKey, _exec(target, 1, "")));

        uint192 expected = _moduleKey(1, 0);
        uint192[3] memory wrong = [_moduleKey(2, 0), _moduleKey(0, 0), _moduleKey(1, 1)];
        for (uint256 i; i < wrong.length; ++i) {
            PackedUserOperation memory op = _sessionOpOn(acct, agentKey, wrong[i], _exec(target, 1, ""));
            _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.NonceLaneNotAllowed.selector, wrong[i], expected));
            _handle(op);
        }
        // The owner's default lane (no module in the key) never reaches the module: a session signature
        // there is the account's own signer's failure.
        PackedUserOperation memory own = _sessionOpOn(acct, agentKey, 0, _exec(target, 1, ""));
        _expectAA24();
        _handle(own);

        // A re-grant keeps the lane; a new key after it gets the next one.
        _handle(_ownerOp(acct, _grantExec(_grant(agent, _targets(recipient)))));
        assertEq(_laneOf(acct, agent), 1);
        (address agent3,) = makeAddrAndKey("agent3");
        _handle(_ownerOp(acct, _grantExec(_grant(agent3, _targets(target)))));
        assertEq(_laneOf(acct, agent3), 3);
        (,, uint16 lanes) = validator.moduleState(address(acct));
        assertEq(lanes, 3);
    }

    /// A periodic session on the module path: the period index in the nonce key's low 16 bits, its
    /// window returned, its cap enforced.
    function test_Periodic_PeriodInTheNonceKey() public {
        ISessionKeyValidator.SessionGrant memory g = _grant(agent, _targets(target));
        _setPeriod(g, 1 days, 0.1 ether);
        _installAndGrant(acct, g);
        vm.warp(AFTER + 3 days + 5);

        PackedUserOperation memory op = _sessionOpOn(acct, agentKey, _moduleKey(1, 3), _exec(target, 0.06 ether, ""));
        uint256 snap = vm.snapshotState();
        bytes32 hash = ep.getUserOpHash(op);
        vm.prank(address(acct));
        assertEq(validator.validateUserOp(op, hash), _packValidationData(false, AFTER + 4 days - 1, AFTER + 3 days));
        vm.revertToState(snap);
        _handle(op);
        assertEq(validator.periodSpent(address(acct), agent, 3), 0.06 ether);

        op = _sessionOpOn(acct, agentKey, _moduleKey(1, 3), _exec(target, 0.05 ether, ""));
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.PeriodCapExceeded.selector, 3, 0.05 ether, 0.04 ether));
        _handle(op);

        // An operation for the next day is not due yet.
        op = _sessionOpOn(acct, agentKey, _moduleKey(1, 4), _exec(target, 0.05 ether, ""));
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOp.selector, 0, "AA22 expired or not due"));
        _handle(op);
        vm.warp(AFTER + 4 days + 1);
        _handle(op);
        assertEq(target.balance, 0.11 ether);
    }

    // ------------------------------------------------------------------ sender binding

    /// Two OpenZeppelin accounts with the module and the same agent: a signature naming A is refused on
    /// B, and A's genuine operation moved onto B too.
    function test_SenderBinding_TwoAccounts() public {
        OzAccount7579 b = _newAccount();
        _installAndGrant(acct, _grant(agent, _targets(target)));
        _installAndGrant(b, _grant(agent, _targets(target)));

        PackedUserOperation memory opB =
            _op(address(b), ep.getNonce(address(b), _moduleKey(1, 0)), "", _exec(target, 1, ""));
        opB.signature = _sessionSig(agentKey, address(acct), ep.getUserOpHash(opB));
        _expectAA23(
            abi.encodeWithSelector(ISessionKeyValidator.AccountMismatch.selector, address(acct), address(b), address(b))
        );
        _handle(opB);

        PackedUserOperation memory opA = _sessionOp(acct, agentKey, _exec(target, 1, ""));
        opA.sender = address(b);
        _expectAA23(
            abi.encodeWithSelector(ISessionKeyValidator.AccountMismatch.selector, address(acct), address(b), address(b))
        );
        _handle(opA);

        // Both accounts' own operations land.
        _handle(_sessionOp(acct, agentKey, _exec(target, 1, "")));
        _handle(_sessionOp(b, agentKey, _exec(target, 1, "")));
        assertEq(target.balance, 2);
    }

    /// A wrong signer fails the signature (AA24) after the same policy work.
    function test_WrongSigner_AA24() public {
        _installAndGrant(acct, _grant(agent, _targets(target)));
        PackedUserOperation memory op =
            _op(address(acct), ep.getNonce(address(acct), _moduleKey(1, 0)), "", _exec(target, 1, ""));
        op.signature = _stubSessionSig(address(acct), agent);
        _expectAA24();
        _handle(op);
    }

    // ------------------------------------------------------------------ uninstall

    /// Uninstalling the module ends every session; reinstalling does not revive them; a re-grant does,
    /// on the key's same lane.
    function test_Uninstall_EndsSessions_ReinstallDoesNotRevive() public {
        _installAndGrant(acct, _grant(agent, _targets(target)));
        _handle(_ownerOp(acct, _grantExec(_grant(agent2, _targets(target)))));
        _handle(_sessionOp(acct, agentKey, _exec(target, 1, "")));

        vm.expectEmit(true, false, false, true, address(validator));
        emit ISessionKeyValidator.ModuleUninstalled(address(acct), 1);
        _handle(_ownerOp(acct, _uninstallCall()));
        assertFalse(acct.isModuleInstalled(MODULE_TYPE_VALIDATOR, address(validator), ""));
        assertFalse(validator.isInitialized(address(acct)));

        // The account no longer asks the module: its own signer refuses the session signature.
        PackedUserOperation memory op = _sessionOp(acct, agentKey, _exec(target, 1, ""));
        _expectAA24();
        _handle(op);
        // And the module refuses the account directly.
        bytes32 hash = ep.getUserOpHash(op);
        vm.prank(address(acct));
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.ModuleNotInstalled.selector, address(acct)));
        validator.validateUserOp(op, hash);

        _handle(_ownerOp(acct, _installCall()));
        (bool installed, uint32 generation,) = validator.moduleState(address(acct));
        assertTrue(installed);
        assertEq(generation, 1);
        uint256[2] memory keys = [agentKey, agent2Key];
        for (uint256 i; i < keys.length; ++i) {
            op = _sessionOp(acct, keys[i], _exec(target, 1, ""));
            _expectAA23(
                abi.encodeWithSelector(
                    ISessionKeyValidator.SessionUninstalled.selector, address(acct), vm.addr(keys[i])
                )
            );
            _handle(op);
        }

        _handle(_ownerOp(acct, _grantExec(_grant(agent, _targets(target)))));
        assertEq(_laneOf(acct, agent), 1, "same lane");
        assertEq(validator.getSession(address(acct), agent).generation, 1);
        _handle(_sessionOp(acct, agentKey, _exec(target, 1, "")));
        assertEq(target.balance, 2);
        op = _sessionOp(acct, agent2Key, _exec(target, 1, ""));
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.SessionUninstalled.selector, address(acct), agent2));
        _handle(op);
    }

    /// The module's own checks when called directly: a second installation is refused; an uninstall
    /// never reverts; an account that never installed it is refused.
    function test_Direct_InstallTwice_UninstallAlways_NotInstalled() public {
        vm.startPrank(address(acct));
        validator.onInstall("");
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.ModuleAlreadyInstalled.selector, address(acct)));
        validator.onInstall("");
        validator.onUninstall("");
        validator.onUninstall("");
        vm.stopPrank();
        (bool installed, uint32 generation,) = validator.moduleState(address(acct));
        assertFalse(installed);
        assertEq(generation, 2);

        OzAccount7579 b = _newAccount();
        vm.prank(address(b));
        validator.grantSession(_grant(agent, _targets(target)));
        PackedUserOperation memory op =
            _op(address(b), ep.getNonce(address(b), _moduleKey(1, 0)), "", _exec(target, 1, ""));
        bytes32 hash = ep.getUserOpHash(op);
        op.signature = _sessionSig(agentKey, address(b), hash);
        vm.prank(address(b));
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.ModuleNotInstalled.selector, address(b)));
        validator.validateUserOp(op, hash);
    }

    // ------------------------------------------------------------------ fuzz (the module called directly)

    /// @dev Installs the module on `acct` and grants the agent plain transfers to `target`, directly.
    function _directSetUp() internal {
        vm.startPrank(address(acct));
        validator.onInstall("");
        validator.grantSession(_grant(agent, _targets(target)));
        vm.stopPrank();
    }

    /// @dev The agent's operation on `acct` with nonce key `nonceKey`, signed over a made-up hash.
    function _directOp(uint192 nonceKey, bytes memory callData)
        internal
        view
        returns (PackedUserOperation memory op, bytes32 hash)
    {
        op = _op(address(acct), uint256(nonceKey) << 64, "", callData);
        hash = keccak256(abi.encode(op.nonce, op.callData));
        op.signature = _sessionSig(agentKey, address(acct), hash);
    }

    /// Only the agent's own lane (period 0, the session having no period) passes, whatever the bits.
    function testFuzz_Lane_OnlyItsOwn(uint32 laneAndPeriod, uint160 above) public {
        _directSetUp();
        uint192 nonceKey = (uint192(above) << 32) | laneAndPeriod;
        (PackedUserOperation memory op, bytes32 hash) = _directOp(nonceKey, _exec(target, 1, ""));
        vm.prank(address(acct));
        try validator.validateUserOp(op, hash) returns (uint256 validationData) {
            assertEq(laneAndPeriod, uint32(1) << 16, "accepted off its lane");
            assertEq(validationData, _packValidationData(false, UNTIL, AFTER));
        } catch (bytes memory err) {
            assertTrue(laneAndPeriod != uint32(1) << 16, "refused on its lane");
            assertEq(
                err,
                abi.encodeWithSelector(ISessionKeyValidator.NonceLaneNotAllowed.selector, nonceKey, _moduleKey(1, 0))
            );
        }
    }

    /// Only the plain single (0x00…) and batch (0x01…) modes pass, each with its own encoding: every
    /// other mode is refused, whatever its bytes.
    function testFuzz_Mode_OnlySingleAndBatch(bytes32 mode) public {
        _directSetUp();
        bytes memory single = abi.encodePacked(target, uint256(1));
        Execution[] memory one = new Execution[](1);
        one[0] = Execution(target, 1, "");
        bytes[2] memory encodings = [single, abi.encode(one)];
        for (uint256 i; i < 2; ++i) {
            bytes memory callData = abi.encodeCall(IERC7579Execution.execute, (mode, encodings[i]));
            (PackedUserOperation memory op, bytes32 hash) = _directOp(_moduleKey(1, 0), callData);
            uint256 snap = vm.snapshotState();
            vm.prank(address(acct));
            try validator.validateUserOp(op, hash) {
                assertEq(mode, i == 0 ? MODE_SINGLE : MODE_BATCH, "accepted another mode");
            } catch {
                assertTrue(mode != (i == 0 ? MODE_SINGLE : MODE_BATCH), "refused its own mode");
            }
            vm.revertToState(snap);
        }
    }

    /// A signature naming any other account is refused on this one.
    function testFuzz_SenderBinding(address named) public {
        vm.assume(named != address(acct));
        _directSetUp();
        (PackedUserOperation memory op, bytes32 hash) = _directOp(_moduleKey(1, 0), _exec(target, 1, ""));
        op.signature = _sessionSig(agentKey, named, hash);
        vm.prank(address(acct));
        vm.expectRevert(
            abi.encodeWithSelector(ISessionKeyValidator.AccountMismatch.selector, named, address(acct), address(acct))
        );
        validator.validateUserOp(op, hash);
    }

    // ------------------------------------------------------------------ ERC-1271

    /// Session keys have no ERC-1271 power through the module, directly or through the account.
    function test_IsValidSignatureWithSender_Refuses() public {
        _installAndGrant(acct, _grant(agent, _targets(target)));
        bytes32 hash = keccak256("message");
        bytes memory sig = _sessionSig(agentKey, address(acct), hash);
        assertEq(validator.isValidSignatureWithSender(address(this), hash, sig), bytes4(0xffffffff));
        assertEq(validator.isValidSignatureWithSender(address(acct), hash, sig), bytes4(0xffffffff));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(agentKey, hash);
        assertEq(
            validator.isValidSignatureWithSender(address(acct), hash, abi.encodePacked(r, s, v)), bytes4(0xffffffff)
        );
        assertEq(acct.isValidSignature(hash, abi.encodePacked(address(validator), sig)), bytes4(0xffffffff));
        assertEq(acct.isValidSignature(hash, abi.encodePacked(address(validator), r, s, v)), bytes4(0xffffffff));
    }
}

contract Erc7579ModuleV07Test is Erc7579ModuleTest {
    function _v08() internal pure override returns (bool) {
        return false;
    }
}

contract Erc7579ModuleV08Test is Erc7579ModuleTest {
    function _v08() internal pure override returns (bool) {
        return true;
    }
}
