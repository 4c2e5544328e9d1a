// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {stdError} from "forge-std/StdError.sol";
import {Vm} from "forge-std/Vm.sol";

import {TestBase} from "./utils/TestBase.sol";
import {EntryPointReporter, Recorder} from "./utils/Mocks.sol";
import {SessionKeyValidator} from "../SessionKeyValidator.sol";
import {PackedUserOperation} from "../interfaces/IERC4337.sol";
import {Call} from "../interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "../interfaces/ISessionKeyValidator.sol";
import {TestToken} from "../testing/TestToken.sol";

/// @notice Unit tests of SessionKeyValidator, called directly with the account pranked as caller.
contract SessionKeyValidatorTest is TestBase {
    address internal account = makeAddr("account");
    address internal accountB = makeAddr("accountB");
    address internal target = makeAddr("target");
    address internal other = makeAddr("other");
    address internal paymaster = makeAddr("paymaster");
    address internal agent2;
    uint256 internal agent2Key;
    Recorder internal rec;
    TestToken internal token;

    uint128 internal constant CAP = 1 ether;
    uint96 internal constant GAS_CAP = 1 ether;
    uint112 internal constant TOKEN_CAP = 100e18;
    uint48 internal constant AFTER = 1000;
    uint48 internal constant UNTIL = 2000;

    bytes4 internal constant HIT = Recorder.hit.selector;
    bytes4 internal constant OTHER = Recorder.other.selector;
    bytes4 internal constant TRANSFER = 0xa9059cbb;
    bytes4 internal constant APPROVE = 0x095ea7b3;
    bytes4 internal constant INCREASE_ALLOWANCE = 0x39509351;
    bytes4 internal constant TRANSFER_FROM = 0x23b872dd;
    bytes4 internal constant MINT = TestToken.mint.selector;

    function setUp() public {
        _setUpKeys();
        (agent2, agent2Key) = makeAddrAndKey("agent2");
        validator = new SessionKeyValidator();
        rec = new Recorder();
        token = new TestToken();
    }

    // ------------------------------------------------------------------ helpers

    /// @dev The default grant of `agent`: window [AFTER, UNTIL], the revoker, CAP, GAS_CAP, plain
    /// transfers to `targets`.
    function _g(address[] memory targets, uint128 cap)
        internal
        view
        returns (ISessionKeyValidator.SessionGrant memory g)
    {
        g = _grantOf(agent, targets, cap, GAS_CAP);
        g.validAfter = AFTER;
        g.validUntil = UNTIL;
        g.revoker = revoker;
    }

    /// @dev The default grant plus: `rec` with `hit` listed, `token` capped at TOKEN_CAP.
    function _rich() internal view returns (ISessionKeyValidator.SessionGrant memory g) {
        g = _g(_targets(target), CAP);
        _addTarget(g, address(rec), false, _sels(HIT));
        _addToken(g, address(token), TOKEN_CAP);
    }

    function _grantAs(address acct, ISessionKeyValidator.SessionGrant memory g) internal {
        vm.prank(acct);
        validator.grantSession(g);
    }

    function _grant(address acct, address[] memory targets, uint128 cap) internal {
        _grantAs(acct, _g(targets, cap));
    }

    function _expectGrantRevert(address acct, ISessionKeyValidator.SessionGrant memory g, bytes memory err) internal {
        vm.prank(acct);
        vm.expectRevert(err);
        validator.grantSession(g);
    }

    /// @dev A session-signed op of `acct` on `agent`'s lane whose callData is `callData`, signed by `pk`.
    function _signedOp(address acct, bytes memory callData, uint256 pk)
        internal
        pure
        returns (PackedUserOperation memory op, bytes32 hash)
    {
        op = _op(acct, 0, "", callData);
        op.nonce = _lane(vm.addr(pk), 0);
        hash = keccak256(abi.encode("op", acct, callData));
        op.signature = _sessionSig(pk, acct, hash);
    }

    /// @dev `_signedOp` by the agent, with the agent's lane whoever signs.
    function _agentOp(bytes memory callData) internal view returns (PackedUserOperation memory op, bytes32 hash) {
        (op, hash) = _signedOp(account, callData, agentKey);
    }

    function _resign(PackedUserOperation memory op, bytes32 hash, uint256 pk) internal pure {
        op.signature = _sessionSig(pk, op.sender, hash);
    }

    function _validate(PackedUserOperation memory op, bytes32 hash) internal returns (uint256) {
        vm.prank(op.sender);
        return validator.validateSessionUserOp(op, hash);
    }

    function _expectValidateRevert(PackedUserOperation memory op, bytes32 hash, bytes memory err) internal {
        vm.prank(op.sender);
        vm.expectRevert(err);
        validator.validateSessionUserOp(op, hash);
    }

    function _window(bool failed) internal pure returns (uint256) {
        return (failed ? 1 : 0) | (uint256(UNTIL) << 160) | (uint256(AFTER) << 208);
    }

    function _session() internal view returns (ISessionKeyValidator.Session memory) {
        return validator.getSession(account, agent);
    }

    function _tokenSpent() internal view returns (uint256) {
        return validator.getPermission(account, agent, address(token)).tokenSpent;
    }

    function _tokenCall(bytes4 selector, address to, uint256 amount) internal pure returns (bytes memory) {
        return abi.encodeWithSelector(selector, to, amount);
    }

    // ------------------------------------------------------------------ grant

    function test_Grant_StoresSessionAndEmits() public {
        ISessionKeyValidator.SessionGrant memory g = _rich();
        g.paymaster = paymaster;
        g.maxOps = 9;
        _addTarget(g, other, true, _noSels());
        vm.expectEmit(true, true, false, true, address(validator));
        emit ISessionKeyValidator.SessionGranted(account, agent, 1, g);
        _grantAs(account, g);

        ISessionKeyValidator.Session memory s = _session();
        assertEq(s.validAfter, AFTER);
        assertEq(s.validUntil, UNTIL);
        assertEq(s.revoker, revoker);
        assertEq(s.spendCap, CAP);
        assertEq(s.spent, 0);
        assertEq(s.gasCap, GAS_CAP);
        assertEq(s.gasSpent, 0);
        assertEq(s.maxOps, 9);
        assertEq(s.opsUsed, 0);
        assertEq(s.paymaster, paymaster);
        assertEq(s.epoch, 1);
        assertTrue(s.active);
        assertEq(s.period, 0, "no period");
        assertEq(s.periodCap, 0);

        ISessionKeyValidator.Permission memory p = validator.getPermission(account, agent, target);
        assertTrue(p.allowed);
        assertFalse(p.anySelector);
        assertFalse(p.isToken);
        p = validator.getPermission(account, agent, other);
        assertTrue(p.allowed);
        assertTrue(p.anySelector);
        p = validator.getPermission(account, agent, address(token));
        assertTrue(p.allowed);
        assertTrue(p.isToken);
        assertFalse(p.anySelector);
        assertEq(p.tokenCap, TOKEN_CAP);
        assertEq(p.tokenSpent, 0);
        p = validator.getPermission(account, agent, recipient);
        assertFalse(p.allowed, "not listed");

        assertTrue(validator.isSelectorAllowed(account, agent, address(rec), HIT));
        assertFalse(validator.isSelectorAllowed(account, agent, address(rec), OTHER));
        assertFalse(validator.isSelectorAllowed(account, agent, target, HIT), "selectors are per target");
        assertFalse(validator.isSelectorAllowed(account, agent, address(token), TRANSFER), "counted, not listed");
        assertTrue(validator.isTargetAllowed(account, agent, target));
        assertTrue(validator.isTargetAllowed(account, agent, address(rec)));
        assertTrue(validator.isTargetAllowed(account, agent, address(token)));
        assertFalse(validator.isTargetAllowed(account, agent, recipient));
        assertFalse(validator.isTargetAllowed(accountB, agent, target), "grant is per account");
        assertFalse(validator.isSelectorAllowed(accountB, agent, address(rec), HIT), "grant is per account");
        assertEq(validator.remainingBudget(account, agent), CAP);
    }

    function testFuzz_Grant_StoresEveryField(
        uint48 validAfter,
        uint48 validUntil,
        address revoker_,
        uint128 spendCap,
        uint96 gasCap,
        address paymaster_,
        uint32 maxOps,
        uint32 period,
        uint128 periodCap
    ) public {
        vm.assume(validUntil == 0 || validUntil > validAfter);
        if (period == 0 || periodCap == 0) (period, periodCap) = (0, 0);
        else period = uint32(_bound(period, 60, type(uint32).max));
        ISessionKeyValidator.SessionGrant memory g = _grantOf(agent, _targets(target), spendCap, gasCap);
        (g.validAfter, g.validUntil, g.revoker, g.paymaster, g.maxOps) =
        (validAfter, validUntil, revoker_, paymaster_, maxOps);
        _setPeriod(g, period, periodCap);
        _grantAs(account, g);
        ISessionKeyValidator.Session memory s = _session();
        assertEq(s.validAfter, validAfter);
        assertEq(s.validUntil, validUntil);
        assertEq(s.revoker, revoker_);
        assertEq(s.spendCap, spendCap);
        assertEq(s.gasCap, gasCap);
        assertEq(s.paymaster, paymaster_);
        assertEq(s.maxOps, maxOps);
        assertEq(s.period, period);
        assertEq(s.periodCap, periodCap);
        assertEq(s.spent, 0);
        assertEq(s.gasSpent, 0);
        assertEq(s.opsUsed, 0);
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
        _grantAs(account, _grantOf(agent, _targets(target), CAP, GAS_CAP));
        vm.warp(type(uint48).max);
        assertTrue(validator.isSessionActive(account, agent));
        assertFalse(validator.isSessionActive(accountB, agent), "never granted");
    }

    function test_Grant_RevertsOnZeroKey() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        g.key = address(0);
        _expectGrantRevert(account, g, abi.encodeWithSelector(ISessionKeyValidator.InvalidSessionKey.selector));
    }

    function test_Grant_RevertsOnBadWindow() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        (g.validAfter, g.validUntil) = (UNTIL, AFTER);
        _expectGrantRevert(
            account, g, abi.encodeWithSelector(ISessionKeyValidator.InvalidValidityWindow.selector, UNTIL, AFTER)
        );
        (g.validAfter, g.validUntil) = (AFTER, AFTER);
        _expectGrantRevert(
            account, g, abi.encodeWithSelector(ISessionKeyValidator.InvalidValidityWindow.selector, AFTER, AFTER)
        );
        // validUntil 0 means no end, whatever validAfter is.
        (g.validAfter, g.validUntil) = (type(uint48).max, 0);
        _grantAs(account, g);
        assertEq(_session().validAfter, type(uint48).max);
    }

    function test_Grant_RevertsOnForbiddenTargets() public {
        address[4] memory forbidden = [account, address(validator), ENTRY_POINT_V07, ENTRY_POINT_V08];
        for (uint256 i; i < forbidden.length; ++i) {
            bytes memory err = abi.encodeWithSelector(ISessionKeyValidator.ForbiddenTarget.selector, forbidden[i]);
            // As a plain target, after an allowed one.
            _expectGrantRevert(account, _g(_targets(target, forbidden[i]), CAP), err);
            // As a target with every function.
            ISessionKeyValidator.SessionGrant memory g = _g(_noTargets(), CAP);
            _addTarget(g, forbidden[i], true, _noSels());
            _expectGrantRevert(account, g, err);
            // As a token.
            g = _g(_noTargets(), CAP);
            _addToken(g, forbidden[i], 1);
            _expectGrantRevert(account, g, err);
        }
    }

    /// The account's own EntryPoint (whatever its address) is refused, as reported by `entryPoint()`.
    function test_Grant_RevertsOnTheAccountsEntryPoint() public {
        address customEp = address(new Recorder());
        EntryPointReporter acct = new EntryPointReporter(customEp);
        bytes memory err = abi.encodeWithSelector(ISessionKeyValidator.ForbiddenTarget.selector, customEp);
        _expectGrantRevert(address(acct), _g(_targets(customEp), CAP), err);
        ISessionKeyValidator.SessionGrant memory g = _g(_noTargets(), CAP);
        _addToken(g, customEp, 1);
        _expectGrantRevert(address(acct), g, err);
        // For an account with another EntryPoint, that address is an ordinary target.
        _grantAs(account, _g(_targets(customEp), CAP));
        assertTrue(validator.isTargetAllowed(account, agent, customEp));
    }

    function test_Grant_RevertsOnDuplicateTarget() public {
        bytes memory err = abi.encodeWithSelector(ISessionKeyValidator.DuplicateTarget.selector, target);
        _expectGrantRevert(account, _g(_targets(target, target), CAP), err);
        // Twice with different permissions.
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        _addTarget(g, target, true, _noSels());
        _expectGrantRevert(account, g, err);
        // A token listed twice.
        g = _g(_noTargets(), CAP);
        _addToken(g, address(token), 1);
        _addToken(g, address(token), 2);
        _expectGrantRevert(
            account, g, abi.encodeWithSelector(ISessionKeyValidator.DuplicateTarget.selector, address(token))
        );
    }

    function test_Grant_RevertsOnDuplicateSelector() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_noTargets(), CAP);
        _addTarget(g, address(rec), false, _sels(HIT, HIT));
        _expectGrantRevert(
            account, g, abi.encodeWithSelector(ISessionKeyValidator.DuplicateSelector.selector, address(rec), HIT)
        );
    }

    function test_Grant_RevertsOnConflictingPermission() public {
        // anySelector together with a selector list.
        ISessionKeyValidator.SessionGrant memory g = _g(_noTargets(), CAP);
        _addTarget(g, address(rec), true, _sels(HIT));
        _expectGrantRevert(
            account, g, abi.encodeWithSelector(ISessionKeyValidator.ConflictingPermission.selector, address(rec))
        );
        // anySelector on a capped token: its other functions would move tokens uncounted.
        g = _g(_noTargets(), CAP);
        _addTarget(g, address(token), true, _noSels());
        _addToken(g, address(token), TOKEN_CAP);
        _expectGrantRevert(
            account, g, abi.encodeWithSelector(ISessionKeyValidator.ConflictingPermission.selector, address(token))
        );
    }

    function test_Grant_RevertsOnNotAContract() public {
        // A selector list on an address without code.
        ISessionKeyValidator.SessionGrant memory g = _g(_noTargets(), CAP);
        _addTarget(g, other, false, _sels(HIT));
        _expectGrantRevert(account, g, abi.encodeWithSelector(ISessionKeyValidator.NotAContract.selector, other));
        // A token without code.
        g = _g(_noTargets(), CAP);
        _addToken(g, other, TOKEN_CAP);
        _expectGrantRevert(account, g, abi.encodeWithSelector(ISessionKeyValidator.NotAContract.selector, other));
        // Plain transfers and every function are fine on an address without code.
        g = _g(_targets(target), CAP);
        _addTarget(g, other, true, _noSels());
        _grantAs(account, g);
        assertTrue(validator.getPermission(account, agent, other).anySelector);
    }

    function test_Grant_RevertsOnZeroTokenCap() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_noTargets(), CAP);
        _addToken(g, address(token), 0);
        _expectGrantRevert(
            account, g, abi.encodeWithSelector(ISessionKeyValidator.ZeroTokenCap.selector, address(token))
        );
    }

    /// A token may also be a target with a selector list: its other functions, named, become callable,
    /// while the counted ones stay counted.
    function test_Grant_TokenAlsoTargetWithSelectors() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_noTargets(), CAP);
        _addTarget(g, address(token), false, _sels(MINT, TRANSFER));
        _addToken(g, address(token), 10);
        _grantAs(account, g);
        ISessionKeyValidator.Permission memory p = validator.getPermission(account, agent, address(token));
        assertTrue(p.allowed && p.isToken && !p.anySelector);
        assertEq(p.tokenCap, 10);
        assertTrue(validator.isSelectorAllowed(account, agent, address(token), MINT));

        (PackedUserOperation memory op, bytes32 hash) =
            _agentOp(_execute(address(token), 0, abi.encodeCall(TestToken.mint, (account, 1e30))));
        assertEq(_validate(op, hash), _window(false));
        assertEq(_tokenSpent(), 0, "mint is not a counted call");
        // Listing `transfer` does not lift its cap.
        (op, hash) = _agentOp(_execute(address(token), 0, _tokenCall(TRANSFER, recipient, 11)));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.TokenCapExceeded.selector, address(token), 11, 10)
        );
    }

    // ------------------------------------------------------------------ revoke and re-grant

    function test_Revoke_ByAccount() public {
        _grant(account, _targets(target), CAP);
        vm.expectEmit(true, true, true, true, address(validator));
        emit ISessionKeyValidator.SessionRevoked(account, agent, account);
        vm.prank(account);
        validator.revokeSession(account, agent);
        ISessionKeyValidator.Session memory s = _session();
        assertFalse(s.active);
        assertEq(s.epoch, 1);
        assertFalse(validator.isSessionActive(account, agent));
        assertFalse(validator.isTargetAllowed(account, agent, target));
        assertEq(validator.remainingBudget(account, agent), 0);
    }

    function test_Revoke_ByRevoker() public {
        _grantAs(account, _rich());
        vm.expectEmit(true, true, true, true, address(validator));
        emit ISessionKeyValidator.SessionRevoked(account, agent, revoker);
        vm.prank(revoker);
        validator.revokeSession(account, agent);
        assertFalse(_session().active);
        assertFalse(validator.isSelectorAllowed(account, agent, address(rec), HIT));
        assertFalse(validator.isTargetAllowed(account, agent, address(token)));
    }

    function test_Revoke_RevertsForOthers() public {
        _grant(account, _targets(target), CAP);
        vm.prank(other);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.NotAuthorizedToRevoke.selector, other));
        validator.revokeSession(account, agent);
        // The revoker of A's session has no say over B's session of the same key.
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        g.revoker = address(0);
        _grantAs(accountB, g);
        vm.prank(revoker);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.NotAuthorizedToRevoke.selector, revoker));
        validator.revokeSession(accountB, agent);
    }

    function test_Revoke_ZeroRevokerIsNobody() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        g.revoker = address(0);
        _grantAs(account, g);
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
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0.4 ether, ""));
        _validate(op, hash);
        vm.prank(revoker);
        validator.revokeSession(account, agent);

        // The revoker cannot bring the session back: grantSession only ever acts for msg.sender.
        _grantAs(revoker, _g(_targets(target), CAP));
        assertFalse(_session().active);
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.SessionIsRevoked.selector, account, agent)
        );

        // The account can, with a new allowlist that does not inherit `target`.
        _grant(account, _targets(other), CAP);
        ISessionKeyValidator.Session memory s = _session();
        assertTrue(s.active);
        assertEq(s.epoch, 2);
        assertEq(s.spent, 0, "spent restarts with the grant");
        assertEq(s.gasSpent, 0, "gasSpent restarts with the grant");
        assertEq(s.opsUsed, 0, "opsUsed restarts with the grant");
        assertFalse(validator.isTargetAllowed(account, agent, target), "old target inherited");
        assertTrue(validator.isTargetAllowed(account, agent, other));
        _expectValidateRevert(op, hash, abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, target));
    }

    function test_Regrant_WhileActive_ReplacesGrant() public {
        _grant(account, _targets(target), CAP);
        ISessionKeyValidator.SessionGrant memory g = _grantOf(agent, _targets(other), 5, 7);
        g.maxOps = 3;
        vm.expectEmit(true, true, false, true, address(validator));
        emit ISessionKeyValidator.SessionGranted(account, agent, 2, g);
        _grantAs(account, g);
        ISessionKeyValidator.Session memory s = _session();
        assertEq(s.epoch, 2);
        assertEq(s.spendCap, 5);
        assertEq(s.gasCap, 7);
        assertEq(s.maxOps, 3);
        assertEq(s.revoker, address(0));
        assertFalse(validator.isTargetAllowed(account, agent, target));
    }

    /// A re-grant of the same grant restarts every counter: spent, gasSpent, opsUsed and tokenSpent.
    function test_Regrant_ResetsCounters() public {
        ISessionKeyValidator.SessionGrant memory g = _rich();
        g.maxOps = 2;
        _grantAs(account, g);
        Call[] memory calls = new Call[](2);
        calls[0] = Call(target, 0.3 ether, "");
        calls[1] = Call(address(token), 0, _tokenCall(TRANSFER, recipient, 40e18));
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_executeBatch(calls));
        _validate(op, hash);
        _validate(op, hash);
        _expectValidateRevert(op, hash, abi.encodeWithSelector(ISessionKeyValidator.UsageLimitReached.selector, 2));
        ISessionKeyValidator.Session memory s = _session();
        assertEq(s.spent, 0.6 ether);
        assertEq(s.gasSpent, 2 * MAX_COST);
        assertEq(s.opsUsed, 2);
        assertEq(_tokenSpent(), 80e18);

        _grantAs(account, g);
        s = _session();
        assertEq(s.epoch, 2);
        assertEq(s.spent, 0);
        assertEq(s.gasSpent, 0);
        assertEq(s.opsUsed, 0);
        assertEq(_tokenSpent(), 0);
        assertEq(validator.remainingBudget(account, agent), CAP);
        // The full allowances are back: two more operations of 40 tokens each.
        _validate(op, hash);
        _validate(op, hash);
        assertEq(_tokenSpent(), 80e18);
    }

    /// A re-grant never inherits selectors, every-function permissions or token caps of the previous one.
    function test_Regrant_DropsOldPermissions() public {
        ISessionKeyValidator.SessionGrant memory g = _rich();
        _addTarget(g, other, true, _noSels());
        _grantAs(account, g);

        ISessionKeyValidator.SessionGrant memory g2 = _g(_noTargets(), CAP);
        _addTarget(g2, address(rec), false, _sels(OTHER));
        _addTarget(g2, other, false, _noSels());
        _grantAs(account, g2);

        assertFalse(validator.isSelectorAllowed(account, agent, address(rec), HIT), "old selector inherited");
        assertTrue(validator.isSelectorAllowed(account, agent, address(rec), OTHER));
        assertFalse(validator.getPermission(account, agent, other).anySelector, "old anySelector inherited");
        ISessionKeyValidator.Permission memory p = validator.getPermission(account, agent, address(token));
        assertFalse(p.allowed || p.isToken, "old token inherited");
        assertEq(p.tokenCap, 0);

        (PackedUserOperation memory op, bytes32 hash) =
            _agentOp(_execute(address(rec), 0, abi.encodeCall(Recorder.hit, (1))));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.SelectorNotAllowed.selector, address(rec), HIT)
        );
        (op, hash) = _agentOp(_execute(other, 0, hex"12345678"));
        _expectValidateRevert(
            op,
            hash,
            abi.encodeWithSelector(ISessionKeyValidator.SelectorNotAllowed.selector, other, bytes4(0x12345678))
        );
        (op, hash) = _agentOp(_execute(address(token), 0, _tokenCall(TRANSFER, recipient, 1)));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, address(token))
        );
        // A new grant of the old token starts its count afresh, with the new cap.
        ISessionKeyValidator.SessionGrant memory g3 = _g(_noTargets(), CAP);
        _addToken(g3, address(token), 5);
        _grantAs(account, g3);
        assertEq(validator.getPermission(account, agent, address(token)).tokenCap, 5);
    }

    // ------------------------------------------------------------------ validation: success paths

    function test_Validate_Execute_ReturnsWindowAndRecordsSpend() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0.25 ether, ""));
        vm.expectEmit(true, true, false, true, address(validator));
        emit ISessionKeyValidator.SessionSpent(account, agent, 0.25 ether, 0.25 ether);
        assertEq(_validate(op, hash), _window(false));
        ISessionKeyValidator.Session memory s = _session();
        assertEq(s.spent, 0.25 ether);
        assertEq(s.gasSpent, MAX_COST);
        assertEq(s.opsUsed, 1);
        assertEq(validator.remainingBudget(account, agent), 0.75 ether);

        vm.expectEmit(true, true, false, true, address(validator));
        emit ISessionKeyValidator.SessionSpent(account, agent, 0.25 ether, 0.5 ether);
        _validate(op, hash);
        assertEq(_session().opsUsed, 2);
    }

    function test_Validate_Batch_SumsValues() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        _addTarget(g, other, true, _noSels());
        _grantAs(account, g);
        Call[] memory calls = new Call[](3);
        calls[0] = Call(target, 0.1 ether, "");
        calls[1] = Call(other, 0.2 ether, hex"1234");
        calls[2] = Call(target, 0, "");
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_executeBatch(calls));
        vm.expectEmit(true, true, false, true, address(validator));
        emit ISessionKeyValidator.SessionSpent(account, agent, 0.3 ether, 0.3 ether);
        assertEq(_validate(op, hash), _window(false));
        assertEq(_session().spent, 0.3 ether);
        assertEq(_session().gasSpent, MAX_COST, "one charge per operation, not per call");
    }

    function test_Validate_ZeroValue_NoSpendEvent() public {
        _grantAs(account, _rich());
        (PackedUserOperation memory op, bytes32 hash) =
            _agentOp(_execute(address(rec), 0, abi.encodeCall(Recorder.hit, (1))));
        vm.recordLogs();
        assertEq(_validate(op, hash), _window(false));
        assertEq(vm.getRecordedLogs().length, 0);
        assertEq(_session().spent, 0);
    }

    function test_Validate_ExactCapAllowed() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, CAP, ""));
        assertEq(_validate(op, hash), _window(false));
        assertEq(validator.remainingBudget(account, agent), 0);
    }

    function test_Validate_EmptyBatch() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_executeBatch(new Call[](0)));
        assertEq(_validate(op, hash), _window(false));
        assertEq(_session().opsUsed, 1, "an empty batch still counts as an operation");
        assertEq(_session().gasSpent, MAX_COST, "and still pays its gas");
    }

    /// Counters share one slot: a zero-value, non-token operation writes exactly one storage slot of
    /// the validator, the session's (gasCap, gasSpent, maxOps, opsUsed) word.
    function test_Validate_WritesCountersInOneSlot() public {
        _grant(account, _targets(target), CAP);
        bytes32 base = keccak256(abi.encode(account, keccak256(abi.encode(agent, uint256(0)))));
        bytes32 counters = bytes32(uint256(base) + 2);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
        vm.record();
        _validate(op, hash);
        (, bytes32[] memory writes) = vm.accesses(address(validator));
        assertGt(writes.length, 0);
        for (uint256 i; i < writes.length; ++i) {
            assertEq(writes[i], counters, "validation wrote another slot");
        }
        uint256 word = uint256(vm.load(address(validator), counters));
        assertEq(uint96(word), GAS_CAP, "gasCap");
        assertEq(uint96(word >> 96), MAX_COST, "gasSpent");
        assertEq(uint32(word >> 192), 0, "maxOps");
        assertEq(uint32(word >> 224), 1, "opsUsed");
    }

    // ------------------------------------------------------------------ lane

    function test_Lane_OwnerLaneRefused() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 1, ""));
        uint192 lane = uint192(uint160(agent));
        op.nonce = 0;
        _resign(op, hash, agentKey);
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.NonceLaneNotAllowed.selector, uint192(0), lane)
        );
        // Any sequence number on the owner's lane.
        op.nonce = 5;
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.NonceLaneNotAllowed.selector, uint192(0), lane)
        );
    }

    function test_Lane_OtherAgentsLaneRefused() public {
        _grant(account, _targets(target), CAP);
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        g.key = agent2;
        _grantAs(account, g);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 1, ""));
        op.nonce = _lane(agent2, 3);
        _expectValidateRevert(
            op,
            hash,
            abi.encodeWithSelector(
                ISessionKeyValidator.NonceLaneNotAllowed.selector, uint192(uint160(agent2)), uint192(uint160(agent))
            )
        );
        // The other agent on its own lane is fine, and the agent on its own as well.
        (PackedUserOperation memory op2, bytes32 hash2) = _signedOp(account, _execute(target, 1, ""), agent2Key);
        assertEq(op2.nonce, _lane(agent2, 0));
        assertEq(_validate(op2, hash2), _window(false));
        op.nonce = _lane(agent, 3);
        assertEq(_validate(op, hash), _window(false));
    }

    /// The whole 192-bit nonce key counts: a key that equals the lane in its low 160 bits is refused.
    function test_Lane_UpperBitsOfTheNonceKeyCount() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 1, ""));
        uint192 lane = uint192(uint160(agent));
        uint192 dirty = lane | (uint192(1) << 160);
        op.nonce = uint256(dirty) << 64;
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.NonceLaneNotAllowed.selector, dirty, lane)
        );
    }

    function testFuzz_Lane(uint256 nonce) public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 1, ""));
        op.nonce = nonce;
        uint192 lane = uint192(uint160(agent));
        // A session without a period: the nonce key must be exactly the lane (period index 0).
        if (uint192(nonce >> 64) == lane) {
            assertEq(nonce >> 224, 0);
            assertEq(_validate(op, hash), _window(false));
            assertEq(_session().opsUsed, 1);
        } else {
            _expectValidateRevert(
                op,
                hash,
                abi.encodeWithSelector(ISessionKeyValidator.NonceLaneNotAllowed.selector, uint192(nonce >> 64), lane)
            );
        }
    }

    // ------------------------------------------------------------------ paymaster

    function test_Paymaster_NoneGranted_AnyPaymasterRefused() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 1, ""));
        op.paymasterAndData = _paymasterAndData(paymaster);
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.PaymasterNotAllowed.selector, paymaster)
        );
        // The zero address is not "no paymaster".
        op.paymasterAndData = _paymasterAndData(address(0));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.PaymasterNotAllowed.selector, address(0))
        );
        // Shorter than an address.
        op.paymasterAndData = hex"0102030405";
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.PaymasterNotAllowed.selector, address(0))
        );
    }

    function test_Paymaster_OnlyTheGrantedOne() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        g.paymaster = paymaster;
        _grantAs(account, g);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 1, ""));
        op.paymasterAndData = _paymasterAndData(other);
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.PaymasterNotAllowed.selector, other)
        );
        // A prefix of the granted paymaster is not the granted paymaster.
        op.paymasterAndData = abi.encodePacked(bytes19(bytes20(paymaster)));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.PaymasterNotAllowed.selector, address(0))
        );
    }

    /// With the granted paymaster nothing is charged to the gas budget, however large the gas fields.
    function test_Paymaster_GrantedOnePays_NoGasCharged() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        g.paymaster = paymaster;
        g.gasCap = 0;
        _grantAs(account, g);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 1, ""));
        uint256 max = type(uint120).max;
        _setGas(op, max, max, max, max, max);
        op.paymasterAndData = _paymasterAndData(paymaster);
        assertEq(_validate(op, hash), _window(false));
        // The paymaster address alone (20 bytes) is enough for the validator.
        op.paymasterAndData = abi.encodePacked(paymaster);
        assertEq(_validate(op, hash), _window(false));
        ISessionKeyValidator.Session memory s = _session();
        assertEq(s.gasSpent, 0);
        assertEq(s.opsUsed, 2);
        assertEq(s.spent, 2);
    }

    /// A session with a paymaster may still pay its own gas (within its gas budget).
    function test_Paymaster_GrantedButUnused_Charges() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        g.paymaster = paymaster;
        g.gasCap = uint96(MAX_COST);
        _grantAs(account, g);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 1, ""));
        assertEq(_validate(op, hash), _window(false));
        assertEq(_session().gasSpent, MAX_COST);
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.GasBudgetExceeded.selector, MAX_COST, 0)
        );
    }

    // ------------------------------------------------------------------ gas

    function test_Gas_ChargesTheMaximumCost() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
        _setGas(op, 100_000, 200_000, 300_000, 5 gwei, 7 gwei);
        _validate(op, hash);
        assertEq(_session().gasSpent, 600_000 * 7 gwei, "(pvg + vgl + cgl) x maxFeePerGas");
        // The priority fee plays no part.
        _setGas(op, 100_000, 200_000, 300_000, 0, 7 gwei);
        _validate(op, hash);
        assertEq(_session().gasSpent, 2 * 600_000 * 7 gwei);
        // A zero max fee costs nothing.
        _setGas(op, 100_000, 200_000, 300_000, 9 gwei, 0);
        _validate(op, hash);
        assertEq(_session().gasSpent, 2 * 600_000 * 7 gwei);
        assertEq(_session().opsUsed, 3);
    }

    function test_Gas_BudgetExhausted() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        g.gasCap = uint96(2 * MAX_COST);
        _grantAs(account, g);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
        _validate(op, hash);
        _validate(op, hash);
        assertEq(_session().gasSpent, 2 * MAX_COST, "exactly the budget");
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.GasBudgetExceeded.selector, MAX_COST, 0)
        );
        // A free operation still fits.
        _setGas(op, 60_000, 1_500_000, 300_000, 0, 0);
        assertEq(_validate(op, hash), _window(false));
    }

    function test_Gas_OneWeiOverTheBudget() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        g.gasCap = uint96(MAX_COST - 1);
        _grantAs(account, g);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.GasBudgetExceeded.selector, MAX_COST, MAX_COST - 1)
        );
    }

    /// The gas-drain shape: a huge preVerificationGas and fee, a plain zero-value call.
    function test_Gas_DrainAttemptRefused() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), 0.01 ether);
        g.gasCap = 0.01 ether;
        _grantAs(account, g);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
        _setGas(op, 8_000_000, 100_000, 100_000, 1000 gwei, 1000 gwei);
        _expectValidateRevert(
            op,
            hash,
            abi.encodeWithSelector(ISessionKeyValidator.GasBudgetExceeded.selector, 8_200_000 * 1000 gwei, 0.01 ether)
        );
    }

    /// Values the EntryPoint would refuse (AA94) overflow the charge and revert here as well.
    function test_Gas_OverflowReverts() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
        _setGas(op, type(uint256).max, 1, 0, 0, 1);
        _expectValidateRevert(op, hash, stdError.arithmeticError);
        uint256 max = type(uint128).max;
        _setGas(op, max, max, max, 0, max);
        _expectValidateRevert(op, hash, stdError.arithmeticError);
    }

    /// Any sequence of gas fields: each op is charged its maximum cost or refused; gasSpent is the sum
    /// of the accepted charges and never exceeds the cap.
    function testFuzz_GasSpentNeverExceedsCap(uint96 gasCap, uint64[6] memory pvg, uint32[6] memory fee) public {
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        g.gasCap = gasCap;
        _grantAs(account, g);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
        uint256 expected;
        for (uint256 i; i < pvg.length; ++i) {
            _setGas(op, pvg[i], 100_000, 50_000, 1, fee[i]);
            uint256 cost = (uint256(pvg[i]) + 150_000) * fee[i];
            assertEq(_maxCost(op), cost);
            if (cost <= gasCap - expected) {
                assertEq(_validate(op, hash), _window(false));
                expected += cost;
            } else {
                _expectValidateRevert(
                    op,
                    hash,
                    abi.encodeWithSelector(ISessionKeyValidator.GasBudgetExceeded.selector, cost, gasCap - expected)
                );
            }
            assertEq(_session().gasSpent, expected);
            assertLe(_session().gasSpent, gasCap);
        }
    }

    // ------------------------------------------------------------------ usage

    function test_Usage_LimitReached() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        g.maxOps = 2;
        _grantAs(account, g);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
        _validate(op, hash);
        assertEq(_session().opsUsed, 1);
        _validate(op, hash);
        assertEq(_session().opsUsed, 2);
        _expectValidateRevert(op, hash, abi.encodeWithSelector(ISessionKeyValidator.UsageLimitReached.selector, 2));
        // Operations the paymaster pays count as well.
        g.paymaster = paymaster;
        g.maxOps = 1;
        _grantAs(account, g);
        op.paymasterAndData = _paymasterAndData(paymaster);
        _validate(op, hash);
        _expectValidateRevert(op, hash, abi.encodeWithSelector(ISessionKeyValidator.UsageLimitReached.selector, 1));
    }

    function test_Usage_ZeroIsUnlimited() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
        _setGas(op, 1, 1, 1, 0, 0);
        for (uint256 i; i < 40; ++i) {
            _validate(op, hash);
        }
        assertEq(_session().opsUsed, 40);
        assertEq(_session().maxOps, 0);
    }

    // ------------------------------------------------------------------ calls and selectors

    function test_Selector_ListedAllowed_UnlistedRefused() public {
        _grantAs(account, _rich());
        (PackedUserOperation memory op, bytes32 hash) =
            _agentOp(_execute(address(rec), 0, abi.encodeCall(Recorder.hit, (1))));
        assertEq(_validate(op, hash), _window(false));
        (op, hash) = _agentOp(_execute(address(rec), 0, abi.encodeCall(Recorder.other, ())));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.SelectorNotAllowed.selector, address(rec), OTHER)
        );
        // The listed selector is listed for `rec` only: on a plain target any data is refused.
        (op, hash) = _agentOp(_execute(target, 0, abi.encodeCall(Recorder.hit, (1))));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.SelectorNotAllowed.selector, target, HIT)
        );
        // In a batch, the refused call is named.
        Call[] memory calls = new Call[](2);
        calls[0] = Call(address(rec), 0, abi.encodeCall(Recorder.hit, (1)));
        calls[1] = Call(address(rec), 0, abi.encodeCall(Recorder.other, ()));
        (op, hash) = _agentOp(_executeBatch(calls));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.SelectorNotAllowed.selector, address(rec), OTHER)
        );
    }

    /// One to three bytes of data are not a function call: refused with the zero-padded bytes, even
    /// when those are a listed selector (0x123456 is not 0x12345600).
    function test_Selector_ShortDataRefused() public {
        bytes4 padded00 = 0x12345600;
        ISessionKeyValidator.SessionGrant memory g = _g(_noTargets(), CAP);
        _addTarget(g, address(rec), false, _sels(HIT, padded00));
        _addToken(g, address(token), TOKEN_CAP);
        _grantAs(account, g);
        bytes[4] memory datas = [bytes(hex"0c"), bytes(hex"0c11"), bytes(hex"0c11de"), bytes(hex"123456")];
        bytes4[4] memory padded = [bytes4(0x0c000000), bytes4(0x0c110000), bytes4(0x0c11de00), padded00];
        for (uint256 i; i < datas.length; ++i) {
            (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(address(rec), 0, datas[i]));
            _expectValidateRevert(
                op,
                hash,
                abi.encodeWithSelector(ISessionKeyValidator.SelectorNotAllowed.selector, address(rec), padded[i])
            );
            (op, hash) = _agentOp(_execute(address(token), 0, datas[i]));
            _expectValidateRevert(
                op,
                hash,
                abi.encodeWithSelector(ISessionKeyValidator.SelectorNotAllowed.selector, address(token), padded[i])
            );
        }
        // The four bytes themselves are allowed.
        (PackedUserOperation memory op4, bytes32 hash4) = _agentOp(_execute(address(rec), 0, hex"12345600"));
        assertEq(_validate(op4, hash4), _window(false));
        // Even the first bytes of a listed selector are refused.
        (op4, hash4) = _agentOp(_execute(address(rec), 0, abi.encodePacked(bytes3(HIT))));
        _expectValidateRevert(
            op4,
            hash4,
            abi.encodeWithSelector(ISessionKeyValidator.SelectorNotAllowed.selector, address(rec), bytes4(bytes3(HIT)))
        );
    }

    function test_Selector_AnySelectorAllowsAnyData() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_noTargets(), CAP);
        _addTarget(g, address(rec), true, _noSels());
        _grantAs(account, g);
        bytes[4] memory datas = [bytes(hex"01"), bytes(hex"deadbeef"), abi.encodeCall(Recorder.other, ()), bytes(hex"")];
        for (uint256 i; i < datas.length; ++i) {
            (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(address(rec), 0, datas[i]));
            assertEq(_validate(op, hash), _window(false));
        }
        assertEq(_session().opsUsed, 4);
    }

    /// Empty data is a plain transfer, allowed on any listed target: plain, with selectors, a token.
    function test_Selector_PlainTransferOnAnyListedTarget() public {
        _grantAs(account, _rich());
        Call[] memory calls = new Call[](3);
        calls[0] = Call(target, 1, "");
        calls[1] = Call(address(rec), 2, "");
        calls[2] = Call(address(token), 3, "");
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_executeBatch(calls));
        assertEq(_validate(op, hash), _window(false));
        assertEq(_session().spent, 6);
        assertEq(_tokenSpent(), 0);
    }

    // ------------------------------------------------------------------ tokens

    function test_Token_TransferCountedWithEvent() public {
        _grantAs(account, _rich());
        (PackedUserOperation memory op, bytes32 hash) =
            _agentOp(_execute(address(token), 0, _tokenCall(TRANSFER, recipient, 30e18)));
        vm.expectEmit(true, true, true, true, address(validator));
        emit ISessionKeyValidator.TokenSpent(account, agent, address(token), 30e18, 30e18);
        assertEq(_validate(op, hash), _window(false));
        vm.expectEmit(true, true, true, true, address(validator));
        emit ISessionKeyValidator.TokenSpent(account, agent, address(token), 30e18, 60e18);
        _validate(op, hash);
        assertEq(_tokenSpent(), 60e18);
        assertEq(_session().spent, 0, "a token amount is not native value");
    }

    function test_Token_EveryCountedFunctionCounts() public {
        _grantAs(account, _rich());
        bytes[4] memory datas = [
            _tokenCall(TRANSFER, recipient, 1e18),
            _tokenCall(APPROVE, recipient, 2e18),
            _tokenCall(INCREASE_ALLOWANCE, recipient, 3e18),
            abi.encodeWithSelector(TRANSFER_FROM, account, recipient, 4e18)
        ];
        uint256 total;
        for (uint256 i; i < datas.length; ++i) {
            (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(address(token), 0, datas[i]));
            total += (i + 1) * 1e18;
            vm.expectEmit(true, true, true, true, address(validator));
            emit ISessionKeyValidator.TokenSpent(account, agent, address(token), (i + 1) * 1e18, total);
            _validate(op, hash);
            assertEq(_tokenSpent(), total);
        }
    }

    /// transferFrom of someone else's tokens (moving what they approved to the account) is not counted;
    /// it needs its selector listed.
    function test_Token_TransferFromOthersNeedsSelector() public {
        _grantAs(account, _rich());
        bytes memory data = abi.encodeWithSelector(TRANSFER_FROM, other, account, 5e18);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(address(token), 0, data));
        _expectValidateRevert(
            op,
            hash,
            abi.encodeWithSelector(ISessionKeyValidator.SelectorNotAllowed.selector, address(token), TRANSFER_FROM)
        );
        ISessionKeyValidator.SessionGrant memory g = _rich();
        _addTarget(g, address(token), false, _sels(TRANSFER_FROM));
        _grantAs(account, g);
        vm.recordLogs();
        assertEq(_validate(op, hash), _window(false));
        assertEq(vm.getRecordedLogs().length, 0, "no TokenSpent");
        assertEq(_tokenSpent(), 0);
        // With `from` = the account it is counted, listed or not.
        (op, hash) = _agentOp(_execute(address(token), 0, abi.encodeWithSelector(TRANSFER_FROM, account, other, 5e18)));
        _validate(op, hash);
        assertEq(_tokenSpent(), 5e18);
    }

    function test_Token_OtherFunctionsNeedSelector() public {
        _grantAs(account, _rich());
        (PackedUserOperation memory op, bytes32 hash) =
            _agentOp(_execute(address(token), 0, abi.encodeCall(TestToken.mint, (account, 1))));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.SelectorNotAllowed.selector, address(token), MINT)
        );
    }

    function test_Token_CapExceeded() public {
        _grantAs(account, _rich());
        (PackedUserOperation memory op, bytes32 hash) =
            _agentOp(_execute(address(token), 0, _tokenCall(TRANSFER, recipient, TOKEN_CAP + 1)));
        _expectValidateRevert(
            op,
            hash,
            abi.encodeWithSelector(
                ISessionKeyValidator.TokenCapExceeded.selector, address(token), TOKEN_CAP + 1, TOKEN_CAP
            )
        );
        // Exactly the cap is fine; then nothing more, not even an approval of 1.
        (op, hash) = _agentOp(_execute(address(token), 0, _tokenCall(APPROVE, recipient, TOKEN_CAP)));
        _validate(op, hash);
        (op, hash) = _agentOp(_execute(address(token), 0, _tokenCall(APPROVE, recipient, 1)));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.TokenCapExceeded.selector, address(token), 1, 0)
        );
        // A zero amount still passes.
        (op, hash) = _agentOp(_execute(address(token), 0, _tokenCall(APPROVE, recipient, 0)));
        assertEq(_validate(op, hash), _window(false));
    }

    function test_Token_CapExceeded_Batch() public {
        _grantAs(account, _rich());
        Call[] memory calls = new Call[](3);
        calls[0] = Call(address(token), 0, _tokenCall(TRANSFER, recipient, 50e18));
        calls[1] = Call(address(token), 0, _tokenCall(APPROVE, other, 40e18));
        calls[2] = Call(address(token), 0, abi.encodeWithSelector(TRANSFER_FROM, account, other, 20e18));
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_executeBatch(calls));
        _expectValidateRevert(
            op,
            hash,
            abi.encodeWithSelector(ISessionKeyValidator.TokenCapExceeded.selector, address(token), 20e18, 10e18)
        );
        assertEq(_tokenSpent(), 0);
    }

    function test_Token_HugeAmountDoesNotOverflow() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_noTargets(), CAP);
        _addToken(g, address(token), type(uint112).max);
        _grantAs(account, g);
        (PackedUserOperation memory op, bytes32 hash) =
            _agentOp(_execute(address(token), 0, _tokenCall(TRANSFER, recipient, type(uint112).max)));
        _validate(op, hash);
        assertEq(_tokenSpent(), type(uint112).max);
        (op, hash) = _agentOp(_execute(address(token), 0, _tokenCall(TRANSFER, recipient, type(uint256).max)));
        _expectValidateRevert(
            op,
            hash,
            abi.encodeWithSelector(ISessionKeyValidator.TokenCapExceeded.selector, address(token), type(uint256).max, 0)
        );
    }

    /// Token caps are per account (and per key): B's session of the same token counts on its own.
    function test_Token_CapsArePerAccount() public {
        _grantAs(account, _rich());
        _grantAs(accountB, _rich());
        (PackedUserOperation memory op, bytes32 hash) =
            _agentOp(_execute(address(token), 0, _tokenCall(TRANSFER, recipient, TOKEN_CAP)));
        _validate(op, hash);
        (op, hash) =
            _signedOp(accountB, _execute(address(token), 0, _tokenCall(TRANSFER, recipient, TOKEN_CAP)), agentKey);
        assertEq(_validate(op, hash), _window(false));
        assertEq(validator.getPermission(accountB, agent, address(token)).tokenSpent, TOKEN_CAP);
        assertEq(validator.getPermission(account, agent2, address(token)).tokenCap, 0, "per key");
    }

    function test_Token_MalformedCalls() public {
        _grantAs(account, _rich());
        bytes4[3] memory twoArgs = [TRANSFER, APPROVE, INCREASE_ALLOWANCE];
        for (uint256 i; i < twoArgs.length; ++i) {
            bytes memory full = _tokenCall(twoArgs[i], recipient, 1);
            bytes memory short = new bytes(67);
            for (uint256 j; j < 67; ++j) {
                short[j] = full[j];
            }
            (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(address(token), 0, short));
            _expectValidateRevert(
                op,
                hash,
                abi.encodeWithSelector(ISessionKeyValidator.MalformedTokenCall.selector, address(token), twoArgs[i])
            );
            // The bare selector.
            (op, hash) = _agentOp(_execute(address(token), 0, abi.encodePacked(twoArgs[i])));
            _expectValidateRevert(
                op,
                hash,
                abi.encodeWithSelector(ISessionKeyValidator.MalformedTokenCall.selector, address(token), twoArgs[i])
            );
        }
        bytes memory malformed =
            abi.encodeWithSelector(ISessionKeyValidator.MalformedTokenCall.selector, address(token), TRANSFER_FROM);
        // transferFrom one byte short.
        bytes memory tf = abi.encodeWithSelector(TRANSFER_FROM, account, recipient, 1);
        bytes memory tfShort = new bytes(99);
        for (uint256 j; j < 99; ++j) {
            tfShort[j] = tf[j];
        }
        (PackedUserOperation memory op2, bytes32 hash2) = _agentOp(_execute(address(token), 0, tfShort));
        _expectValidateRevert(op2, hash2, malformed);
        // A `from` with dirty upper bits, whether its low 160 bits are the account or not.
        (op2, hash2) = _agentOp(
            _execute(
                address(token),
                0,
                abi.encodeWithSelector(TRANSFER_FROM, (uint256(1) << 160) | uint160(account), recipient, 1)
            )
        );
        _expectValidateRevert(op2, hash2, malformed);
        (op2, hash2) = _agentOp(
            _execute(
                address(token),
                0,
                abi.encodeWithSelector(TRANSFER_FROM, (uint256(1) << 255) | uint160(other), recipient, 1)
            )
        );
        _expectValidateRevert(op2, hash2, malformed);
    }

    /// Extra bytes after the arguments change nothing: the encoded amount is counted.
    function test_Token_TrailingBytesIgnored() public {
        _grantAs(account, _rich());
        (PackedUserOperation memory op, bytes32 hash) =
            _agentOp(_execute(address(token), 0, abi.encodePacked(_tokenCall(TRANSFER, recipient, 7), uint256(99e18))));
        _validate(op, hash);
        assertEq(_tokenSpent(), 7);
    }

    /// Native value on a token call counts against the spend cap as well.
    function test_Token_ValueAndAmountBothCounted() public {
        _grantAs(account, _rich());
        (PackedUserOperation memory op, bytes32 hash) =
            _agentOp(_execute(address(token), 0.5 ether, _tokenCall(TRANSFER, recipient, 7)));
        _validate(op, hash);
        assertEq(_tokenSpent(), 7);
        assertEq(_session().spent, 0.5 ether);
    }

    /// Any sequence of counted token calls: each is counted or refused; tokenSpent never exceeds the cap.
    function testFuzz_TokenSpentNeverExceedsCap(uint112 cap, uint128[8] memory amounts, uint8[8] memory kinds) public {
        cap = uint112(_bound(cap, 1, type(uint112).max));
        ISessionKeyValidator.SessionGrant memory g = _g(_noTargets(), CAP);
        _addToken(g, address(token), cap);
        _grantAs(account, g);
        uint256 expected;
        for (uint256 i; i < amounts.length; ++i) {
            expected += _countedStep(cap - expected, amounts[i] % (uint256(cap) / 2 + 2), kinds[i]);
            assertEq(_tokenSpent(), expected);
            assertLe(_tokenSpent(), cap);
        }
    }

    /// @dev One counted token call of `amount` (kind: transfer, approve, increaseAllowance,
    /// transferFrom(account, …)): checks it is counted when it fits in `remaining`, refused otherwise;
    /// returns what it counted.
    function _countedStep(uint256 remaining, uint256 amount, uint8 kind) internal returns (uint256) {
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(address(token), 0, _counted(kind, amount)));
        if (amount <= remaining) {
            assertEq(_validate(op, hash), _window(false));
            return amount;
        }
        _expectValidateRevert(
            op,
            hash,
            abi.encodeWithSelector(ISessionKeyValidator.TokenCapExceeded.selector, address(token), amount, remaining)
        );
        return 0;
    }

    function _counted(uint8 kind, uint256 amount) internal view returns (bytes memory) {
        kind %= 4;
        if (kind == 0) return _tokenCall(TRANSFER, recipient, amount);
        if (kind == 1) return _tokenCall(APPROVE, recipient, amount);
        if (kind == 2) return _tokenCall(INCREASE_ALLOWANCE, recipient, amount);
        return abi.encodeWithSelector(TRANSFER_FROM, account, recipient, amount);
    }

    // ------------------------------------------------------------------ readSession

    function test_ReadSession() public {
        _grantAs(account, _rich());
        (PackedUserOperation memory op, bytes32 hash) =
            _agentOp(_execute(address(token), 0, _tokenCall(TRANSFER, recipient, 3e18)));
        _validate(op, hash);

        address[] memory ts = new address[](5);
        bytes4[] memory ss = new bytes4[](5);
        (ts[0], ss[0]) = (target, bytes4(0));
        (ts[1], ss[1]) = (address(rec), HIT);
        (ts[2], ss[2]) = (address(rec), OTHER);
        (ts[3], ss[3]) = (address(token), TRANSFER);
        (ts[4], ss[4]) = (other, HIT);
        (
            ISessionKeyValidator.Session memory s,
            ISessionKeyValidator.Permission[] memory ps,
            bool[] memory allowed,
            uint256 periodIndex,
            uint256 periodSpent
        ) = validator.readSession(account, agent, ts, ss, AFTER + 5000);
        assertEq(s.epoch, 1);
        assertEq(s.gasSpent, MAX_COST);
        assertEq(s.opsUsed, 1);
        assertTrue(s.active);
        assertEq(ps.length, 5);
        assertEq(allowed.length, 5);
        assertTrue(ps[0].allowed && !ps[0].isToken && !ps[0].anySelector);
        assertFalse(allowed[0]);
        assertTrue(ps[1].allowed);
        assertTrue(allowed[1]);
        assertFalse(allowed[2]);
        assertTrue(ps[3].isToken);
        assertEq(ps[3].tokenCap, TOKEN_CAP);
        assertEq(ps[3].tokenSpent, 3e18);
        assertFalse(allowed[3], "counted functions are not listed selectors");
        assertFalse(ps[4].allowed);
        assertFalse(allowed[4]);
        assertEq(periodIndex, 0, "no period: index 0 whatever the time");
        assertEq(periodSpent, 0);
    }

    function test_ReadSession_LengthMismatch() public {
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.LengthMismatch.selector, 2, 1));
        validator.readSession(account, agent, _targets(target, other), _sels(HIT), 0);
    }

    function test_ReadSession_UnknownRevokedAndRegranted() public {
        (ISessionKeyValidator.Session memory s, ISessionKeyValidator.Permission[] memory ps, bool[] memory allowed,,) =
            validator.readSession(account, agent, _targets(address(rec)), _sels(HIT), AFTER);
        assertEq(s.epoch, 0);
        assertFalse(s.active);
        assertFalse(ps[0].allowed);
        assertFalse(allowed[0]);

        _grantAs(account, _rich());
        vm.prank(account);
        validator.revokeSession(account, agent);
        // Revocation is reported in the session; the caller reads `active`.
        (s, ps, allowed,,) = validator.readSession(account, agent, _targets(address(rec)), _sels(HIT), AFTER);
        assertFalse(s.active);
        assertEq(s.epoch, 1);
        assertTrue(allowed[0]);

        _grant(account, _targets(target), CAP);
        (s, ps, allowed,,) = validator.readSession(account, agent, _targets(address(rec)), _sels(HIT), AFTER);
        assertTrue(s.active);
        assertEq(s.epoch, 2);
        assertFalse(ps[0].allowed, "old epoch");
        assertFalse(allowed[0], "old epoch");
    }

    // ------------------------------------------------------------------ validation: signature failures

    function test_Validate_WrongSigner_ReturnsSigFailedWithWindow() public {
        _grantAs(account, _rich());
        (, uint256 otherKey) = makeAddrAndKey("other-signer");
        Call[] memory calls = new Call[](2);
        calls[0] = Call(target, 0.5 ether, "");
        calls[1] = Call(address(token), 0, _tokenCall(TRANSFER, recipient, 9));
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(account, _executeBatch(calls), otherKey);
        // Name the granted key (and its lane) but sign with another one.
        op.signature = _withKey(op.signature, agent);
        op.nonce = _lane(agent, 0);
        assertEq(_validate(op, hash), _window(true));
        // The policy ran all the same (estimation with a stub costs what the real op costs).
        ISessionKeyValidator.Session memory s = _session();
        assertEq(s.spent, 0.5 ether);
        assertEq(s.gasSpent, MAX_COST);
        assertEq(s.opsUsed, 1);
        assertEq(_tokenSpent(), 9);
    }

    function test_Validate_StubSignature_ReturnsSigFailed() public {
        _grant(account, _targets(target), CAP);
        PackedUserOperation memory op = _op(account, _lane(agent, 0), "", _execute(target, 1, ""));
        op.signature = _stubSessionSig(account, agent);
        assertEq(_validate(op, bytes32(uint256(7))), _window(true));
    }

    /// Estimation with a stub signature runs the same policy path as the real signature, so its
    /// validation gas is the real one's (within the few hundred gas of ECDSA's failure branch): a
    /// batch with a plain transfer, a listed function and a capped token transfer, charged its gas.
    function test_Validate_StubSignatureCostsWhatTheRealOneCosts() public {
        _grantAs(account, _rich());
        Call[] memory calls = new Call[](3);
        calls[0] = Call(target, 0.1 ether, "");
        calls[1] = Call(address(rec), 0.2 ether, abi.encodeCall(Recorder.hit, (1)));
        calls[2] = Call(address(token), 0, _tokenCall(TRANSFER, recipient, 5e18));
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_executeBatch(calls));
        (uint256 real, uint256 realGas, uint256 stub, uint256 stubGas) = _realAndStub(op, hash);
        assertEq(real, _window(false));
        assertEq(stub, _window(true));
        uint256 diff = realGas > stubGas ? realGas - stubGas : stubGas - realGas;
        assertLt(diff, 500, "stub and real validation gas differ");
        // And the stub run left the state the real one would have.
        assertEq(_session().spent, 0.3 ether);
        assertEq(_session().gasSpent, MAX_COST);
        assertEq(_tokenSpent(), 5e18);
    }

    /// Whatever the operation (lane, period, gas, paymaster, calls), the stub signature gives the real
    /// signature's outcome: the same revert data, or the same validation data but the signature bit,
    /// with the same state afterwards.
    function testFuzz_StubAndRealTakeTheSamePath(
        uint8 shape,
        uint64 amount,
        uint32 fee,
        bool badLane,
        bool pm,
        bool periodic,
        uint8 p
    ) public {
        ISessionKeyValidator.SessionGrant memory g = _rich();
        g.gasCap = uint96(MAX_COST * 3);
        g.paymaster = paymaster;
        if (periodic) _setPeriod(g, PERIOD, PERIOD_CAP);
        _grantAs(account, g);
        stateHashPeriod = p % 16; // periods 0-9 inside the window, 10 clipped, 11-15 outside
        bytes memory callData;
        shape %= 4;
        if (shape == 0) callData = _execute(target, amount, "");
        if (shape == 1) callData = _execute(address(rec), 0, abi.encodeCall(Recorder.hit, (amount)));
        if (shape == 2) callData = _execute(address(token), 0, _tokenCall(TRANSFER, recipient, uint256(amount) << 10));
        if (shape == 3) callData = _execute(address(rec), 0, hex"00");
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(callData);
        _setGas(op, 60_000, 1_500_000, 300_000, 0, uint256(fee) * 1e3);
        op.nonce = _periodLane(agent, stateHashPeriod, 0);
        if (badLane) op.nonce = 1;
        if (pm) op.paymasterAndData = _paymasterAndData(paymaster);
        _resign(op, hash, agentKey);

        uint256 snap = vm.snapshotState();
        vm.prank(account);
        (bool okReal, bytes memory retReal) =
            address(validator).call(abi.encodeCall(SessionKeyValidator.validateSessionUserOp, (op, hash)));
        bytes32 stateReal = _stateHash();
        vm.revertToState(snap);
        op.signature = _stubSessionSig(account, agent);
        vm.prank(account);
        (bool okStub, bytes memory retStub) =
            address(validator).call(abi.encodeCall(SessionKeyValidator.validateSessionUserOp, (op, hash)));

        assertEq(okReal, okStub, "one reverted, the other did not");
        if (okReal) {
            uint256 expected = periodic ? _periodWindow(stateHashPeriod, false) : _window(false);
            assertEq(abi.decode(retReal, (uint256)), expected);
            assertEq(abi.decode(retStub, (uint256)), expected | 1);
            assertEq(_stateHash(), stateReal, "different state");
        } else {
            assertEq(retStub, retReal, "different revert");
        }
    }

    function _realAndStub(PackedUserOperation memory op, bytes32 hash)
        internal
        returns (uint256 real, uint256 realGas, uint256 stub, uint256 stubGas)
    {
        uint256 snap = vm.snapshotState();
        vm.prank(account);
        uint256 before = gasleft();
        real = validator.validateSessionUserOp(op, hash);
        realGas = before - gasleft();
        vm.revertToState(snap);

        op.signature = _stubSessionSig(account, agent);
        vm.prank(account);
        before = gasleft();
        stub = validator.validateSessionUserOp(op, hash);
        stubGas = before - gasleft();
    }

    /// @dev The period whose counter {_stateHash} includes.
    uint256 internal stateHashPeriod;

    function _stateHash() internal view returns (bytes32) {
        return keccak256(
            abi.encode(
                _session(),
                validator.getPermission(account, agent, address(token)),
                validator.periodSpent(account, agent, stateHashPeriod)
            )
        );
    }

    function test_Validate_HighS_ReturnsSigFailed() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
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
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
        uint8[4] memory vs = [uint8(0), 1, 29, 255];
        for (uint256 i; i < vs.length; ++i) {
            op.signature[105] = bytes1(vs[i]);
            assertEq(_validate(op, hash), _window(true));
        }
    }

    // ------------------------------------------------------------------ validation: named errors

    function test_Validate_RevertsOnLength() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
        op.signature = abi.encodePacked(op.signature, bytes1(0));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.InvalidSignatureLength.selector, 107)
        );
        op.signature = "";
        _expectValidateRevert(op, hash, abi.encodeWithSelector(ISessionKeyValidator.InvalidSignatureLength.selector, 0));
    }

    function test_Validate_RevertsOnMarker() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
        op.signature[0] = 0x09;
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.InvalidSignatureMarker.selector, bytes1(0x09))
        );
    }

    function test_Validate_RevertsWhenSignedAccountIsNotSender() public {
        _grant(account, _targets(target), CAP);
        _grant(accountB, _targets(target), CAP);
        // Signed for A, submitted by B as B's operation.
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
        op.sender = accountB;
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.AccountMismatch.selector, account, accountB, accountB)
        );
    }

    function test_Validate_RevertsWhenCallerIsNotSender() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
        vm.prank(other);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.AccountMismatch.selector, account, account, other));
        validator.validateSessionUserOp(op, hash);
    }

    function test_Validate_RevertsOnUnknownSession() public {
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.UnknownSession.selector, account, agent)
        );
    }

    function test_Validate_RevertsOnRevokedSession() public {
        _grant(account, _targets(target), CAP);
        vm.prank(account);
        validator.revokeSession(account, agent);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0, ""));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.SessionIsRevoked.selector, account, agent)
        );
    }

    function test_Validate_RevertsOnUnsupportedCall() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) =
            _agentOp(abi.encodeWithSignature("transfer(address,uint256)", target, 1));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.UnsupportedCall.selector, bytes4(0xa9059cbb))
        );
        (op, hash) = _agentOp(hex"b61d27");
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.UnsupportedCall.selector, bytes4(0))
        );
    }

    function test_Validate_RevertsOnForbiddenTargets() public {
        _grant(account, _targets(target), CAP);
        address[2] memory forbidden = [account, address(validator)];
        for (uint256 i; i < forbidden.length; ++i) {
            (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(forbidden[i], 0, ""));
            _expectValidateRevert(
                op, hash, abi.encodeWithSelector(ISessionKeyValidator.ForbiddenTarget.selector, forbidden[i])
            );

            Call[] memory calls = new Call[](2);
            calls[0] = Call(target, 0, "");
            calls[1] = Call(forbidden[i], 0, "");
            (op, hash) = _agentOp(_executeBatch(calls));
            _expectValidateRevert(
                op, hash, abi.encodeWithSelector(ISessionKeyValidator.ForbiddenTarget.selector, forbidden[i])
            );
        }
    }

    function test_Validate_RevertsOnTargetNotAllowed() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(other, 0, ""));
        _expectValidateRevert(op, hash, abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, other));

        Call[] memory calls = new Call[](2);
        calls[0] = Call(target, 0, "");
        calls[1] = Call(other, 0, "");
        (op, hash) = _agentOp(_executeBatch(calls));
        _expectValidateRevert(op, hash, abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, other));
        // The EntryPoints are never listed, so a session cannot call them (withdrawTo, withdrawStake).
        (op, hash) = _agentOp(_execute(ENTRY_POINT_V07, 0, ""));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, ENTRY_POINT_V07)
        );
    }

    function test_Validate_TargetsArePerAccount() public {
        _grant(account, _targets(target), CAP);
        _grant(accountB, _targets(other), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _signedOp(accountB, _execute(target, 0, ""), agentKey);
        _expectValidateRevert(op, hash, abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, target));
    }

    function test_Validate_RevertsOverCap() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, CAP + 1, ""));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, CAP + 1, CAP)
        );
    }

    function test_Validate_RevertsOverCap_Cumulative() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, 0.7 ether, ""));
        _validate(op, hash);
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, 0.7 ether, 0.3 ether)
        );
    }

    function test_Validate_RevertsOverCap_Batch() public {
        _grant(account, _targets(target), CAP);
        Call[] memory calls = new Call[](3);
        calls[0] = Call(target, 0.5 ether, "");
        calls[1] = Call(target, 0.4 ether, "");
        calls[2] = Call(target, 0.2 ether, "");
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_executeBatch(calls));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, 0.2 ether, 0.1 ether)
        );
    }

    function test_Validate_HugeValuesDoNotOverflow() public {
        _grant(account, _targets(target), type(uint128).max);
        Call[] memory calls = new Call[](2);
        calls[0] = Call(target, type(uint128).max, "");
        calls[1] = Call(target, type(uint256).max, "");
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_executeBatch(calls));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, type(uint256).max, 0)
        );
    }

    /// The rules run in a fixed order: lane, paymaster, usage, gas, calls. An op breaking all of them
    /// is refused by the lane; fixing each in turn reveals the next.
    function test_Validate_RuleOrder() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        g.maxOps = 1;
        g.gasCap = uint96(MAX_COST);
        _grantAs(account, g);
        (PackedUserOperation memory ok, bytes32 okHash) = _agentOp(_execute(target, 0, ""));
        _validate(ok, okHash); // uses the one operation and the whole gas budget

        (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(other, CAP + 1, ""));
        op.nonce = 0;
        op.paymasterAndData = _paymasterAndData(paymaster);
        _expectValidateRevert(
            op,
            hash,
            abi.encodeWithSelector(ISessionKeyValidator.NonceLaneNotAllowed.selector, 0, uint192(uint160(agent)))
        );
        op.nonce = _lane(agent, 1);
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.PaymasterNotAllowed.selector, paymaster)
        );
        op.paymasterAndData = "";
        _expectValidateRevert(op, hash, abi.encodeWithSelector(ISessionKeyValidator.UsageLimitReached.selector, 1));
        g.maxOps = 0;
        g.gasCap = uint96(MAX_COST - 1);
        _grantAs(account, g);
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.GasBudgetExceeded.selector, MAX_COST, MAX_COST - 1)
        );
        g.gasCap = uint96(MAX_COST);
        _grantAs(account, g);
        _expectValidateRevert(op, hash, abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, other));
        op.callData = _execute(target, CAP + 1, "");
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, CAP + 1, CAP)
        );
    }

    // ------------------------------------------------------------------ periods

    uint32 internal constant PERIOD = 100;

    /// @dev The grant input with a 128-bit token cap (the ABI before the packing), to feed the decoder.
    struct WideTokenLimit {
        address token;
        uint128 cap;
    }

    struct WideGrant {
        address key;
        uint48 validAfter;
        uint48 validUntil;
        address revoker;
        uint128 spendCap;
        uint96 gasCap;
        address paymaster;
        uint32 maxOps;
        uint32 period;
        uint128 periodCap;
        ISessionKeyValidator.TargetPermission[] targets;
        WideTokenLimit[] tokens;
    }

    uint128 internal constant PERIOD_CAP = 0.3 ether;

    /// @dev The default grant (window [AFTER, UNTIL], CAP) with PERIOD_CAP per PERIOD seconds: period
    /// p is [AFTER + 100p, AFTER + 100p + 99], period 10 is [2000, 2000] (clipped), 11 on are outside.
    function _gp() internal view returns (ISessionKeyValidator.SessionGrant memory g) {
        g = _g(_targets(target), CAP);
        _setPeriod(g, PERIOD, PERIOD_CAP);
    }

    /// @dev `_agentOp` naming period `p` in its nonce key.
    function _pOp(uint256 p, bytes memory callData)
        internal
        view
        returns (PackedUserOperation memory op, bytes32 hash)
    {
        (op, hash) = _agentOp(callData);
        op.nonce = _periodLane(agent, p, 0);
    }

    function _pTransfer(uint256 p, uint256 value) internal view returns (PackedUserOperation memory, bytes32) {
        return _pOp(p, _execute(target, value, ""));
    }

    /// @dev Validation data with the window [validAfter, validUntil].
    function _windowData(uint256 validAfter, uint256 validUntil, bool failed) internal pure returns (uint256) {
        return (failed ? 1 : 0) | (validUntil << 160) | (validAfter << 208);
    }

    /// @dev The validation data of period `p` of {_gp} (a model for the fuzz tests; the unit tests
    /// spell the numbers out).
    function _periodWindow(uint256 p, bool failed) internal pure returns (uint256) {
        uint256 start = AFTER + p * PERIOD;
        uint256 end = start + PERIOD - 1;
        if (end > UNTIL) end = UNTIL;
        return _windowData(start, end, failed);
    }

    function _periodCapExceeded(uint256 p, uint256 requested, uint256 remaining) internal pure returns (bytes memory) {
        return abi.encodeWithSelector(ISessionKeyValidator.PeriodCapExceeded.selector, p, requested, remaining);
    }

    function _outside(uint256 p) internal pure returns (bytes memory) {
        return abi.encodeWithSelector(ISessionKeyValidator.PeriodOutsideWindow.selector, p);
    }

    function _periodSpent(uint256 p) internal view returns (uint256) {
        return validator.periodSpent(account, agent, p);
    }

    /// @dev readSession's period outputs at `at` (no targets).
    function _readPeriod(uint48 at) internal view returns (uint256 periodIndex, uint256 spent) {
        (,,, periodIndex, spent) = validator.readSession(account, agent, _noTargets(), _noSels(), at);
    }

    function test_Period_MinPeriodIs60() public view {
        assertEq(validator.MIN_PERIOD(), 60);
    }

    function test_Grant_InvalidPeriod_EachBadCombination() public {
        uint32[5] memory periods = [uint32(3600), 0, 59, 1, 59];
        uint128[5] memory caps = [uint128(0), 1 ether, 1 ether, 1, 0];
        // A period without a cap, a cap without a period, periods under 60 s (with or without a cap).
        for (uint256 i; i < periods.length; ++i) {
            ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
            _setPeriod(g, periods[i], caps[i]);
            _expectGrantRevert(
                account, g, abi.encodeWithSelector(ISessionKeyValidator.InvalidPeriod.selector, periods[i], caps[i])
            );
        }
        assertEq(_session().epoch, 0, "nothing granted");
    }

    function test_Grant_Period_ValidOnesStored() public {
        uint32[3] memory periods = [uint32(60), 1 days, type(uint32).max];
        uint128[3] memory caps = [uint128(1), 0.1 ether, type(uint128).max];
        for (uint256 i; i < periods.length; ++i) {
            ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
            _setPeriod(g, periods[i], caps[i]);
            vm.expectEmit(true, true, false, true, address(validator));
            emit ISessionKeyValidator.SessionGranted(account, agent, uint32(i + 1), g);
            _grantAs(account, g);
            ISessionKeyValidator.Session memory s = _session();
            assertEq(s.period, periods[i]);
            assertEq(s.periodCap, caps[i]);
            assertEq(s.epoch, i + 1);
            assertTrue(s.active);
        }
        // And no period at all.
        _grant(account, _targets(target), CAP);
        assertEq(_session().period, 0);
        assertEq(_session().periodCap, 0);
    }

    /// Any (period, periodCap): granted iff both are zero, or the period is at least 60 s and the cap nonzero.
    function testFuzz_Grant_PeriodRule(uint32 period, uint128 periodCap) public {
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        _setPeriod(g, period, periodCap);
        bool valid = (period == 0 && periodCap == 0) || (period >= 60 && periodCap != 0);
        vm.prank(account);
        (bool ok, bytes memory ret) = address(validator).call(abi.encodeCall(ISessionKeyValidator.grantSession, (g)));
        assertEq(ok, valid);
        if (valid) {
            assertEq(_session().period, period);
            assertEq(_session().periodCap, periodCap);
        } else {
            assertEq(ret, abi.encodeWithSelector(ISessionKeyValidator.InvalidPeriod.selector, period, periodCap));
        }
    }

    // --- lane

    /// A session without a period accepts period index 0 only, whatever the index.
    function test_Period_NonPeriodicSessionRefusesNonZeroIndex() public {
        _grant(account, _targets(target), CAP);
        uint192 lane = uint192(uint160(agent));
        uint32[3] memory ps = [uint32(1), 5, type(uint32).max];
        for (uint256 i; i < ps.length; ++i) {
            (PackedUserOperation memory op, bytes32 hash) = _pTransfer(ps[i], 1);
            _expectValidateRevert(
                op,
                hash,
                abi.encodeWithSelector(ISessionKeyValidator.NonceLaneNotAllowed.selector, _laneKey(agent, ps[i]), lane)
            );
        }
        (PackedUserOperation memory op0, bytes32 hash0) = _pTransfer(0, 1);
        assertEq(_validate(op0, hash0), _window(false));
        assertEq(_session().opsUsed, 1);
    }

    /// A periodic session accepts any period index above the key, but the low 160 bits must still be
    /// the key: not the owner's lane, not another agent's (granted) lane.
    function test_Period_PeriodicSessionAcceptsIndex_KeyStillCounts() public {
        _grantAs(account, _gp());
        ISessionKeyValidator.SessionGrant memory g2 = _gp();
        g2.key = agent2;
        _grantAs(account, g2);
        uint192 lane = uint192(uint160(agent));

        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(7, 1);
        assertEq(op.nonce, (uint256(7) << 224) | (uint256(uint160(agent)) << 64));
        assertEq(_validate(op, hash), _windowData(1700, 1799, false));

        // Period 7 above the owner's lane (0) and above agent2's key.
        op.nonce = uint256(7) << 224;
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.NonceLaneNotAllowed.selector, uint192(7) << 160, lane)
        );
        op.nonce = _periodLane(agent2, 7, 0);
        _expectValidateRevert(
            op,
            hash,
            abi.encodeWithSelector(ISessionKeyValidator.NonceLaneNotAllowed.selector, _laneKey(agent2, 7), lane)
        );
        // The key in the period bits and the period in the key bits is no lane of the key either.
        op.nonce = (uint256(uint160(agent)) << 224) | (uint256(7) << 64);
        _expectValidateRevert(
            op,
            hash,
            abi.encodeWithSelector(ISessionKeyValidator.NonceLaneNotAllowed.selector, uint192(op.nonce >> 64), lane)
        );
        assertEq(_session().opsUsed, 1);
        assertEq(validator.getSession(account, agent2).opsUsed, 0);
    }

    /// Any nonce on a periodic session without an end: the key's lane for any period p validates with
    /// p's window; anything else is refused by the lane.
    function testFuzz_Period_Lane(uint256 nonce, bool ownKey) public {
        ISessionKeyValidator.SessionGrant memory g = _gp();
        g.validUntil = 0;
        _grantAs(account, g);
        if (ownKey) {
            nonce = (nonce & ~(uint256(type(uint160).max) << 64)) | (uint256(uint160(agent)) << 64);
        }
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(0, 1);
        op.nonce = nonce;
        uint256 p = nonce >> 224;
        if (address(uint160(nonce >> 64)) == agent) {
            uint256 start = AFTER + p * PERIOD;
            assertEq(_validate(op, hash), _windowData(start, start + PERIOD - 1, false));
            assertEq(_periodSpent(p), 1);
        } else {
            _expectValidateRevert(
                op,
                hash,
                abi.encodeWithSelector(
                    ISessionKeyValidator.NonceLaneNotAllowed.selector, uint192(nonce >> 64), uint192(uint160(agent))
                )
            );
        }
    }

    // --- validation data: the period's window

    function test_Period_ValidationData_Period0() public {
        _grantAs(account, _gp());
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(0, 1);
        assertEq(_validate(op, hash), _windowData(1000, 1099, false));
        // With a bad signature: the same window and the failure bit.
        op.signature = _stubSessionSig(account, agent);
        assertEq(_validate(op, hash), _windowData(1000, 1099, true));
    }

    function test_Period_ValidationData_Period5() public {
        _grantAs(account, _gp());
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(5, 1);
        uint256 data = _validate(op, hash);
        assertEq(data, _windowData(1500, 1599, false));
        assertEq(uint48(data >> 208), 1500, "validAfter");
        assertEq(uint48(data >> 160), 1599, "validUntil");
        assertEq(uint160(data), 0, "no aggregator, signature valid");
    }

    /// A session starting at 0 without an end: period 0 is [0, period - 1] (nonzero validation data).
    function test_Period_ValidationData_NoWindow() public {
        ISessionKeyValidator.SessionGrant memory g = _grantOf(agent, _targets(target), CAP, GAS_CAP);
        _setPeriod(g, 1 days, 0.1 ether);
        _grantAs(account, g);
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(0, 1);
        assertEq(_validate(op, hash), _windowData(0, 1 days - 1, false));
        (op, hash) = _pTransfer(365, 1);
        assertEq(_validate(op, hash), _windowData(365 days, 366 days - 1, false));
    }

    /// The last period ends at validUntil: its window is cut short.
    function test_Period_ValidationData_ClippedByValidUntil() public {
        // PERIOD 100 in [1000, 2000]: period 9 is whole, period 10 is the single second 2000.
        _grantAs(account, _gp());
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(9, 1);
        assertEq(_validate(op, hash), _windowData(1900, 1999, false));
        (op, hash) = _pTransfer(10, 1);
        assertEq(_validate(op, hash), _windowData(2000, 2000, false));
        // 150 s in [1000, 2000]: period 6 would be [1900, 2049], cut to [1900, 2000].
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        _setPeriod(g, 150, PERIOD_CAP);
        _grantAs(account, g);
        (op, hash) = _pTransfer(6, 1);
        assertEq(_validate(op, hash), _windowData(1900, 2000, false));
    }

    function test_Period_EntirelyPastValidUntil_Refused() public {
        _grantAs(account, _gp());
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(11, 1);
        _expectValidateRevert(op, hash, _outside(11));
        (op, hash) = _pTransfer(12, 0);
        _expectValidateRevert(op, hash, _outside(12));
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        _setPeriod(g, 150, PERIOD_CAP);
        _grantAs(account, g);
        (op, hash) = _pTransfer(7, 1); // would start at 2050
        _expectValidateRevert(op, hash, _outside(7));
        assertEq(_session().opsUsed, 0);
        assertEq(_periodSpent(7), 0);
    }

    /// Huge period indices: past validUntil, or past the 48-bit timestamps of the validation data
    /// (without validUntil); no overflow even with the longest period and the largest index.
    function test_Period_HugeIndex_Refused() public {
        _grantAs(account, _gp());
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(type(uint32).max, 1);
        _expectValidateRevert(op, hash, _outside(type(uint32).max));

        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        g.validUntil = 0;
        _setPeriod(g, 1 days, PERIOD_CAP);
        _grantAs(account, g);
        // The last period that ends by 2^48 - 1, and the next one.
        uint256 last = (uint256(type(uint48).max) + 1 - AFTER) / 1 days - 1;
        uint256 lastEnd = AFTER + (last + 1) * 1 days - 1;
        assertLe(lastEnd, type(uint48).max);
        assertGt(lastEnd + 1 days, type(uint48).max);
        (op, hash) = _pTransfer(last, 1);
        assertEq(_validate(op, hash), _windowData(AFTER + last * 1 days, lastEnd, false));
        (op, hash) = _pTransfer(last + 1, 1);
        _expectValidateRevert(op, hash, _outside(last + 1));
        (op, hash) = _pTransfer(type(uint32).max, 1);
        _expectValidateRevert(op, hash, _outside(type(uint32).max));

        _setPeriod(g, type(uint32).max, PERIOD_CAP);
        _grantAs(account, g);
        (op, hash) = _pTransfer(type(uint32).max, 1);
        _expectValidateRevert(op, hash, _outside(type(uint32).max));
    }

    /// A period that starts by 2^48 - 1 but would end after it is refused as a whole (not cut at
    /// 2^48 - 1): the validator refuses when the period's end, not only its start, is past 48 bits.
    function test_Period_StraddlingTheEndOf48BitTime_Refused() public {
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        g.validUntil = 0;
        _setPeriod(g, 1 days, PERIOD_CAP);
        _grantAs(account, g);
        uint256 p = (uint256(type(uint48).max) + 1 - AFTER) / 1 days; // the first period past the edge
        uint256 start = AFTER + p * 1 days;
        assertLe(start, type(uint48).max, "it starts within 48 bits");
        assertGt(start + 1 days - 1, type(uint48).max, "and ends past them");
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(p, 1);
        _expectValidateRevert(op, hash, _outside(p));
    }

    // --- caps

    function test_Period_CapExceededWithinPeriod() public {
        _grantAs(account, _gp());
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(2, 0.2 ether);
        _validate(op, hash);
        _expectValidateRevert(op, hash, _periodCapExceeded(2, 0.2 ether, 0.1 ether));
        (op, hash) = _pTransfer(2, 0.1 ether);
        _validate(op, hash);
        assertEq(_periodSpent(2), PERIOD_CAP, "exactly the cap");
        (op, hash) = _pTransfer(2, 1);
        _expectValidateRevert(op, hash, _periodCapExceeded(2, 1, 0));
        // A zero-value operation still passes in a spent period.
        (op, hash) = _pTransfer(2, 0);
        assertEq(_validate(op, hash), _windowData(1200, 1299, false));
        ISessionKeyValidator.Session memory s = _session();
        assertEq(s.spent, 0.3 ether);
        assertEq(s.opsUsed, 3);
        assertEq(validator.remainingBudget(account, agent), 0.7 ether);
    }

    function test_Period_IndependentPeriods() public {
        _grantAs(account, _gp());
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(3, PERIOD_CAP);
        assertEq(_validate(op, hash), _windowData(1300, 1399, false));
        (op, hash) = _pTransfer(4, PERIOD_CAP);
        assertEq(_validate(op, hash), _windowData(1400, 1499, false));
        assertEq(_periodSpent(3), PERIOD_CAP);
        assertEq(_periodSpent(4), PERIOD_CAP);
        assertEq(_periodSpent(2), 0);
        assertEq(_periodSpent(5), 0);
        (op, hash) = _pTransfer(3, 1);
        _expectValidateRevert(op, hash, _periodCapExceeded(3, 1, 0));
        (op, hash) = _pTransfer(4, 1);
        _expectValidateRevert(op, hash, _periodCapExceeded(4, 1, 0));
        assertEq(_session().spent, 2 * PERIOD_CAP);
    }

    /// The period's cap counts the whole operation: a batch's values are summed.
    function test_Period_BatchSumsValues() public {
        ISessionKeyValidator.SessionGrant memory g = _gp();
        _addTarget(g, address(rec), false, _sels(HIT));
        _grantAs(account, g);
        Call[] memory calls = new Call[](3);
        calls[0] = Call(target, 0.1 ether, "");
        calls[1] = Call(address(rec), 0.15 ether, abi.encodeCall(Recorder.hit, (1)));
        calls[2] = Call(target, 0.1 ether, "");
        (PackedUserOperation memory op, bytes32 hash) = _pOp(1, _executeBatch(calls));
        _expectValidateRevert(op, hash, _periodCapExceeded(1, 0.35 ether, PERIOD_CAP));
        calls[2] = Call(target, 0.05 ether, "");
        (op, hash) = _pOp(1, _executeBatch(calls));
        vm.expectEmit(true, true, true, true, address(validator));
        emit ISessionKeyValidator.PeriodSpent(account, agent, 1, 0.3 ether, 0.3 ether);
        assertEq(_validate(op, hash), _windowData(1100, 1199, false));
        assertEq(_periodSpent(1), PERIOD_CAP);
        // Each call within the period's cap, their sum over it.
        calls = new Call[](2);
        calls[0] = Call(target, 0.2 ether, "");
        calls[1] = Call(target, 0.2 ether, "");
        (op, hash) = _pOp(2, _executeBatch(calls));
        _expectValidateRevert(op, hash, _periodCapExceeded(2, 0.4 ether, PERIOD_CAP));
        assertEq(_periodSpent(2), 0);
        assertEq(_session().spent, PERIOD_CAP);
    }

    /// The session's spendCap still caps the total across periods.
    function test_Period_SpendCapStillBindsAcrossPeriods() public {
        _grantAs(account, _gp());
        for (uint256 p; p < 3; ++p) {
            (PackedUserOperation memory full, bytes32 fullHash) = _pTransfer(p, PERIOD_CAP);
            _validate(full, fullHash);
        }
        assertEq(_session().spent, 0.9 ether);
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(3, 0.2 ether);
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, 0.2 ether, 0.1 ether)
        );
        assertEq(_periodSpent(3), 0);
        (op, hash) = _pTransfer(3, 0.1 ether);
        _validate(op, hash);
        assertEq(_session().spent, CAP);
        (op, hash) = _pTransfer(4, 1);
        _expectValidateRevert(op, hash, abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, 1, 0));
        assertEq(_periodSpent(4), 0);
        assertEq(validator.remainingBudget(account, agent), 0);
    }

    /// Rules of a periodic operation, in order: lane, ..., spend cap, period cap, then the period's window.
    function test_Period_RuleOrder() public {
        _grantAs(account, _gp());
        ISessionKeyValidator.SessionGrant memory g2 = _gp();
        g2.key = agent2;
        _grantAs(account, g2);
        // Period 50 is past the window; the value is over both caps; the lane is agent2's.
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(50, CAP + 1);
        op.nonce = _periodLane(agent2, 50, 0);
        _expectValidateRevert(
            op,
            hash,
            abi.encodeWithSelector(
                ISessionKeyValidator.NonceLaneNotAllowed.selector, _laneKey(agent2, 50), uint192(uint160(agent))
            )
        );
        op.nonce = _periodLane(agent, 50, 0);
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, CAP + 1, CAP)
        );
        (op, hash) = _pTransfer(50, PERIOD_CAP + 1);
        _expectValidateRevert(op, hash, _periodCapExceeded(50, PERIOD_CAP + 1, PERIOD_CAP));
        (op, hash) = _pTransfer(50, PERIOD_CAP);
        _expectValidateRevert(op, hash, _outside(50));
        (op, hash) = _pTransfer(5, PERIOD_CAP);
        assertEq(_validate(op, hash), _windowData(1500, 1599, false));
    }

    /// A zero-value operation of a periodic session: the period's window, no period charge, no event.
    function test_Period_ZeroValue_NoCharge() public {
        ISessionKeyValidator.SessionGrant memory g = _rich();
        _setPeriod(g, PERIOD, PERIOD_CAP);
        _grantAs(account, g);
        (PackedUserOperation memory op, bytes32 hash) =
            _pOp(4, _execute(address(rec), 0, abi.encodeCall(Recorder.hit, (1))));
        vm.recordLogs();
        assertEq(_validate(op, hash), _windowData(1400, 1499, false));
        assertEq(vm.getRecordedLogs().length, 0);
        assertEq(_periodSpent(4), 0);
        assertEq(_session().opsUsed, 1);
    }

    /// A session without a period keeps no period counter and emits no PeriodSpent.
    function test_Period_NonPeriodicSession_NoPeriodCounter() public {
        _grant(account, _targets(target), CAP);
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(0, 0.5 ether);
        vm.recordLogs();
        _validate(op, hash);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs.length, 1);
        assertEq(logs[0].topics[0], ISessionKeyValidator.SessionSpent.selector);
        assertEq(_periodSpent(0), 0);
        assertEq(_session().spent, 0.5 ether);
        (uint256 p, uint256 spent) = _readPeriod(AFTER + 10);
        assertEq(p, 0);
        assertEq(spent, 0);
    }

    function test_Period_EmitsPeriodSpent() public {
        _grantAs(account, _gp());
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(4, 0.1 ether);
        vm.expectEmit(true, true, false, true, address(validator));
        emit ISessionKeyValidator.SessionSpent(account, agent, 0.1 ether, 0.1 ether);
        vm.expectEmit(true, true, true, true, address(validator));
        emit ISessionKeyValidator.PeriodSpent(account, agent, 4, 0.1 ether, 0.1 ether);
        _validate(op, hash);
        (op, hash) = _pTransfer(4, 0.15 ether);
        vm.expectEmit(true, true, true, true, address(validator));
        emit ISessionKeyValidator.PeriodSpent(account, agent, 4, 0.15 ether, 0.25 ether);
        _validate(op, hash);
        // Another period starts its own total; the session's total goes on.
        (op, hash) = _pTransfer(6, 0.05 ether);
        vm.expectEmit(true, true, false, true, address(validator));
        emit ISessionKeyValidator.SessionSpent(account, agent, 0.05 ether, 0.3 ether);
        vm.expectEmit(true, true, true, true, address(validator));
        emit ISessionKeyValidator.PeriodSpent(account, agent, 6, 0.05 ether, 0.05 ether);
        _validate(op, hash);
    }

    // --- views

    function test_Period_PeriodSpentAndReadSession() public {
        _grantAs(account, _gp());
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(0, 0.1 ether);
        _validate(op, hash);
        (op, hash) = _pTransfer(5, 0.2 ether);
        _validate(op, hash);
        assertEq(_periodSpent(0), 0.1 ether);
        assertEq(_periodSpent(5), 0.2 ether);
        assertEq(_periodSpent(1), 0);
        assertEq(validator.periodSpent(accountB, agent, 0), 0, "per account");
        assertEq(validator.periodSpent(account, agent2, 0), 0, "per key");

        uint48[10] memory ats =
            [uint48(0), AFTER - 1, AFTER + 1, AFTER + 99, AFTER + 100, 1550, 1599, 1600, UNTIL, 5000];
        uint256[10] memory idx = [uint256(0), 0, 0, 0, 1, 5, 5, 6, 10, 40];
        uint256[10] memory spent = [uint256(0), 0, 0.1 ether, 0.1 ether, 0, 0.2 ether, 0.2 ether, 0, 0, 0];
        for (uint256 i; i < ats.length; ++i) {
            (uint256 p, uint256 s) = _readPeriod(ats[i]);
            assertEq(p, idx[i], "period index");
            assertEq(s, spent[i], "spent in the period");
        }
        (uint256 pMax,) = _readPeriod(type(uint48).max);
        assertEq(pMax, (uint256(type(uint48).max) - AFTER) / PERIOD);
        // The other outputs are as before.
        (ISessionKeyValidator.Session memory sess,,,,) =
            validator.readSession(account, agent, _noTargets(), _noSels(), 1550);
        assertEq(sess.period, PERIOD);
        assertEq(sess.periodCap, PERIOD_CAP);
        assertEq(sess.spent, 0.3 ether);
    }

    /// `at` = validAfter is the first second of period 0: readSession reports period 0 and what it spent.
    function test_Period_ReadSession_AtValidAfter() public {
        _grantAs(account, _gp());
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(0, 0.1 ether);
        _validate(op, hash);
        (uint256 p, uint256 s) = _readPeriod(AFTER);
        assertEq(p, 0);
        assertEq(s, 0.1 ether, "spent in period 0 at its first second");
    }

    // --- re-grant

    /// A re-grant starts a new epoch: every period's counter starts from zero, with the new period.
    function test_Period_RegrantResetsPeriodSpends() public {
        _grantAs(account, _gp());
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(0, PERIOD_CAP);
        _validate(op, hash);
        (op, hash) = _pTransfer(1, 0.2 ether);
        _validate(op, hash);

        _grantAs(account, _gp());
        assertEq(_session().epoch, 2);
        assertEq(_periodSpent(0), 0);
        assertEq(_periodSpent(1), 0);
        (uint256 p, uint256 s) = _readPeriod(AFTER + 10);
        assertEq(p, 0);
        assertEq(s, 0);
        (op, hash) = _pTransfer(0, PERIOD_CAP);
        _validate(op, hash);
        assertEq(_periodSpent(0), PERIOD_CAP, "the full cap again");

        // Revoked, then re-granted with another period and cap.
        vm.prank(account);
        validator.revokeSession(account, agent);
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.SessionIsRevoked.selector, account, agent)
        );
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), CAP);
        _setPeriod(g, 200, 0.5 ether);
        _grantAs(account, g);
        assertEq(_periodSpent(0), 0);
        (op, hash) = _pTransfer(0, 0.5 ether);
        assertEq(_validate(op, hash), _windowData(1000, 1199, false));
        (op, hash) = _pTransfer(0, 1);
        _expectValidateRevert(op, hash, _periodCapExceeded(0, 1, 0));

        // Re-granted without a period: period indices are refused again, period 0 is the whole window.
        _grant(account, _targets(target), CAP);
        (op, hash) = _pTransfer(1, 1);
        _expectValidateRevert(
            op,
            hash,
            abi.encodeWithSelector(
                ISessionKeyValidator.NonceLaneNotAllowed.selector, _laneKey(agent, 1), uint192(uint160(agent))
            )
        );
        (op, hash) = _pTransfer(0, 1);
        assertEq(_validate(op, hash), _window(false));
        assertEq(_periodSpent(0), 0);
    }

    // --- storage

    /// A periodic operation with value writes the session's spent and counters slots and its period's
    /// counter, keyed with the account innermost (ERC-7562: storage associated with the sender).
    function test_Period_WritesItsCounterInItsOwnSlot() public {
        _grantAs(account, _gp());
        _grantAs(account, _gp()); // epoch 2, so that the epoch is part of the key
        uint256 p = 7;
        bytes32 base = keccak256(abi.encode(account, keccak256(abi.encode(agent, uint256(0)))));
        bytes32 periodSlot = keccak256(
            abi.encode(
                account,
                keccak256(abi.encode(p, keccak256(abi.encode(uint256(2), keccak256(abi.encode(agent, uint256(2)))))))
            )
        );
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(p, 0.25 ether);
        vm.record();
        _validate(op, hash);
        (, bytes32[] memory writes) = vm.accesses(address(validator));
        assertGt(writes.length, 0);
        bool wrotePeriod;
        for (uint256 i; i < writes.length; ++i) {
            bool known = writes[i] == bytes32(uint256(base) + 1) || writes[i] == bytes32(uint256(base) + 2)
                || writes[i] == periodSlot;
            assertTrue(known, "validation wrote another slot");
            if (writes[i] == periodSlot) wrotePeriod = true;
        }
        assertTrue(wrotePeriod);
        assertEq(uint256(vm.load(address(validator), periodSlot)), 0.25 ether);
        // The session's fourth and fifth slots: (paymaster, epoch, active, period) and periodCap.
        uint256 word = uint256(vm.load(address(validator), bytes32(uint256(base) + 3)));
        assertEq(uint32(word >> 160), 2, "epoch");
        assertEq(uint8(word >> 192), 1, "active");
        assertEq(uint32(word >> 200), PERIOD, "period");
        assertEq(uint256(vm.load(address(validator), bytes32(uint256(base) + 4))), PERIOD_CAP, "periodCap");
    }

    /// Any sequence of operations over a few periods: each validates and adds its value to its
    /// period, or is refused by the spend cap or the period's cap; no period ever passes its cap and
    /// the periods add up to the session's total.
    function testFuzz_PeriodSpentNeverExceedsPeriodCap(
        uint128 spendCap,
        uint128 periodCap,
        uint8[16] memory ps,
        uint64[16] memory values
    ) public {
        spendCap = uint128(_bound(spendCap, 0, 1e20));
        periodCap = uint128(_bound(periodCap, 1, 4e19));
        ISessionKeyValidator.SessionGrant memory g = _g(_targets(target), spendCap);
        g.validUntil = 0;
        _setPeriod(g, PERIOD, periodCap);
        _grantAs(account, g);
        for (uint256 i; i < ps.length; ++i) {
            _periodStep(spendCap, periodCap, ps[i] % 4, values[i]);
            uint256 sum;
            for (uint256 q; q < 4; ++q) {
                assertEq(_periodSpent(q), ghostPeriodSpent[q]);
                assertLe(_periodSpent(q), periodCap, "a period passed its cap");
                sum += _periodSpent(q);
            }
            assertEq(_session().spent, ghostTotal);
            assertEq(sum, _session().spent, "periods do not add up to the total");
            assertLe(_session().spent, spendCap);
        }
    }

    /// @dev What {testFuzz_PeriodSpentNeverExceedsPeriodCap} expects to have been counted.
    uint256[4] internal ghostPeriodSpent;
    uint256 internal ghostTotal;

    /// @dev One transfer of `value` in period `p`: counted when it fits both caps, else refused by the
    /// first one it breaks (the spend cap is checked first).
    function _periodStep(uint256 spendCap, uint256 periodCap, uint256 p, uint256 value) internal {
        (PackedUserOperation memory op, bytes32 hash) = _pTransfer(p, value);
        if (value > spendCap - ghostTotal) {
            _expectValidateRevert(
                op,
                hash,
                abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, value, spendCap - ghostTotal)
            );
        } else if (value > periodCap - ghostPeriodSpent[p]) {
            _expectValidateRevert(op, hash, _periodCapExceeded(p, value, periodCap - ghostPeriodSpent[p]));
        } else {
            uint256 start = AFTER + p * PERIOD;
            assertEq(_validate(op, hash), _windowData(start, start + PERIOD - 1, false));
            ghostPeriodSpent[p] += value;
            ghostTotal += value;
        }
    }

    // ------------------------------------------------------------------ token caps: packing

    /// The token's cap and counter share the permission's one slot: a capped token call writes the
    /// counters' slot and that slot only.
    function test_Token_CounterSharesThePermissionSlot() public {
        _grantAs(account, _rich());
        bytes32 base = keccak256(abi.encode(account, keccak256(abi.encode(agent, uint256(0)))));
        bytes32 permSlot = keccak256(
            abi.encode(
                account,
                keccak256(
                    abi.encode(
                        uint256(1), keccak256(abi.encode(agent, keccak256(abi.encode(address(token), uint256(1)))))
                    )
                )
            )
        );
        (PackedUserOperation memory op, bytes32 hash) =
            _agentOp(_execute(address(token), 0, _tokenCall(TRANSFER, recipient, 42e18)));
        vm.record();
        _validate(op, hash);
        (, bytes32[] memory writes) = vm.accesses(address(validator));
        bool wrotePerm;
        for (uint256 i; i < writes.length; ++i) {
            assertTrue(
                writes[i] == bytes32(uint256(base) + 2) || writes[i] == permSlot, "validation wrote another slot"
            );
            if (writes[i] == permSlot) wrotePerm = true;
        }
        assertTrue(wrotePerm);
        uint256 word = uint256(vm.load(address(validator), permSlot));
        assertEq(uint8(word), 1, "allowed");
        assertEq(uint8(word >> 8), 0, "anySelector");
        assertEq(uint8(word >> 16), 1, "isToken");
        assertEq(uint112(word >> 24), TOKEN_CAP, "tokenCap");
        assertEq(uint112(word >> 136), 42e18, "tokenSpent");
        assertEq(word >> 248, 0);
        assertEq(vm.load(address(validator), bytes32(uint256(permSlot) + 1)), bytes32(0), "a second slot");
    }

    /// A cap of 2^112 - 1 counts up to itself exactly, and nothing more.
    function test_Token_CapNearUint112Max() public {
        uint112 max = type(uint112).max;
        ISessionKeyValidator.SessionGrant memory g = _g(_noTargets(), CAP);
        _addToken(g, address(token), max);
        _grantAs(account, g);
        (PackedUserOperation memory op, bytes32 hash) =
            _agentOp(_execute(address(token), 0, _tokenCall(TRANSFER, recipient, uint256(1) << 112)));
        _expectValidateRevert(
            op,
            hash,
            abi.encodeWithSelector(
                ISessionKeyValidator.TokenCapExceeded.selector, address(token), uint256(1) << 112, max
            )
        );
        (op, hash) = _agentOp(_execute(address(token), 0, _tokenCall(APPROVE, recipient, max - 1)));
        _validate(op, hash);
        assertEq(_tokenSpent(), max - 1);
        (op, hash) = _agentOp(_execute(address(token), 0, _tokenCall(INCREASE_ALLOWANCE, recipient, 2)));
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.TokenCapExceeded.selector, address(token), 2, 1)
        );
        (op, hash) = _agentOp(_execute(address(token), 0, _tokenCall(TRANSFER, recipient, 1)));
        _validate(op, hash);
        assertEq(_tokenSpent(), max);
        ISessionKeyValidator.Permission memory p = validator.getPermission(account, agent, address(token));
        assertTrue(p.allowed && p.isToken && !p.anySelector, "flags intact next to full counters");
        assertEq(p.tokenCap, max);
        _expectValidateRevert(
            op, hash, abi.encodeWithSelector(ISessionKeyValidator.TokenCapExceeded.selector, address(token), 1, 0)
        );
        (op, hash) = _agentOp(_execute(address(token), 0, _tokenCall(TRANSFER, recipient, 0)));
        assertEq(_validate(op, hash), _window(false));
    }

    /// The grant's token cap is 112 bits: a larger value does not even decode.
    function test_Token_CapAbove112BitsDoesNotDecode() public {
        WideGrant memory w;
        (w.key, w.validAfter, w.validUntil, w.spendCap, w.gasCap) = (agent, AFTER, UNTIL, CAP, GAS_CAP);
        w.targets = new ISessionKeyValidator.TargetPermission[](0);
        w.tokens = new WideTokenLimit[](1);
        w.tokens[0] = WideTokenLimit(address(token), uint128(1) << 112);
        // An account with code (forge rewrites an empty revert after a call to an address without code).
        address acct = address(new EntryPointReporter(address(0)));
        vm.prank(acct);
        (bool ok, bytes memory ret) =
            address(validator).call(abi.encodeWithSelector(ISessionKeyValidator.grantSession.selector, w));
        assertFalse(ok);
        assertEq(ret.length, 0, "the ABI decoder's revert");
        // The same encoding with a 112-bit cap is a valid grant (the mirror struct is right).
        w.tokens[0].cap = type(uint112).max;
        vm.prank(acct);
        (ok,) = address(validator).call(abi.encodeWithSelector(ISessionKeyValidator.grantSession.selector, w));
        assertTrue(ok);
        assertEq(validator.getPermission(acct, agent, address(token)).tokenCap, type(uint112).max);
    }

    /// Caps within 2^64 of 2^112 - 1 and amounts around them: counting never overflows, never passes the cap.
    function testFuzz_Token_NearMaxCapNeverOverflows(uint64 below, uint256[6] memory amounts, uint8[6] memory kinds)
        public
    {
        uint112 cap = type(uint112).max - below;
        ISessionKeyValidator.SessionGrant memory g = _g(_noTargets(), CAP);
        _addToken(g, address(token), cap);
        _grantAs(account, g);
        uint256 expected;
        for (uint256 i; i < amounts.length; ++i) {
            uint256 amount = _bound(amounts[i], 0, (uint256(1) << 112) + type(uint64).max);
            if (i % 2 == 1) {
                // The edge: what is left, one less or one more.
                amount = cap - expected + amounts[i] % 3;
                amount = amount == 0 ? 0 : amount - 1;
            }
            expected += _countedStep(cap - expected, amount, kinds[i]);
            assertEq(_tokenSpent(), expected);
            assertLe(_tokenSpent(), cap);
        }
    }

    // ------------------------------------------------------------------ fuzz

    /// Spend accumulates across many operations and never passes the cap: every op either validates
    /// and adds exactly its value, or reverts with SpendCapExceeded and changes nothing.
    function testFuzz_SpendNeverExceedsCap(uint128 cap, uint96[16] memory values) public {
        _grantAs(account, _grantOf(agent, _targets(target), cap, GAS_CAP));
        uint256 expected;
        for (uint256 i; i < values.length; ++i) {
            (PackedUserOperation memory op, bytes32 hash) = _agentOp(_execute(target, values[i], ""));
            if (expected + values[i] <= cap) {
                assertEq(_validate(op, hash), 0);
                expected += values[i];
            } else {
                _expectValidateRevert(
                    op,
                    hash,
                    abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, values[i], cap - expected)
                );
            }
            uint256 spent = _session().spent;
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
        PackedUserOperation memory op = _op(accountB, _lane(agent, 0), "", callData);
        op.signature = _sessionSig(agentKey, account, hash);

        vm.prank(caller);
        (bool ok, bytes memory ret) =
            address(validator).call(abi.encodeCall(SessionKeyValidator.validateSessionUserOp, (op, hash)));
        assertFalse(ok, "a signature for A validated for B");
        assertEq(bytes4(ret), ISessionKeyValidator.AccountMismatch.selector);
        assertEq(validator.getSession(accountB, agent).spent, 0);
        assertEq(_session().spent, 0);
        assertEq(validator.getSession(accountB, agent).opsUsed, 0);
    }

    /// Any bytes as a session signature: either a named error, or validation data whose
    /// signature-failure bit is set unless it is the real signature.
    function testFuzz_ArbitrarySignatureNeverValidates(bytes memory sig, bytes32 hash) public {
        _grant(account, _targets(target), CAP);
        PackedUserOperation memory op = _op(account, _lane(agent, 0), "", _execute(target, 1, ""));
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
