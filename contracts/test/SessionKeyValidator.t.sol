// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Vm} from "forge-std/Test.sol";

import {TestBase} from "./utils/TestBase.sol";
import {SessionKeyValidator} from "../src/SessionKeyValidator.sol";
import {PackedUserOperation} from "../src/interfaces/IERC4337.sol";
import {Call} from "../src/interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "../src/interfaces/ISessionKeyValidator.sol";

/// @notice Unit tests of SessionKeyValidator, called directly with the account pranked as caller.
contract SessionKeyValidatorTest is TestBase {
    address internal account = makeAddr("account");
    address internal accountB = makeAddr("accountB");
    address internal target = makeAddr("target");
    address internal other = makeAddr("other");

    uint128 internal constant CAP = 1 ether;
    uint48 internal constant AFTER = 1000;
    uint48 internal constant UNTIL = 2000;

    function setUp() public {
        _setUpKeys();
        validator = new SessionKeyValidator();
    }

    // ------------------------------------------------------------------ helpers

    function _grant(address acct, address[] memory targets, uint128 cap) internal {
        vm.prank(acct);
        validator.grantSession(agent, targets, cap, AFTER, UNTIL, revoker);
    }

    /// @dev A session-signed op of `acct` whose callData is `callData`, signed by `pk`.
    function _signedOp(address acct, bytes memory callData, uint256 pk)
        internal
        pure
        returns (PackedUserOperation memory op, bytes32 hash)
    {
        op = _op(acct, 0, "", callData);
        hash = keccak256(abi.encode("op", acct, callData));
        op.signature = _sessionSig(pk, acct, hash);
    }

    function _validate(PackedUserOperation memory op, bytes32 hash) internal returns (uint256) {
        vm.prank(op.sender);
        return validator.validateSessionUserOp(op, hash);
    }

    function _window(bool failed) internal pure returns (uint256) {
        return (failed ? 1 : 0) | (uint256(UNTIL) << 160) | (uint256(AFTER) << 208);
    }

    // ------------------------------------------------------------------ grant

    function test_Grant_StoresSessionAndEmits() public {
        vm.expectEmit(true, true, false, true, address(validator));
        emit ISessionKeyValidator.SessionGranted(account, agent, 1, _targets(target), CAP, AFTER, UNTIL, revoker);
        _grant(account, _targets(target), CAP);

        ISessionKeyValidator.Session memory s = validator.getSession(account, agent);
        assertEq(s.validAfter, AFTER);
        assertEq(s.validUntil, UNTIL);
        assertEq(s.revoker, revoker);
        assertEq(s.spendCap, CAP);
        assertEq(s.spent, 0);
        assertEq(s.epoch, 1);
        assertTrue(s.active);
        assertTrue(validator.isTargetAllowed(account, agent, target));
        assertFalse(validator.isTargetAllowed(account, agent, other));
        assertFalse(validator.isTargetAllowed(accountB, agent, target), "grant is per account");
        assertEq(validator.remainingBudget(account, agent), CAP);
    }

    function test_IsSessionActive_FollowsWindow() public {
        _grant(account, _targets(target), CAP);
        vm.warp(AFTER - 1);
        assertFalse(validator.isSessionActive(account, agent));
        vm.warp(AFTER);
        assertTrue(validator.isSessionActive(account, agent));
        vm.warp(UNTIL);
        assertTrue(validator.isSessionActive(account, agent));
        vm.warp(UNTIL + 1);
        assertFalse(validator.isSessionActive(account, agent));
    }

    function test_IsSessionActive_NoEnd() public {
        vm.prank(account);
        validator.grantSession(agent, _targets(target), CAP, 0, 0, address(0));
        vm.warp(type(uint48).max);
        assertTrue(validator.isSessionActive(account, agent));
        assertFalse(validator.isSessionActive(accountB, agent), "never granted");
    }

    function test_Grant_RevertsOnZeroKey() public {
        vm.prank(account);
        vm.expectRevert(ISessionKeyValidator.InvalidSessionKey.selector);
        validator.grantSession(address(0), _targets(target), CAP, AFTER, UNTIL, revoker);
    }

    function test_Grant_RevertsOnBadWindow() public {
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.InvalidValidityWindow.selector, UNTIL, AFTER));
        validator.grantSession(agent, _targets(target), CAP, UNTIL, AFTER, revoker);
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.InvalidValidityWindow.selector, AFTER, AFTER));
        validator.grantSession(agent, _targets(target), CAP, AFTER, AFTER, revoker);
    }

    function test_Grant_RevertsOnForbiddenTargets() public {
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.ForbiddenTarget.selector, account));
        validator.grantSession(agent, _targets(target, account), CAP, AFTER, UNTIL, revoker);
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.ForbiddenTarget.selector, address(validator)));
        validator.grantSession(agent, _targets(address(validator)), CAP, AFTER, UNTIL, revoker);
    }

    // ------------------------------------------------------------------ revoke and re-grant

    function test_Revoke_ByAccount() public {
        _grant(account, _targets(target), CAP);
        vm.expectEmit(true, true, true, true, address(validator));
        emit ISessionKeyValidator.SessionRevoked(account, agent, account);
        vm.prank(account);
        validator.revokeSession(account, agent);
        ISessionKeyValidator.Session memory s = validator.getSession(account, agent);
        assertFalse(s.active);
        assertEq(s.epoch, 1);
        assertFalse(validator.isSessionActive(account, agent));
        assertFalse(validator.isTargetAllowed(account, agent, target));
        assertEq(validator.remainingBudget(account, agent), 0);
    }

    function test_Revoke_ByRevoker() public {
        _grant(account, _targets(target), CAP);
        vm.expectEmit(true, true, true, true, address(validator));
        emit ISessionKeyValidator.SessionRevoked(account, agent, revoker);
        vm.prank(revoker);
        validator.revokeSession(account, agent);
        assertFalse(validator.getSession(account, agent).active);
    }

    function test_Revoke_RevertsForOthers() public {
        _grant(account, _targets(target), CAP);
        vm.prank(other);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.NotAuthorizedToRevoke.selector, other));
        validator.revokeSession(account, agent);
        // The revoker of A's session has no say over B's session of the same key.
        vm.prank(accountB);
        validator.grantSession(agent, _targets(target), CAP, AFTER, UNTIL, address(0));
        vm.prank(revoker);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.NotAuthorizedToRevoke.selector, revoker));
        validator.revokeSession(accountB, agent);
    }

    function test_Revoke_ZeroRevokerIsNobody() public {
        vm.prank(account);
        validator.grantSession(agent, _targets(target), CAP, AFTER, UNTIL, address(0));
        vm.prank(address(0));
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.NotAuthorizedToRevoke.selector, address(0)));
        validator.revokeSession(account, agent);
    }

    function test_Revoke_RevertsWhenUnknownOrAlreadyRevoked() public {
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.UnknownSession.selector, account, agent));
        validator.revokeSession(account, agent);

        _grant(account, _targets(target), CAP);
        vm.prank(account);
        validator.revokeSession(account, agent);
        vm.prank(revoker);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.SessionIsRevoked.selector, account, agent));
        validator.revokeSession(account, agent);
    }

    function test_Regrant_AfterRevoke_OnlyByAccount_NoOldTargets() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _execute(target, 0.4 ether, ""), agentKey);
        _validate(op, hash);
        vm.prank(revoker);
        validator.revokeSession(account, agent);

        // The revoker cannot bring the session back: grantSession only ever acts for msg.sender.
        vm.prank(revoker);
        validator.grantSession(agent, _targets(target), CAP, AFTER, UNTIL, revoker);
        assertFalse(validator.getSession(account, agent).active);
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.SessionIsRevoked.selector, account, agent));
        validator.validateSessionUserOp(op, hash);

        // The account can, with a new allowlist that does not inherit `target`.
        vm.prank(account);
        validator.grantSession(agent, _targets(other), CAP, AFTER, UNTIL, revoker);
        ISessionKeyValidator.Session memory s = validator.getSession(account, agent);
        assertTrue(s.active);
        assertEq(s.epoch, 2);
        assertEq(s.spent, 0, "spent restarts with the grant");
        assertFalse(validator.isTargetAllowed(account, agent, target), "old target inherited");
        assertTrue(validator.isTargetAllowed(account, agent, other));
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, target));
        validator.validateSessionUserOp(op, hash);
    }

    function test_Regrant_WhileActive_ReplacesGrant() public {
        _grant(account, _targets(target), CAP);
        vm.prank(account);
        validator.grantSession(agent, _targets(other), 5, 0, 0, address(0));
        ISessionKeyValidator.Session memory s = validator.getSession(account, agent);
        assertEq(s.epoch, 2);
        assertEq(s.spendCap, 5);
        assertFalse(validator.isTargetAllowed(account, agent, target));
    }

    // ------------------------------------------------------------------ validation: success paths

    function test_Validate_Execute_ReturnsWindowAndRecordsSpend() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _execute(target, 0.25 ether, "ab"), agentKey);
        vm.expectEmit(true, true, false, true, address(validator));
        emit ISessionKeyValidator.SessionSpent(account, agent, 0.25 ether, 0.25 ether);
        assertEq(_validate(op, hash), _window(false));
        assertEq(validator.getSession(account, agent).spent, 0.25 ether);
        assertEq(validator.remainingBudget(account, agent), 0.75 ether);
    }

    function test_Validate_Batch_SumsValues() public {
        _grant(account, _targets(target, other), CAP);
        Call[] memory calls = new Call[](3);
        calls[0] = Call(target, 0.1 ether, "");
        calls[1] = Call(other, 0.2 ether, hex"1234");
        calls[2] = Call(target, 0, "");
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _executeBatch(calls), agentKey);
        vm.expectEmit(true, true, false, true, address(validator));
        emit ISessionKeyValidator.SessionSpent(account, agent, 0.3 ether, 0.3 ether);
        assertEq(_validate(op, hash), _window(false));
        assertEq(validator.getSession(account, agent).spent, 0.3 ether);
    }

    function test_Validate_ZeroValue_NoSpendEvent() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _execute(target, 0, "ab"), agentKey);
        vm.recordLogs();
        assertEq(_validate(op, hash), _window(false));
        assertEq(vm.getRecordedLogs().length, 0);
    }

    function test_Validate_ExactCapAllowed() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _execute(target, CAP, ""), agentKey);
        assertEq(_validate(op, hash), _window(false));
        assertEq(validator.remainingBudget(account, agent), 0);
    }

    function test_Validate_EmptyBatch() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _executeBatch(new Call[](0)), agentKey);
        assertEq(_validate(op, hash), _window(false));
    }

    // ------------------------------------------------------------------ validation: signature failures

    function test_Validate_WrongSigner_ReturnsSigFailedWithWindow() public {
        _grant(account, _targets(target), CAP);
        (, uint256 otherKey) = makeAddrAndKey("other-signer");
        bytes memory callData = _execute(target, 0.5 ether, "");
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, callData, otherKey);
        // Name the granted key but sign with another one.
        op.signature = _withKey(op.signature, agent);
        assertEq(_validate(op, hash), _window(true));
        // The policy ran all the same (estimation with a stub costs what the real op costs).
        assertEq(validator.getSession(account, agent).spent, 0.5 ether);
    }

    function test_Validate_StubSignature_ReturnsSigFailed() public {
        _grant(account, _targets(target), CAP);
        PackedUserOperation memory op = _op(account, 0, "", _execute(target, 1, ""));
        op.signature = _stubSessionSig(account, agent);
        assertEq(_validate(op, bytes32(uint256(7))), _window(true));
    }

    /// Estimation with a stub signature runs the same policy path as the real signature, so its
    /// validation gas is the real one's (within the few hundred gas of ECDSA's failure branch).
    function test_Validate_StubSignatureCostsWhatTheRealOneCosts() public {
        _grant(account, _targets(target, other), CAP);
        Call[] memory calls = new Call[](2);
        calls[0] = Call(target, 0.1 ether, hex"00112233");
        calls[1] = Call(other, 0.2 ether, "");
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _executeBatch(calls), agentKey);

        uint256 snap = vm.snapshotState();
        vm.prank(account);
        uint256 before = gasleft();
        uint256 real = validator.validateSessionUserOp(op, hash);
        uint256 realGas = before - gasleft();
        vm.revertToState(snap);

        op.signature = _stubSessionSig(account, agent);
        vm.prank(account);
        before = gasleft();
        uint256 stub = validator.validateSessionUserOp(op, hash);
        uint256 stubGas = before - gasleft();

        assertEq(real & 1, 0);
        assertEq(stub & 1, 1);
        uint256 diff = realGas > stubGas ? realGas - stubGas : stubGas - realGas;
        assertLt(diff, 500, "stub and real validation gas differ");
    }

    function test_Validate_HighS_ReturnsSigFailed() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _execute(target, 0, ""), agentKey);
        bytes memory sig = op.signature;
        uint256 n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        uint256 s;
        assembly {
            s := mload(add(sig, add(0x20, 73)))
        }
        uint256 highS = n - s;
        uint8 v = uint8(sig[105]) == 27 ? 28 : 27;
        op.signature = abi.encodePacked(_slice(sig, 0, 73), bytes32(highS), v);
        assertEq(_validate(op, hash), _window(true));
    }

    function test_Validate_BadV_ReturnsSigFailed() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _execute(target, 0, ""), agentKey);
        uint8[4] memory vs = [uint8(0), 1, 29, 255];
        for (uint256 i; i < vs.length; ++i) {
            op.signature[105] = bytes1(vs[i]);
            assertEq(_validate(op, hash), _window(true));
        }
    }

    // ------------------------------------------------------------------ validation: named errors

    function test_Validate_RevertsOnLength() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _execute(target, 0, ""), agentKey);
        op.signature = abi.encodePacked(op.signature, bytes1(0));
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.InvalidSignatureLength.selector, 107));
        validator.validateSessionUserOp(op, hash);
        op.signature = "";
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.InvalidSignatureLength.selector, 0));
        validator.validateSessionUserOp(op, hash);
    }

    function test_Validate_RevertsOnMarker() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _execute(target, 0, ""), agentKey);
        op.signature[0] = 0x09;
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.InvalidSignatureMarker.selector, bytes1(0x09)));
        validator.validateSessionUserOp(op, hash);
    }

    function test_Validate_RevertsWhenSignedAccountIsNotSender() public {
        _grant(account, _targets(target), CAP);
        _grant(accountB, _targets(target), CAP);
        // Signed for A, submitted by B as B's operation.
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _execute(target, 0, ""), agentKey);
        op.sender = accountB;
        vm.prank(accountB);
        vm.expectRevert(
            abi.encodeWithSelector(ISessionKeyValidator.AccountMismatch.selector, account, accountB, accountB)
        );
        validator.validateSessionUserOp(op, hash);
    }

    function test_Validate_RevertsWhenCallerIsNotSender() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _execute(target, 0, ""), agentKey);
        vm.prank(other);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.AccountMismatch.selector, account, account, other));
        validator.validateSessionUserOp(op, hash);
    }

    function test_Validate_RevertsOnUnknownSession() public {
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _execute(target, 0, ""), agentKey);
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.UnknownSession.selector, account, agent));
        validator.validateSessionUserOp(op, hash);
    }

    function test_Validate_RevertsOnRevokedSession() public {
        _grant(account, _targets(target), CAP);
        vm.prank(account);
        validator.revokeSession(account, agent);
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _execute(target, 0, ""), agentKey);
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.SessionIsRevoked.selector, account, agent));
        validator.validateSessionUserOp(op, hash);
    }

    function test_Validate_RevertsOnUnsupportedCall() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) =
            _signedOp(account, abi.encodeWithSignature("transfer(address,uint256)", target, 1), agentKey);
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.UnsupportedCall.selector, bytes4(0xa9059cbb)));
        validator.validateSessionUserOp(op, hash);

        (op, hash) = _signedOp(account, hex"b61d27", agentKey);
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.UnsupportedCall.selector, bytes4(0)));
        validator.validateSessionUserOp(op, hash);
    }

    function test_Validate_RevertsOnForbiddenTargets() public {
        _grant(account, _targets(target), CAP);
        address[2] memory forbidden = [account, address(validator)];
        for (uint256 i; i < forbidden.length; ++i) {
            (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _execute(forbidden[i], 0, ""), agentKey);
            vm.prank(account);
            vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.ForbiddenTarget.selector, forbidden[i]));
            validator.validateSessionUserOp(op, hash);

            Call[] memory calls = new Call[](2);
            calls[0] = Call(target, 0, "");
            calls[1] = Call(forbidden[i], 0, "");
            (op, hash) = _signedOp(account, _executeBatch(calls), agentKey);
            vm.prank(account);
            vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.ForbiddenTarget.selector, forbidden[i]));
            validator.validateSessionUserOp(op, hash);
        }
    }

    function test_Validate_RevertsOnTargetNotAllowed() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _execute(other, 0, ""), agentKey);
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, other));
        validator.validateSessionUserOp(op, hash);

        Call[] memory calls = new Call[](2);
        calls[0] = Call(target, 0, "");
        calls[1] = Call(other, 0, "");
        (op, hash) = _signedOp(account, _executeBatch(calls), agentKey);
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, other));
        validator.validateSessionUserOp(op, hash);
    }

    function test_Validate_TargetsArePerAccount() public {
        _grant(account, _targets(target), CAP);
        _grant(accountB, _targets(other), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(accountB, _execute(target, 0, ""), agentKey);
        vm.prank(accountB);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, target));
        validator.validateSessionUserOp(op, hash);
    }

    function test_Validate_RevertsOverCap() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _execute(target, CAP + 1, ""), agentKey);
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, CAP + 1, CAP));
        validator.validateSessionUserOp(op, hash);
    }

    function test_Validate_RevertsOverCap_Cumulative() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _execute(target, 0.7 ether, ""), agentKey);
        _validate(op, hash);
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, 0.7 ether, 0.3 ether));
        validator.validateSessionUserOp(op, hash);
    }

    function test_Validate_RevertsOverCap_Batch() public {
        _grant(account, _targets(target), CAP);
        Call[] memory calls = new Call[](3);
        calls[0] = Call(target, 0.5 ether, "");
        calls[1] = Call(target, 0.4 ether, "");
        calls[2] = Call(target, 0.2 ether, "");
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _executeBatch(calls), agentKey);
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, 0.2 ether, 0.1 ether));
        validator.validateSessionUserOp(op, hash);
    }

    function test_Validate_HugeValuesDoNotOverflow() public {
        _grant(account, _targets(target), type(uint128).max);
        Call[] memory calls = new Call[](2);
        calls[0] = Call(target, type(uint128).max, "");
        calls[1] = Call(target, type(uint256).max, "");
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _executeBatch(calls), agentKey);
        vm.prank(account);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, type(uint256).max, 0));
        validator.validateSessionUserOp(op, hash);
    }

    // ------------------------------------------------------------------ fuzz

    /// Spend accumulates across many operations and never passes the cap: every op either validates
    /// and adds exactly its value, or reverts with SpendCapExceeded and changes nothing.
    function testFuzz_SpendNeverExceedsCap(uint128 cap, uint96[16] memory values) public {
        vm.prank(account);
        validator.grantSession(agent, _targets(target), cap, 0, 0, address(0));
        uint256 expected;
        for (uint256 i; i < values.length; ++i) {
            (PackedUserOperation memory op, bytes32 hash) =
                _signedOp(account, _execute(target, values[i], abi.encode(i)), agentKey);
            if (expected + values[i] <= cap) {
                assertEq(_validate(op, hash), 0);
                expected += values[i];
            } else {
                vm.prank(account);
                vm.expectRevert(
                    abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, values[i], cap - expected)
                );
                validator.validateSessionUserOp(op, hash);
            }
            uint256 spent = validator.getSession(account, agent).spent;
            assertEq(spent, expected);
            assertLe(spent, cap);
            assertEq(validator.remainingBudget(account, agent), cap - spent);
        }
    }

    /// Sender binding: with the same key holding sessions on A and B, a signature made for A never
    /// validates for B, whoever calls and whatever the op contains.
    function testFuzz_SenderBinding(bytes32 hash, uint64 value, bool batch, address caller) public {
        _grant(account, _targets(target), CAP);
        _grant(accountB, _targets(target), CAP);
        bytes memory callData;
        if (batch) {
            Call[] memory calls = new Call[](1);
            calls[0] = Call(target, value, "");
            callData = _executeBatch(calls);
        } else {
            callData = _execute(target, value, "");
        }
        PackedUserOperation memory op = _op(accountB, 0, "", callData);
        op.signature = _sessionSig(agentKey, account, hash);

        vm.prank(caller);
        (bool ok, bytes memory ret) =
            address(validator).call(abi.encodeCall(SessionKeyValidator.validateSessionUserOp, (op, hash)));
        assertFalse(ok, "a signature for A validated for B");
        assertEq(bytes4(ret), ISessionKeyValidator.AccountMismatch.selector);
        assertEq(validator.getSession(accountB, agent).spent, 0);
        assertEq(validator.getSession(account, agent).spent, 0);
    }

    /// Any bytes as a session signature: either a named error, or validation data whose
    /// signature-failure bit is set unless it is the real signature.
    function testFuzz_ArbitrarySignatureNeverValidates(bytes memory sig, bytes32 hash) public {
        _grant(account, _targets(target), CAP);
        PackedUserOperation memory op = _op(account, 0, "", _execute(target, 1, ""));
        op.signature = sig;
        vm.prank(account);
        try validator.validateSessionUserOp(op, hash) returns (uint256 data) {
            assertEq(sig.length, 106);
            assertEq(data & 1, 1, "arbitrary bytes validated");
        } catch (bytes memory err) {
            bytes4 sel = bytes4(err);
            assertTrue(
                sel == ISessionKeyValidator.InvalidSignatureLength.selector
                    || sel == ISessionKeyValidator.InvalidSignatureMarker.selector
                    || sel == ISessionKeyValidator.AccountMismatch.selector
                    || sel == ISessionKeyValidator.UnknownSession.selector,
                "unexpected revert"
            );
        }
    }

    // ------------------------------------------------------------------ utils

    function _withKey(bytes memory sig, address key) internal pure returns (bytes memory) {
        return abi.encodePacked(_slice(sig, 0, 21), key, _slice(sig, 41, 106));
    }

    function _slice(bytes memory b, uint256 from, uint256 to) internal pure returns (bytes memory out) {
        out = new bytes(to - from);
        for (uint256 i = from; i < to; ++i) {
            out[i - from] = b[i];
        }
    }
}
