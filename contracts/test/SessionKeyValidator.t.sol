// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {stdError} from "forge-std/StdError.sol";

import {TestBase} from "./utils/TestBase.sol";
import {EntryPointReporter, Recorder} from "./utils/Mocks.sol";
import {SessionKeyValidator} from "../src/SessionKeyValidator.sol";
import {PackedUserOperation} from "../src/interfaces/IERC4337.sol";
import {Call} from "../src/interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "../src/interfaces/ISessionKeyValidator.sol";
import {TestToken} from "../src/testing/TestToken.sol";

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
    uint128 internal constant TOKEN_CAP = 100e18;
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
        uint32 maxOps
    ) public {
        vm.assume(validUntil == 0 || validUntil > validAfter);
        ISessionKeyValidator.SessionGrant memory g = _grantOf(agent, _targets(target), spendCap, gasCap);
        (g.validAfter, g.validUntil, g.revoker, g.paymaster, g.maxOps) =
        (validAfter, validUntil, revoker_, paymaster_, maxOps);
        _grantAs(account, g);
        ISessionKeyValidator.Session memory s = _session();
        assertEq(s.validAfter, validAfter);
        assertEq(s.validUntil, validUntil);
        assertEq(s.revoker, revoker_);
        assertEq(s.spendCap, spendCap);
        assertEq(s.gasCap, gasCap);
        assertEq(s.paymaster, paymaster_);
        assertEq(s.maxOps, maxOps);
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
        if (uint192(nonce >> 64) == lane) {
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
        _addToken(g, address(token), type(uint128).max);
        _grantAs(account, g);
        (PackedUserOperation memory op, bytes32 hash) =
            _agentOp(_execute(address(token), 0, _tokenCall(TRANSFER, recipient, type(uint128).max)));
        _validate(op, hash);
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
    function testFuzz_TokenSpentNeverExceedsCap(uint128 cap, uint128[8] memory amounts, uint8[8] memory kinds) public {
        cap = uint128(_bound(cap, 1, type(uint128).max));
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
        (ISessionKeyValidator.Session memory s, ISessionKeyValidator.Permission[] memory ps, bool[] memory allowed) =
            validator.readSession(account, agent, ts, ss);
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
    }

    function test_ReadSession_LengthMismatch() public {
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.LengthMismatch.selector, 2, 1));
        validator.readSession(account, agent, _targets(target, other), _sels(HIT));
    }

    function test_ReadSession_UnknownRevokedAndRegranted() public {
        (ISessionKeyValidator.Session memory s, ISessionKeyValidator.Permission[] memory ps, bool[] memory allowed) =
            validator.readSession(account, agent, _targets(address(rec)), _sels(HIT));
        assertEq(s.epoch, 0);
        assertFalse(s.active);
        assertFalse(ps[0].allowed);
        assertFalse(allowed[0]);

        _grantAs(account, _rich());
        vm.prank(account);
        validator.revokeSession(account, agent);
        // Revocation is reported in the session; the caller reads `active`.
        (s, ps, allowed) = validator.readSession(account, agent, _targets(address(rec)), _sels(HIT));
        assertFalse(s.active);
        assertEq(s.epoch, 1);
        assertTrue(allowed[0]);

        _grant(account, _targets(target), CAP);
        (s, ps, allowed) = validator.readSession(account, agent, _targets(address(rec)), _sels(HIT));
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

    /// Whatever the operation (lane, gas, paymaster, calls), the stub signature gives the real
    /// signature's outcome: the same revert data, or the same validation data but the signature bit,
    /// with the same state afterwards and the same gas within 500.
    function testFuzz_StubAndRealTakeTheSamePath(uint8 shape, uint64 amount, uint32 fee, bool badLane, bool pm) public {
        ISessionKeyValidator.SessionGrant memory g = _rich();
        g.gasCap = uint96(MAX_COST * 3);
        g.paymaster = paymaster;
        _grantAs(account, g);
        bytes memory callData;
        shape %= 4;
        if (shape == 0) callData = _execute(target, amount, "");
        if (shape == 1) callData = _execute(address(rec), 0, abi.encodeCall(Recorder.hit, (amount)));
        if (shape == 2) callData = _execute(address(token), 0, _tokenCall(TRANSFER, recipient, uint256(amount) << 10));
        if (shape == 3) callData = _execute(address(rec), 0, hex"00");
        (PackedUserOperation memory op, bytes32 hash) = _agentOp(callData);
        _setGas(op, 60_000, 1_500_000, 300_000, 0, uint256(fee) * 1e3);
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
            assertEq(abi.decode(retReal, (uint256)), _window(false));
            assertEq(abi.decode(retStub, (uint256)), _window(true));
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

    function _stateHash() internal view returns (bytes32) {
        return keccak256(abi.encode(_session(), validator.getPermission(account, agent, address(token))));
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
