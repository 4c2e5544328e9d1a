// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Test} from "forge-std/Test.sol";

import {SessionKeyValidator} from "../../SessionKeyValidator.sol";
import {PackedUserOperation} from "../../interfaces/IERC4337.sol";
import {Call, IAgentAccount} from "../../interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "../../interfaces/ISessionKeyValidator.sol";
import {TestToken} from "../../testing/TestToken.sol";

/// @dev halmos's symbolic-value cheat codes (the `SVM` of halmos-cheatcodes, declared here so the
/// project needs no extra library). Only halmos implements them; forge never runs `check_` functions.
interface SVM {
    function createUint(uint256 bits, string calldata name) external pure returns (uint256);
    function createBytes(uint256 length, string calldata name) external pure returns (bytes memory);
    function createAddress(string calldata name) external pure returns (address);
}

/// @dev A call target with code (a target with a selector list must be a contract).
contract Dapp {
    function ping() external payable {}

    function pong(uint256) external payable {}
}

/// @title Symbolic proof of the session accounting of {SessionKeyValidator} (halmos)
/// @notice Run by `scripts/halmos.sh` (halmos 0.3.3); forge ignores `check_` functions. Each check
/// starts from an arbitrary state the invariant allows, with symbolic caps and counters written into
/// the validator's storage (`spent <= spendCap`, `gasSpent <= gasCap`, `tokenSpent <= tokenCap`,
/// `opsUsed <= maxOps` unless `maxOps == 0`, an arbitrary session paymaster), then lets the account
/// (`vm.prank(ACCOUNT)`) validate one operation with symbolic fields and proves, on every path on
/// which `validateSessionUserOp` returns:
///
/// - (a) gas: the increase of `gasSpent` is at least, in fact exactly, the EntryPoint's prefund bound
///   `(preVerificationGas + verificationGasLimit + callGasLimit + paymasterVerificationGasLimit +
///   paymasterPostOpGasLimit) × maxFeePerGas` when `paymasterAndData` is empty (the paymaster limits
///   are then 0), and nothing is charged only when the operation names the session's own, nonzero,
///   paymaster;
/// - (b) caps: afterwards `gasSpent <= gasCap`, `spent <= spendCap`, `tokenSpent <= tokenCap` (and
///   `opsUsed <= maxOps` when `maxOps != 0`); the caps themselves are unchanged. With (b) holding from
///   the zero counters of a grant, this is an induction over any number of operations;
/// - (c) native value: the sum of the values of the calls is at most the increase of `spent`;
/// - (d) tokens: the sum of what the calls move out of the account or approve on the capped token
///   (`transfer`/`approve`/`increaseAllowance` amount; `transferFrom` amount when `from` is the
///   account) is at most the increase of `tokenSpent`;
/// - (e) lane: the nonce key (`nonce >> 64`) is exactly `uint160(key)` (the session is not periodic,
///   so no period index may stand above the key).
///
/// Bounds (what makes the search finite; within them the proof covers every value):
/// - gas fields are symbolic `uint120` values (the EntryPoint refuses larger ones, AA94); the nonce,
///   the priority fee (`uint128`), the userOpHash, every cap and counter and the session's paymaster
///   are fully symbolic;
/// - `execute`: a fully symbolic target address and `uint256` value, and symbolic call data of each
///   length in {0, 3, 4, 36, 68, 100, 132} (so every selector and argument of those lengths);
/// - `executeBatch`: 0, 1 or 2 calls, each with a fully symbolic target and value and symbolic data of
///   length 0 or 4 (`check_executeBatch`: the batch's running value total); and 2 calls to the capped
///   token with symbolic values and symbolic 68-byte data (`check_executeBatchTokens`: token amounts
///   across calls, each call's count written before the next is checked);
/// - `paymasterAndData` of each length in {0, 19, 20, 52, 53}, symbolic content;
/// - the signature is `0x08 ‖ account ‖ key ‖ r ‖ s ‖ v` with a symbolic `r ‖ s ‖ v` in
///   `check_gasCharge` and a stub (high `s`, recovery fails before ecrecover) elsewhere: the signature
///   check comes after all the accounting and changes no state;
/// - the grant is concrete and not periodic: a plain recipient, a contract with one listed selector, a
///   contract with any selector, and a capped token that is also listed as a target with
///   `transferFrom` and `approve` (so that `transferFrom(other, …)` is allowed uncounted, and a listed
///   selector must not let `transferFrom(account, …)` or `approve` past the count).
/// halmos's loop bound (2) is never reached: the script fails if a path hits it.
contract SessionAccountingTest is Test {
    SVM internal constant svm = SVM(address(uint160(uint256(keccak256("svm cheat code")))));

    address internal constant ACCOUNT = address(0xACC0);
    address internal constant KEY = address(0x5E55);
    address internal constant RECIPIENT = address(0xBEEF);

    bytes4 internal constant TRANSFER = 0xa9059cbb;
    bytes4 internal constant APPROVE = 0x095ea7b3;
    bytes4 internal constant INCREASE_ALLOWANCE = 0x39509351;
    bytes4 internal constant TRANSFER_FROM = 0x23b872dd;

    SessionKeyValidator internal validator;
    TestToken internal token;
    Dapp internal dapp;
    Dapp internal wildcard;

    /// @dev The state a check starts from (symbolic caps and counters).
    struct Before {
        uint128 spendCap;
        uint128 spent;
        uint96 gasCap;
        uint96 gasSpent;
        uint32 maxOps;
        uint32 opsUsed;
        address paymaster;
        uint112 tokenCap;
        uint112 tokenSpent;
    }

    function setUp() public {
        validator = new SessionKeyValidator();
        token = new TestToken();
        dapp = new Dapp();
        wildcard = new Dapp();

        ISessionKeyValidator.TargetPermission[] memory targets = new ISessionKeyValidator.TargetPermission[](4);
        targets[0] = ISessionKeyValidator.TargetPermission(RECIPIENT, false, new bytes4[](0));
        bytes4[] memory dappSelectors = new bytes4[](1);
        dappSelectors[0] = Dapp.ping.selector;
        targets[1] = ISessionKeyValidator.TargetPermission(address(dapp), false, dappSelectors);
        targets[2] = ISessionKeyValidator.TargetPermission(address(wildcard), true, new bytes4[](0));
        bytes4[] memory tokenSelectors = new bytes4[](2);
        tokenSelectors[0] = TRANSFER_FROM;
        tokenSelectors[1] = APPROVE;
        targets[3] = ISessionKeyValidator.TargetPermission(address(token), false, tokenSelectors);
        ISessionKeyValidator.TokenLimit[] memory tokens = new ISessionKeyValidator.TokenLimit[](1);
        tokens[0] = ISessionKeyValidator.TokenLimit(address(token), 1);

        vm.prank(ACCOUNT);
        validator.grantSession(
            ISessionKeyValidator.SessionGrant({
                key: KEY,
                validAfter: 0,
                validUntil: 0,
                revoker: address(0),
                spendCap: 1,
                gasCap: 1,
                paymaster: address(0),
                maxOps: 0,
                period: 0,
                periodCap: 0,
                targets: targets,
                tokens: tokens
            })
        );
    }

    // ---------------------------------------------------------------------------------------------
    // Checks
    // ---------------------------------------------------------------------------------------------

    /// @notice (a), (b) for gas and usage, (e): symbolic gas limits, fees, nonce, `paymasterAndData`
    /// (length 0, 19, 20, 52 or 53, symbolic content) against a symbolic session paymaster, and a
    /// symbolic `r ‖ s ‖ v`; the call is a plain transfer to the listed recipient.
    function check_gasCharge(
        uint256 nonce,
        uint120 preVerificationGas,
        uint120 verificationGasLimit,
        uint120 callGasLimit,
        uint128 maxPriorityFeePerGas,
        uint120 maxFeePerGas,
        uint8 paymasterShape,
        bytes32 userOpHash
    ) external {
        Before memory b = _symbolicState();
        bytes memory paymasterAndData =
            svm.createBytes(_pick(paymasterShape, _lengths5(0, 19, 20, 52, 53)), "paymasterAndData");
        PackedUserOperation memory op = _op(nonce, abi.encodeCall(IAgentAccount.execute, (RECIPIENT, 0, "")));
        op.signature = abi.encodePacked(bytes1(0x08), ACCOUNT, KEY, svm.createBytes(65, "rsv"));
        op.preVerificationGas = preVerificationGas;
        op.accountGasLimits = bytes32((uint256(verificationGasLimit) << 128) | callGasLimit);
        op.gasFees = bytes32((uint256(maxPriorityFeePerGas) << 128) | maxFeePerGas);
        op.paymasterAndData = paymasterAndData;

        vm.prank(ACCOUNT);
        validator.validateSessionUserOp(op, userOpHash);

        ISessionKeyValidator.Session memory s = validator.getSession(ACCOUNT, KEY);
        _assertCaps(b, s); // (b)
        assert(s.spent == b.spent); // no value moved
        uint256 charged;
        uint256 prefund;
        unchecked {
            charged = uint256(s.gasSpent) - b.gasSpent; // no wrap: _assertCaps checked gasSpent >= before
            // EntryPoint v0.7/v0.8 prefund; without a paymaster both paymaster gas limits are 0. Cannot
            // overflow: < 2^122 * 2^120.
            prefund = (uint256(preVerificationGas) + verificationGasLimit + callGasLimit + 0 + 0) * maxFeePerGas;
        }
        if (paymasterAndData.length == 0) {
            assert(charged >= prefund); // (a)
            assert(charged == prefund); // (a), exactly: nothing more either
        } else {
            // (a): nothing charged, and only through the session's own, nonzero, paymaster.
            assert(
                _all(
                    charged == 0,
                    paymasterAndData.length >= 20,
                    b.paymaster != address(0),
                    address(bytes20(paymasterAndData)) == b.paymaster
                )
            );
        }
        assert(uint192(nonce >> 64) == uint192(uint160(KEY))); // (e)
    }

    /// @notice (b), (c), (d), (e) for `execute(target, value, data)`: symbolic target, value and data
    /// (length 0, 3, 4, 36, 68, 100 or 132, symbolic content, so every selector and argument).
    function check_execute(address target, uint256 value, uint8 dataShape, uint256 nonce, bytes32 userOpHash) external {
        Before memory b = _symbolicState();
        bytes memory data = svm.createBytes(_pick(dataShape, _lengths7(0, 3, 4, 36, 68, 100, 132)), "data");
        PackedUserOperation memory op = _op(nonce, abi.encodeCall(IAgentAccount.execute, (target, value, data)));

        vm.prank(ACCOUNT);
        validator.validateSessionUserOp(op, userOpHash);

        ISessionKeyValidator.Session memory s = validator.getSession(ACCOUNT, KEY);
        ISessionKeyValidator.Permission memory p = validator.getPermission(ACCOUNT, KEY, address(token));
        _assertCaps(b, s); // (b)
        _assertToken(b, p); // (b)
        unchecked {
            // No wraps: the counters only grew (checked just above).
            assert(value <= uint256(s.spent) - b.spent); // (c)
            assert(_tokenOutflow(target, data) <= uint256(p.tokenSpent) - b.tokenSpent); // (d)
        }
        assert(uint192(nonce >> 64) == uint192(uint160(KEY))); // (e)
    }

    /// @notice (b), (c), (d), (e) for `executeBatch(calls)` with 0, 1 or 2 calls, each with a
    /// symbolic target and value and symbolic data of length 0 or 4: the native value summed over the
    /// calls (the batch keeps its own running total before one write of `spent`).
    function check_executeBatch(
        uint8 count,
        address target0,
        uint256 value0,
        uint8 dataShape0,
        address target1,
        uint256 value1,
        uint8 dataShape1,
        uint256 nonce,
        bytes32 userOpHash
    ) external {
        uint256 n = _pick(count, _lengths3(0, 1, 2));
        Call[] memory calls = new Call[](n);
        if (n > 0) calls[0] = Call(target0, value0, svm.createBytes(_pick(dataShape0, _lengths2(0, 4)), "data0"));
        if (n > 1) calls[1] = Call(target1, value1, svm.createBytes(_pick(dataShape1, _lengths2(0, 4)), "data1"));
        _checkBatch(calls, nonce, userOpHash);
    }

    /// @notice (b), (c), (d), (e) for `executeBatch` of two calls to the capped token with symbolic
    /// values and symbolic 68-byte data (every selector; `transfer`, `approve`, `increaseAllowance`
    /// counted): token amounts summed over the calls (each call writes `tokenSpent`).
    function check_executeBatchTokens(uint256 value0, uint256 value1, uint256 nonce, bytes32 userOpHash) external {
        Call[] memory calls = new Call[](2);
        calls[0] = Call(address(token), value0, svm.createBytes(68, "data0"));
        calls[1] = Call(address(token), value1, svm.createBytes(68, "data1"));
        _checkBatch(calls, nonce, userOpHash);
    }

    // ---------------------------------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------------------------------

    /// @dev Validates `executeBatch(calls)` from a symbolic state and asserts (b), (c), (d), (e).
    function _checkBatch(Call[] memory calls, uint256 nonce, bytes32 userOpHash) internal {
        Before memory b = _symbolicState();
        PackedUserOperation memory op = _op(nonce, abi.encodeCall(IAgentAccount.executeBatch, (calls)));

        vm.prank(ACCOUNT);
        validator.validateSessionUserOp(op, userOpHash);

        ISessionKeyValidator.Session memory s = validator.getSession(ACCOUNT, KEY);
        ISessionKeyValidator.Permission memory p = validator.getPermission(ACCOUNT, KEY, address(token));
        _assertCaps(b, s); // (b)
        _assertToken(b, p); // (b)
        unchecked {
            // Sums without wrapping: each term must fit in what the increase leaves after the others.
            uint256 valueLeft = uint256(s.spent) - b.spent;
            uint256 tokenLeft = uint256(p.tokenSpent) - b.tokenSpent;
            bool ok = true;
            for (uint256 i; i < calls.length; ++i) {
                uint256 value = calls[i].value;
                uint256 moved = _tokenOutflow(calls[i].target, calls[i].data);
                ok = _all(ok, value <= valueLeft, moved <= tokenLeft, true);
                valueLeft -= value;
                tokenLeft -= moved;
            }
            assert(ok); // (c), (d)
        }
        assert(uint192(nonce >> 64) == uint192(uint160(KEY))); // (e)
    }

    /// @dev Writes symbolic caps and counters satisfying the invariant into the session and the token
    /// permission (storage layout checked by reading them back through the validator's getters).
    function _symbolicState() internal returns (Before memory b) {
        b.spendCap = uint128(svm.createUint(128, "spendCap"));
        b.spent = uint128(svm.createUint(128, "spent"));
        b.gasCap = uint96(svm.createUint(96, "gasCap"));
        b.gasSpent = uint96(svm.createUint(96, "gasSpent"));
        b.maxOps = uint32(svm.createUint(32, "maxOps"));
        b.opsUsed = uint32(svm.createUint(32, "opsUsed"));
        b.paymaster = svm.createAddress("sessionPaymaster");
        b.tokenCap = uint112(svm.createUint(112, "tokenCap"));
        b.tokenSpent = uint112(svm.createUint(112, "tokenSpent"));
        vm.assume(b.spent <= b.spendCap);
        vm.assume(b.gasSpent <= b.gasCap);
        vm.assume(b.maxOps == 0 || b.opsUsed <= b.maxOps);
        vm.assume(b.tokenCap != 0 && b.tokenSpent <= b.tokenCap);

        // Session (5 slots): validAfter, validUntil, revoker | spendCap, spent |
        // gasCap, gasSpent, maxOps, opsUsed | paymaster, epoch (32 bits), active, period (32) | periodCap.
        // The session is not periodic (period 0), as granted.
        uint256 session = uint256(keccak256(abi.encode(ACCOUNT, keccak256(abi.encode(KEY, uint256(0))))));
        vm.store(address(validator), bytes32(session + 1), bytes32(uint256(b.spendCap) | (uint256(b.spent) << 128)));
        vm.store(
            address(validator),
            bytes32(session + 2),
            bytes32(
                uint256(b.gasCap) | (uint256(b.gasSpent) << 96) | (uint256(b.maxOps) << 192)
                    | (uint256(b.opsUsed) << 224)
            )
        );
        vm.store(
            address(validator),
            bytes32(session + 3),
            bytes32(uint256(uint160(b.paymaster)) | (uint256(1) << 160) | (uint256(1) << 192))
        );
        // Permission of the token (1 slot): allowed, anySelector, isToken, tokenCap (112), tokenSpent (112).
        uint256 permission = uint256(
            keccak256(
                abi.encode(
                    ACCOUNT,
                    keccak256(
                        abi.encode(
                            uint256(1), keccak256(abi.encode(KEY, keccak256(abi.encode(address(token), uint256(1)))))
                        )
                    )
                )
            )
        );
        vm.store(
            address(validator),
            bytes32(permission),
            bytes32(
                uint256(1) | (uint256(0) << 8) | (uint256(1) << 16) | (uint256(b.tokenCap) << 24)
                    | (uint256(b.tokenSpent) << 136)
            )
        );

        ISessionKeyValidator.Session memory s = validator.getSession(ACCOUNT, KEY);
        assert(s.spendCap == b.spendCap && s.spent == b.spent);
        assert(s.gasCap == b.gasCap && s.gasSpent == b.gasSpent && s.maxOps == b.maxOps && s.opsUsed == b.opsUsed);
        assert(s.paymaster == b.paymaster && s.epoch == 1 && s.active && s.period == 0 && s.periodCap == 0);
        assert(s.validAfter == 0 && s.validUntil == 0 && s.revoker == address(0));
        ISessionKeyValidator.Permission memory p = validator.getPermission(ACCOUNT, KEY, address(token));
        assert(p.allowed && !p.anySelector && p.isToken && p.tokenCap == b.tokenCap && p.tokenSpent == b.tokenSpent);
    }

    /// @dev (b): the counters stay within the caps, which do not change, and only grow; one more
    /// operation is counted.
    function _assertCaps(Before memory b, ISessionKeyValidator.Session memory s) internal pure {
        assert(_all(s.spendCap == b.spendCap, s.spent <= s.spendCap, s.spent >= b.spent, true));
        assert(_all(s.gasCap == b.gasCap, s.gasSpent <= s.gasCap, s.gasSpent >= b.gasSpent, true));
        // opsUsed cannot wrap: b.opsUsed + 1 is computed in 256 bits.
        bool withinMaxOps = _either(s.maxOps == 0, s.opsUsed <= s.maxOps);
        assert(_all(s.maxOps == b.maxOps, s.opsUsed == uint256(b.opsUsed) + 1, withinMaxOps, true));
    }

    /// @dev (b) for the token: its counter stays within its cap, which does not change, and only grows.
    function _assertToken(Before memory b, ISessionKeyValidator.Permission memory p) internal pure {
        assert(_all(p.tokenCap == b.tokenCap, p.tokenSpent <= p.tokenCap, p.tokenSpent >= b.tokenSpent, p.isToken));
    }

    /// @dev `a && b && c && d` without branches: one solver query per path instead of one per term.
    function _all(bool a, bool b, bool c, bool d) internal pure returns (bool r) {
        assembly ("memory-safe") {
            r := and(and(a, b), and(c, d))
        }
    }

    /// @dev `a || b` without branches.
    function _either(bool a, bool b) internal pure returns (bool r) {
        assembly ("memory-safe") {
            r := or(a, b)
        }
    }

    /// @dev What a call moves out of the account, or lets others move, of the capped token (ERC-20
    /// semantics, written independently of the validator): the amount of `transfer`, `approve` and
    /// `increaseAllowance`, and of `transferFrom` when `from` is the account; 0 for anything else,
    /// including calls too short for their arguments (the token reverts them). Branch-free apart from
    /// the (concrete) length tests.
    function _tokenOutflow(address target, bytes memory data) internal view returns (uint256 amount) {
        uint256 length = data.length;
        if (length < 4) return 0;
        uint256 amount36 = length >= 68 ? _word(data, 36) : 0;
        uint256 from4 = length >= 100 ? _word(data, 4) : 0;
        uint256 amount68 = length >= 100 ? _word(data, 68) : 0;
        address capped = address(token);
        address account = ACCOUNT;
        assembly ("memory-safe") {
            let selector := shr(224, mload(add(data, 0x20)))
            let moves := or(or(eq(selector, 0xa9059cbb), eq(selector, 0x095ea7b3)), eq(selector, 0x39509351))
            let pulls := and(eq(selector, 0x23b872dd), eq(from4, account))
            let counted := and(eq(target, capped), or(moves, pulls))
            amount := and(sub(0, counted), or(and(sub(0, moves), amount36), and(sub(0, pulls), amount68)))
        }
    }

    function _word(bytes memory data, uint256 offset) internal pure returns (uint256 word) {
        assembly ("memory-safe") {
            word := mload(add(add(data, 0x20), offset))
        }
    }

    /// @dev Forks on a symbolic choice: one path per option (none when `choice` is out of range).
    /// Unrolled by hand: a loop would hit halmos's loop bound on its symbolic branch.
    function _pick(uint8 choice, uint256[] memory options) internal pure returns (uint256) {
        uint256 n = options.length;
        if (choice == 0 && n > 0) return options[0];
        if (choice == 1 && n > 1) return options[1];
        if (choice == 2 && n > 2) return options[2];
        if (choice == 3 && n > 3) return options[3];
        if (choice == 4 && n > 4) return options[4];
        if (choice == 5 && n > 5) return options[5];
        if (choice == 6 && n > 6) return options[6];
        revert();
    }

    function _lengths2(uint256 a, uint256 b) internal pure returns (uint256[] memory l) {
        l = new uint256[](2);
        (l[0], l[1]) = (a, b);
    }

    function _lengths3(uint256 a, uint256 b, uint256 c) internal pure returns (uint256[] memory l) {
        l = new uint256[](3);
        (l[0], l[1], l[2]) = (a, b, c);
    }

    function _lengths5(uint256 a, uint256 b, uint256 c, uint256 d, uint256 e)
        internal
        pure
        returns (uint256[] memory l)
    {
        l = new uint256[](5);
        (l[0], l[1], l[2], l[3], l[4]) = (a, b, c, d, e);
    }

    function _lengths7(uint256 a, uint256 b, uint256 c, uint256 d, uint256 e, uint256 f, uint256 g)
        internal
        pure
        returns (uint256[] memory l)
    {
        l = new uint256[](7);
        (l[0], l[1], l[2], l[3], l[4], l[5], l[6]) = (a, b, c, d, e, f, g);
    }

    /// @dev A session operation of ACCOUNT with the given (symbolic) nonce, in the key's lane or not.
    function _op(uint256 nonce, bytes memory callData) internal pure returns (PackedUserOperation memory op) {
        op.sender = ACCOUNT;
        op.nonce = nonce;
        op.callData = callData;
        // A well-formed stub whose high `s` makes the recovery stop before ecrecover, which saves the
        // solver a three-way split per path. The signature check comes after all the accounting and
        // reads nothing it writes; check_gasCharge runs with a symbolic `r ‖ s ‖ v`.
        op.signature =
            abi.encodePacked(bytes1(0x08), ACCOUNT, KEY, bytes32(uint256(1)), bytes32(type(uint256).max), uint8(27));
    }
}
