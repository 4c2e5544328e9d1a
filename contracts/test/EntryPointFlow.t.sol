// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IEntryPoint, TestBase} from "./utils/TestBase.sol";
import {AgentAccount} from "../src/AgentAccount.sol";
import {AgentAccountFactory} from "../src/AgentAccountFactory.sol";
import {SessionKeyValidator} from "../src/SessionKeyValidator.sol";
import {PackedUserOperation} from "../src/interfaces/IERC4337.sol";
import {Call} from "../src/interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "../src/interfaces/ISessionKeyValidator.sol";

/// @notice Full handleOps flows through the real, canonical EntryPoint (deployed from the npm
/// artifact at its canonical address). Run for v0.7 and v0.8 by the two contracts at the end.
abstract contract EntryPointFlowTest is TestBase {
    IEntryPoint internal ep;
    AgentAccount internal account;
    address internal target = makeAddr("target");

    uint128 internal constant CAP = 1 ether;
    uint48 internal constant AFTER = 1_000;
    uint48 internal constant UNTIL = 100_000;

    function _v08() internal pure virtual returns (bool);

    function setUp() public {
        _setUpKeys();
        vm.warp(AFTER + 1);
        ep = _deployEntryPoint(_v08());
        validator = new SessionKeyValidator();
        factory = new AgentAccountFactory(address(ep), validator);
    }

    // ------------------------------------------------------------------ helpers

    function _handle(PackedUserOperation memory op) internal {
        vm.prank(bundler, bundler);
        ep.handleOps(_one(op), payable(bundler));
    }

    function _signOwner(PackedUserOperation memory op) internal view returns (PackedUserOperation memory) {
        op.signature = _ownerSig(ownerKey, ep.getUserOpHash(op));
        return op;
    }

    function _signSession(PackedUserOperation memory op, uint256 pk)
        internal
        view
        returns (PackedUserOperation memory)
    {
        op.signature = _sessionSig(pk, op.sender, ep.getUserOpHash(op));
        return op;
    }

    function _agentNonce(address sender) internal view returns (uint256) {
        return ep.getNonce(sender, uint192(uint160(agent)));
    }

    /// @dev Deploys the account of (owner, salt) through its first operation, which also grants the
    /// agent a session on `targets`.
    function _deployAndGrant(uint256 salt, address[] memory targets) internal returns (AgentAccount acct) {
        acct = AgentAccount(payable(factory.getAddress(owner, salt)));
        vm.deal(address(acct), 10 ether);
        PackedUserOperation memory op =
            _op(address(acct), 0, _initCode(owner, salt), _grantCall(agent, targets, CAP, AFTER, UNTIL));
        _handle(_signOwner(op));
        assertTrue(validator.getSession(address(acct), agent).active);
    }

    function _sessionTransfer(AgentAccount acct, address to, uint256 value)
        internal
        view
        returns (PackedUserOperation memory)
    {
        return _signSession(_op(address(acct), _agentNonce(address(acct)), "", _execute(to, value, "")), agentKey);
    }

    function _expectAA23(bytes memory inner) internal {
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOpWithRevert.selector, 0, "AA23 reverted", inner));
    }

    // ------------------------------------------------------------------ owner

    function test_OwnerOp_DeploysAccountAndTransfers() public {
        address predicted = factory.getAddress(owner, 0);
        vm.deal(predicted, 2 ether);
        PackedUserOperation memory op =
            _signOwner(_op(predicted, 0, _initCode(owner, 0), _execute(recipient, 1 ether, "")));
        bytes32 hash = ep.getUserOpHash(op);

        vm.expectEmit(true, true, true, false, address(ep));
        emit IEntryPoint.UserOperationEvent(hash, predicted, address(0), 0, true, 0, 0);
        _handle(op);

        assertGt(predicted.code.length, 0, "deployed");
        assertEq(AgentAccount(payable(predicted)).owner(), owner);
        assertEq(recipient.balance, 1 ether);
        assertGt(bundler.balance, 0, "bundler paid");
        assertEq(ep.getNonce(predicted, 0), 1);
    }

    function test_OwnerOp_WrongSigner_AA24() public {
        address predicted = factory.getAddress(owner, 0);
        vm.deal(predicted, 2 ether);
        PackedUserOperation memory op = _op(predicted, 0, _initCode(owner, 0), _execute(recipient, 1 ether, ""));
        op.signature = _ownerSig(agentKey, ep.getUserOpHash(op));
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOp.selector, 0, "AA24 signature error"));
        _handle(op);
    }

    // ------------------------------------------------------------------ session

    function test_SessionOp_TransfersWithinPolicy() public {
        account = _deployAndGrant(0, _targets(target));
        _handle(_sessionTransfer(account, target, 0.4 ether));
        assertEq(target.balance, 0.4 ether);
        assertEq(validator.getSession(address(account), agent).spent, 0.4 ether);

        // A batch on the agent's own nonce key.
        Call[] memory calls = new Call[](2);
        calls[0] = Call(target, 0.1 ether, "");
        calls[1] = Call(target, 0.2 ether, "");
        _handle(_signSession(_op(address(account), _agentNonce(address(account)), "", _executeBatch(calls)), agentKey));
        assertEq(target.balance, 0.7 ether);
        assertEq(validator.remainingBudget(address(account), agent), 0.3 ether);
        assertEq(_agentNonce(address(account)) & type(uint64).max, 2);
    }

    function test_SessionOp_OverCap_AA23() public {
        account = _deployAndGrant(0, _targets(target));
        _handle(_sessionTransfer(account, target, 0.8 ether));
        PackedUserOperation memory op = _sessionTransfer(account, target, 0.3 ether);
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, 0.3 ether, 0.2 ether));
        _handle(op);
    }

    function test_SessionOp_DisallowedTarget_AA23() public {
        account = _deployAndGrant(0, _targets(target));
        PackedUserOperation memory op = _sessionTransfer(account, recipient, 1);
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, recipient));
        _handle(op);
    }

    function test_SessionOp_CannotCallValidatorOrAccount_AA23() public {
        account = _deployAndGrant(0, _targets(target));
        PackedUserOperation memory op = _signSession(
            _op(
                address(account),
                _agentNonce(address(account)),
                "",
                _grantCall(agent, _targets(recipient), type(uint128).max, 0, 0)
            ),
            agentKey
        );
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.ForbiddenTarget.selector, address(validator)));
        _handle(op);

        op = _sessionTransfer(account, address(account), 0);
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.ForbiddenTarget.selector, address(account)));
        _handle(op);
    }

    function test_SessionOp_WrongSigner_AA24() public {
        account = _deployAndGrant(0, _targets(target));
        (, uint256 otherKey) = makeAddrAndKey("intruder");
        PackedUserOperation memory op =
            _op(address(account), _agentNonce(address(account)), "", _execute(target, 1, ""));
        bytes memory sig = _sessionSig(otherKey, address(account), ep.getUserOpHash(op));
        // Keep the intruder's r, s, v but name the granted agent key.
        op.signature = abi.encodePacked(bytes1(0x08), address(account), agent, _tail(sig, 41));
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOp.selector, 0, "AA24 signature error"));
        _handle(op);
    }

    function test_SessionOp_OutsideWindow_AA22() public {
        account = _deployAndGrant(0, _targets(target));
        vm.warp(UNTIL + 1);
        PackedUserOperation memory op = _sessionTransfer(account, target, 1);
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOp.selector, 0, "AA22 expired or not due"));
        _handle(op);

        vm.warp(AFTER - 1);
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOp.selector, 0, "AA22 expired or not due"));
        _handle(op);
    }

    function test_SessionOp_SignatureForAccountA_RefusedForB() public {
        AgentAccount a = _deployAndGrant(0, _targets(target));
        AgentAccount b = _deployAndGrant(1, _targets(target));
        PackedUserOperation memory opB = _op(address(b), _agentNonce(address(b)), "", _execute(target, 1, ""));
        // The agent signs B's hash but the signature names A (as a host would if it lied about the account).
        opB.signature = _sessionSig(agentKey, address(a), ep.getUserOpHash(opB));
        _expectAA23(
            abi.encodeWithSelector(ISessionKeyValidator.AccountMismatch.selector, address(a), address(b), address(b))
        );
        _handle(opB);

        // A's genuine signature moved onto B's operation is refused as well.
        PackedUserOperation memory opA = _sessionTransfer(a, target, 1);
        opA.sender = address(b);
        opA.nonce = _agentNonce(address(b));
        _expectAA23(
            abi.encodeWithSelector(ISessionKeyValidator.AccountMismatch.selector, address(a), address(b), address(b))
        );
        _handle(opA);
    }

    function test_SessionOp_Revoked_AA23_ThenRegrantedByAccount() public {
        account = _deployAndGrant(0, _targets(target));
        vm.prank(revoker);
        validator.revokeSession(address(account), agent);
        PackedUserOperation memory op = _sessionTransfer(account, target, 1);
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.SessionIsRevoked.selector, address(account), agent));
        _handle(op);

        // The owner re-grants through the account, with a different target.
        _handle(
            _signOwner(
                _op(
                    address(account),
                    ep.getNonce(address(account), 0),
                    "",
                    _grantCall(agent, _targets(recipient), CAP, 0, 0)
                )
            )
        );
        op = _sessionTransfer(account, target, 1);
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, target));
        _handle(op);
        _handle(_sessionTransfer(account, recipient, 5));
        assertEq(recipient.balance, 5);
    }

    function test_SessionOp_UnknownKey_AA23() public {
        account = _deployAndGrant(0, _targets(target));
        (address stranger, uint256 strangerKey) = makeAddrAndKey("stranger");
        PackedUserOperation memory op = _signSession(
            _op(address(account), _agentNonce(address(account)), "", _execute(target, 1, "")), strangerKey
        );
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.UnknownSession.selector, address(account), stranger));
        _handle(op);
    }

    function _tail(bytes memory b, uint256 from) internal pure returns (bytes memory out) {
        out = new bytes(b.length - from);
        for (uint256 i = from; i < b.length; ++i) {
            out[i - from] = b[i];
        }
    }
}

contract EntryPointV07FlowTest is EntryPointFlowTest {
    function _v08() internal pure override returns (bool) {
        return false;
    }
}

contract EntryPointV08FlowTest is EntryPointFlowTest {
    function _v08() internal pure override returns (bool) {
        return true;
    }
}
