// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {CommonBase} from "forge-std/Base.sol";
import {StdCheats} from "forge-std/StdCheats.sol";
import {StdInvariant} from "forge-std/StdInvariant.sol";
import {StdUtils} from "forge-std/StdUtils.sol";
import {Vm} from "forge-std/Vm.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {IEntryPoint, TestBase} from "../utils/TestBase.sol";
import {Recorder, SponsorPaymaster} from "../utils/Mocks.sol";
import {AgentAccount} from "../../AgentAccount.sol";
import {AgentAccountFactory} from "../../AgentAccountFactory.sol";
import {SessionKeyValidator} from "../../SessionKeyValidator.sol";
import {PackedUserOperation} from "../../interfaces/IERC4337.sol";
import {Call, IAgentAccount} from "../../interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "../../interfaces/ISessionKeyValidator.sol";
import {TestToken} from "../../testing/TestToken.sol";

/// @notice The agent, as an attacker: it holds a session key and signs whatever it likes (gas fields
/// and fees up to uint120 and the account's funds, its own beneficiary, single calls and batches,
/// counted and uncounted token calls, unlisted targets, the EntryPoint, the validator, the account,
/// other nonce lanes, any paymasterAndData, bad signatures, any period index: the current period, the
/// previous, the next, any 32-bit one) and calls handleOps itself, while time passes (a little, to a
/// period's first or last second, or several periods). It also makes honest, in-policy operations, so
/// that successful paths are exercised, and plays accomplices that pull what the account approved to them.
contract AgentHandler is CommonBase, StdCheats, StdUtils {
    struct Env {
        IEntryPoint ep;
        AgentAccount account;
        SessionKeyValidator validator;
        TestToken token;
        Recorder rec;
        SponsorPaymaster paymaster;
        SponsorPaymaster otherPaymaster;
        address target;
        address recipient;
        address agent;
        uint256 agentKey;
        address agent2;
    }

    bytes4 internal constant INCREASE_ALLOWANCE = 0x39509351;

    IEntryPoint internal immutable ep;
    AgentAccount internal immutable account;
    SessionKeyValidator internal immutable validator;
    TestToken internal immutable token;
    Recorder internal immutable rec;
    SponsorPaymaster internal immutable paymaster;
    SponsorPaymaster internal immutable otherPaymaster;
    address internal immutable target;
    address internal immutable recipient;
    address internal immutable agent;
    uint256 internal immutable agentKey;
    address internal immutable agent2;

    /// @notice Ghosts: operations of the account that landed and executed successfully, that were
    /// included (UserOperationEvent), bundles that reverted, handler calls.
    uint256 public successfulOps;
    uint256 public includedOps;
    uint256 public revertedBundles;
    uint256 public calls;

    /// @notice Every address the account was ever asked to approve (ghost, for the token invariant).
    address[] public spenders;
    mapping(address => bool) internal _isSpender;

    /// @notice The handler's clock: every call first warps to it (time only moves forward, by {warp}).
    uint256 public time;

    /// @notice Every period index an operation on the agent's lane named (ghost, for the period invariant).
    uint256[] public periods;
    mapping(uint256 => bool) internal _isPeriod;

    /// @notice Operations on the agent's lane that landed outside their period's window (must stay 0).
    uint256 public windowViolations;

    constructor(Env memory env) {
        ep = env.ep;
        account = env.account;
        validator = env.validator;
        token = env.token;
        rec = env.rec;
        paymaster = env.paymaster;
        otherPaymaster = env.otherPaymaster;
        target = env.target;
        recipient = env.recipient;
        agent = env.agent;
        agentKey = env.agentKey;
        agent2 = env.agent2;
        _noteSpender(address(env.account));
        time = block.timestamp;
    }

    function spendersLength() external view returns (uint256) {
        return spenders.length;
    }

    function periodsLength() external view returns (uint256) {
        return periods.length;
    }

    // ------------------------------------------------------------------ time

    /// @notice Time passes: up to a quarter period, to the next period's first second or this period's
    /// last, or up to three periods (a session without a period moves in hours).
    function warp(uint256 seed) external {
        _clock();
        calls++;
        seed = _mix(seed, 7);
        uint256 unit = _unit();
        uint256 next = _periodStart(_currentPeriod() + 1);
        uint256 m = seed % 4;
        if (m == 0) time += (seed >> 8) % (unit / 4 + 1);
        if (m == 1) time = next;
        if (m == 2) time = next - 1;
        if (m == 3) time += (seed >> 8) % (3 * unit + 1);
        vm.warp(time);
    }

    /// @dev Forge does not carry a warp from one handler call to the next in every version: re-warp.
    function _clock() internal {
        vm.warp(time);
    }

    /// @dev An honest agent waits out the first second of a period: EntryPoint v0.8 takes validAfter as
    /// exclusive, so no period's operation is due then (on v0.7 the new period's is). The rogue
    /// operations do not wait.
    function _pastPeriodStart() internal {
        ISessionKeyValidator.Session memory s = validator.getSession(address(account), agent);
        if (s.period != 0 && time >= s.validAfter && (time - s.validAfter) % s.period == 0) vm.warp(++time);
    }

    /// @dev The session's period, or an hour for a session without one (for {warp} only).
    function _unit() internal view returns (uint256) {
        uint256 period = validator.getSession(address(account), agent).period;
        return period == 0 ? 1 hours : period;
    }

    function _periodStart(uint256 p) internal view returns (uint256) {
        return validator.getSession(address(account), agent).validAfter + p * _unit();
    }

    /// @dev The period containing `time` (0 for a session without a period).
    function _currentPeriod() internal view returns (uint256) {
        ISessionKeyValidator.Session memory s = validator.getSession(address(account), agent);
        if (s.period == 0 || time < s.validAfter) return 0;
        return (time - s.validAfter) / s.period;
    }

    /// @dev The period an operation names: mostly the current one; else the previous one, the next
    /// one, 0, or any 32-bit index (a session without a period accepts 0 only).
    function _period(uint256 seed) internal view returns (uint256) {
        uint256 current = _currentPeriod();
        uint256 m = seed % 8;
        if (m < 5) return current;
        if (m == 5) return current == 0 ? 0 : current - 1;
        if (m == 6) return current + 1;
        return (seed >> 8) % 2 == 0 ? 0 : uint32(seed >> 16);
    }

    /// @dev The next nonce of the agent's lane for period `p` (noted for the period invariant).
    function _agentNonce(uint256 p) internal returns (uint256) {
        if (!_isPeriod[p]) {
            _isPeriod[p] = true;
            periods.push(p);
        }
        return ep.getNonce(address(account), _lane(agent, p));
    }

    // ------------------------------------------------------------------ honest operations

    /// @notice An in-policy operation paid by the account (small fees, its own lane, a listed call).
    function honestOp(uint256 seed) external {
        PackedUserOperation memory op = _honest(seed);
        _sign(op, false);
        _send(_one(op), agent);
    }

    /// @notice An in-policy operation paid by the session's paymaster (kept funded by its operator).
    function honestSponsoredOp(uint256 seed) external {
        PackedUserOperation memory op = _honest(seed);
        op.paymasterAndData = abi.encodePacked(address(paymaster), uint128(200_000), uint128(50_000));
        _topUp(paymaster);
        _sign(op, false);
        _send(_one(op), agent);
    }

    /// @notice The plainest operation the session allows: a zero-value transfer to the listed target in
    /// the current period, paid by the session's paymaster. Called after each run (not by the fuzzer).
    function sponsoredPing() external {
        _clock();
        _pastPeriodStart();
        PackedUserOperation memory op = _newOp(_agentNonce(_currentPeriod()), _execute(target, 0, ""));
        op.preVerificationGas = 50_000;
        op.accountGasLimits = bytes32((uint256(400_000) << 128) | 200_000);
        op.gasFees = bytes32((uint256(1 gwei) << 128) | 1 gwei);
        op.paymasterAndData = abi.encodePacked(address(paymaster), uint128(200_000), uint128(50_000));
        _topUp(paymaster);
        _sign(op, false);
        _send(_one(op), agent);
    }

    function _honest(uint256 seed) internal returns (PackedUserOperation memory op) {
        _clock();
        _pastPeriodStart();
        calls++;
        seed = _mix(seed, 6);
        uint256 kind = seed % 3;
        bytes memory callData;
        if (kind == 0) callData = _execute(target, seed % 1e9, "");
        if (kind == 1) callData = _execute(address(rec), 0, abi.encodeCall(Recorder.hit, (1)));
        if (kind == 2) {
            callData = _execute(address(token), 0, abi.encodeCall(IERC20.transfer, (recipient, seed % 1e18)));
        }
        op = _newOp(_agentNonce(_currentPeriod()), callData);
        op.preVerificationGas = 50_000;
        op.accountGasLimits = bytes32((uint256(400_000) << 128) | 200_000);
        op.gasFees = bytes32((uint256(1 gwei) << 128) | 1 gwei);
    }

    // ------------------------------------------------------------------ rogue operations

    /// @notice One operation with everything chosen by the fuzzer.
    function rogueOp(
        uint256 gasSeed,
        uint256 callSeed,
        uint256 laneSeed,
        uint256 pmSeed,
        address anyAddr,
        bytes calldata anyData
    ) external {
        _clock();
        calls++;
        (gasSeed, callSeed, laneSeed, pmSeed) =
        (_mix(gasSeed, 1), _mix(callSeed, 2), _mix(laneSeed, 3), _mix(pmSeed, 4));
        _baseFee(gasSeed);
        PackedUserOperation memory op = _newOp(_nonce(laneSeed), _callData(callSeed, anyAddr, anyData));
        _gas(op, gasSeed);
        _paymasterAndData(op, pmSeed);
        _sign(op, laneSeed % 16 == 15);
        _send(_one(op), _beneficiary(anyAddr));
    }

    /// @notice Two operations of the agent's lane for one period in one bundle (consecutive sequence numbers).
    function rogueBundle(uint256 gasSeed, uint256 callSeed, uint256 pmSeed, address anyAddr, bytes calldata anyData)
        external
    {
        _clock();
        calls++;
        (gasSeed, callSeed, pmSeed) = (_mix(gasSeed, 1), _mix(callSeed, 2), _mix(pmSeed, 4));
        _baseFee(gasSeed);
        uint256 nonce = _agentNonce(_period(_mix(callSeed, 8)));
        PackedUserOperation[] memory ops = new PackedUserOperation[](2);
        for (uint256 i; i < 2; ++i) {
            uint256 s = uint256(keccak256(abi.encode(callSeed, i)));
            ops[i] = _newOp(nonce + i, _callData(s, anyAddr, anyData));
            _gas(ops[i], uint256(keccak256(abi.encode(gasSeed, i))));
            _paymasterAndData(ops[i], uint256(keccak256(abi.encode(pmSeed, i))));
            _sign(ops[i], false);
        }
        _send(ops, _beneficiary(anyAddr));
    }

    /// @notice An operation that reaches for exactly what is left (or one more): the remaining native
    /// budget (the lower of the session's and the period's), the remaining token cap (transfer, approve
    /// or transferFrom(account, …), or split over a batch), with a fee that makes the maximum cost the
    /// remaining gas budget (or one step more).
    function greedyOp(uint256 seed, address anyAddr) external {
        _clock();
        calls++;
        seed = _mix(seed, 5);
        _baseFee(seed);
        ISessionKeyValidator.Session memory s = validator.getSession(address(account), agent);
        uint256 period = _period(_mix(seed, 9));
        uint256 delta = seed % 3; // 0: one less, 1: exactly, 2: one more
        uint256 spend = _nativeLeft(period) + delta;
        spend = spend == 0 ? 0 : spend - 1;
        ISessionKeyValidator.Permission memory p = validator.getPermission(address(account), agent, address(token));
        uint256 tokens = uint256(p.tokenCap - p.tokenSpent) + delta;
        tokens = tokens == 0 ? 0 : tokens - 1;
        address spender = _pick(seed >> 8, anyAddr);
        bytes memory callData;
        uint256 kind = (seed >> 4) % 6;
        if (kind == 0) callData = _execute(target, spend, "");
        if (kind == 1) callData = _execute(address(token), 0, abi.encodeCall(IERC20.transfer, (spender, tokens)));
        if (kind == 2) {
            _noteSpender(spender);
            callData = _execute(address(token), 0, abi.encodeCall(IERC20.approve, (spender, tokens)));
        }
        if (kind == 3) {
            callData =
                _execute(address(token), 0, abi.encodeCall(IERC20.transferFrom, (address(account), spender, tokens)));
        }
        if (kind == 4) {
            Call[] memory batch = new Call[](3);
            batch[0] = Call(address(token), 0, abi.encodeCall(IERC20.transfer, (spender, tokens / 2)));
            batch[1] = Call(address(rec), spend / 2, abi.encodeCall(Recorder.hit, (1)));
            batch[2] = Call(address(token), 0, abi.encodeCall(IERC20.transfer, (recipient, tokens - tokens / 2)));
            callData = abi.encodeCall(IAgentAccount.executeBatch, (batch));
        }
        if (kind == 5) {
            // What is left, twice in one batch.
            Call[] memory batch = new Call[](2);
            batch[0] = Call(target, spend, "");
            batch[1] = Call(address(rec), spend, abi.encodeCall(Recorder.hit, (2)));
            callData = abi.encodeCall(IAgentAccount.executeBatch, (batch));
        }
        PackedUserOperation memory op = _newOp(_agentNonce(period), callData);
        uint256 totalGas = 50_000 + 400_000 + 300_000;
        uint256 fee = (uint256(s.gasCap - s.gasSpent) / totalGas) + (seed >> 12) % 2;
        op.preVerificationGas = 50_000;
        op.accountGasLimits = bytes32((uint256(400_000) << 128) | 300_000);
        op.gasFees = bytes32((fee << 128) | fee);
        _sign(op, false);
        _send(_one(op), _beneficiary(anyAddr));
    }

    /// @dev What is left of the native budget for an operation of period `p`: the session's remainder,
    /// and for a periodic session at most the period's.
    function _nativeLeft(uint256 p) internal view returns (uint256 left) {
        ISessionKeyValidator.Session memory s = validator.getSession(address(account), agent);
        left = s.spendCap - s.spent;
        if (s.period != 0) {
            uint256 periodLeft = s.periodCap - validator.periodSpent(address(account), agent, p);
            if (periodLeft < left) left = periodLeft;
        }
    }

    /// @notice An accomplice pulls part of what the account approved to it.
    function pull(uint256 index, uint256 amountSeed) external {
        _clock();
        calls++;
        address spender = spenders[index % spenders.length];
        if (spender == address(account)) return; // only the account acts as the account
        uint256 allowance = token.allowance(address(account), spender);
        uint256 balance = token.balanceOf(address(account));
        uint256 amount = amountSeed % (allowance + 1);
        if (amount > balance) amount = balance;
        if (amount == 0) return;
        vm.prank(spender);
        token.transferFrom(address(account), spender, amount);
    }

    // ------------------------------------------------------------------ builders

    function _callData(uint256 seed, address anyAddr, bytes calldata anyData) internal returns (bytes memory) {
        uint256 shape = seed % 10;
        if (shape < 6) {
            (address t, uint256 v, bytes memory d) = _call(seed >> 8, anyAddr, anyData);
            return _execute(t, v, d);
        }
        if (shape < 9) {
            Call[] memory batch = new Call[](1 + (seed >> 4) % 4);
            for (uint256 i; i < batch.length; ++i) {
                (address t, uint256 v, bytes memory d) =
                    _call(uint256(keccak256(abi.encode(seed, i))), anyAddr, anyData);
                batch[i] = Call(t, v, d);
            }
            return abi.encodeCall(IAgentAccount.executeBatch, (batch));
        }
        // Raw bytes, never an execute or executeBatch (those are built above, so their approvals are seen).
        bytes memory raw = anyData;
        if (raw.length >= 4) {
            bytes4 sel = bytes4(raw);
            if (sel == IAgentAccount.execute.selector || sel == IAgentAccount.executeBatch.selector) raw[0] ^= 0xff;
        }
        return raw;
    }

    /// @dev One call of the account: listed and unlisted targets and functions, counted token calls
    /// with small to huge amounts, forbidden targets, malformed token calls.
    function _call(uint256 seed, address anyAddr, bytes calldata anyData)
        internal
        returns (address t, uint256 v, bytes memory d)
    {
        // Kinds 0-13; the common shapes (plain, listed function, counted token calls) twice as likely.
        uint256 kind = seed % 20;
        if (kind >= 14) kind = [uint256(0), 1, 3, 4, 5, 6][kind - 14];
        uint256 r = seed >> 8;
        v = _value(r);
        uint256 amount = _amount(r >> 64);
        address spender = _pick(r >> 128, anyAddr);
        if (kind == 0) return (target, v, "");
        if (kind == 1) return (address(rec), v, abi.encodeCall(Recorder.hit, (r % 12)));
        if (kind == 2) return (address(rec), 0, abi.encodeCall(Recorder.other, ()));
        if (kind == 3) return (address(token), 0, abi.encodeCall(IERC20.transfer, (spender, amount)));
        if (kind == 4) d = abi.encodeCall(IERC20.approve, (spender, amount));
        if (kind == 5) {
            return (address(token), 0, abi.encodeCall(IERC20.transferFrom, (address(account), spender, amount)));
        }
        if (kind == 6) d = abi.encodeWithSelector(INCREASE_ALLOWANCE, spender, amount);
        if (kind == 7) return (address(token), 0, abi.encodeCall(TestToken.mint, (spender, amount)));
        if (kind == 8) {
            return (address(token), 0, abi.encodeCall(IERC20.transferFrom, (spender, address(account), amount)));
        }
        if (kind == 9) {
            _noteApproval(anyAddr, anyData);
            return (anyAddr, v, anyData);
        }
        if (kind == 10) return (address(ep), 0, abi.encodeWithSignature("withdrawTo(address,uint256)", agent, v));
        if (kind == 11) {
            ISessionKeyValidator.SessionGrant memory g;
            (g.key, g.spendCap, g.gasCap) = (agent, type(uint128).max, type(uint96).max);
            return (address(validator), 0, abi.encodeCall(ISessionKeyValidator.grantSession, (g)));
        }
        if (kind == 12) return (address(account), v, abi.encodeCall(IAgentAccount.execute, (agent, v, "")));
        if (kind == 13) {
            // A counted call cut short (a malformed call must never pass uncounted).
            bytes memory full = abi.encodeCall(IERC20.transfer, (spender, amount));
            d = new bytes(4 + r % 64);
            for (uint256 i; i < d.length; ++i) {
                d[i] = full[i];
            }
            return (address(token), 0, d);
        }
        // kinds 4 and 6: approvals.
        _noteSpender(spender);
        return (address(token), 0, d);
    }

    function _value(uint256 r) internal pure returns (uint256) {
        uint256 m = r % 5;
        if (m == 0) return 0;
        if (m == 1) return (r >> 8) % 0.01 ether;
        if (m == 2) return (r >> 8) % 0.1 ether;
        if (m == 3) return 0.05 ether; // the spend cap exactly
        return r >> 8;
    }

    function _amount(uint256 r) internal pure returns (uint256) {
        uint256 m = r % 5;
        if (m == 0) return (r >> 8) % 10e18;
        if (m == 1) return (r >> 8) % 500e18;
        if (m == 2) return 1000e18; // the token cap exactly
        if (m == 3) return (r >> 8) % 2000e18;
        return r >> 8;
    }

    function _pick(uint256 r, address anyAddr) internal view returns (address) {
        uint256 m = r % 5;
        if (m == 0) return agent;
        if (m == 1) return recipient;
        if (m == 2) return address(account);
        if (m == 3) return address(0xBEEF);
        return anyAddr;
    }

    /// @dev The nonce: mostly the agent's lane for some period (see {_period}); else the owner's lane,
    /// another agent's (with that period's index), a random key, or the agent's lane with a wrong
    /// sequence number.
    function _nonce(uint256 seed) internal returns (uint256) {
        uint256 m = seed % 16;
        uint256 p = _period(seed >> 16);
        if (m < 12) return _agentNonce(p);
        if (m == 12) return ep.getNonce(address(account), 0);
        if (m == 13) return ep.getNonce(address(account), _lane(agent2, (seed >> 8) % 2 == 0 ? 0 : p));
        if (m == 14) return uint256(keccak256(abi.encode(seed)));
        return _agentNonce(p) + 1 + (seed >> 8) % 3;
    }

    /// @dev Gas fields the EntryPoint accepts (each within uint120): sane; extreme but payable from the
    /// account's funds; at the edge of the remaining gas budget; free; a low priority fee under a high
    /// max fee (the EntryPoint's price then depends on the base fee); anything.
    function _gas(PackedUserOperation memory op, uint256 seed) internal view {
        // Modes 0-5 weighted 6:3:4:2:3:2.
        uint256 m = seed % 20;
        m = m < 6 ? 0 : m < 9 ? 1 : m < 13 ? 2 : m < 15 ? 3 : m < 18 ? 4 : 5;
        uint256 r = uint256(keccak256(abi.encode(seed)));
        uint256 pvg;
        uint256 vgl;
        uint256 cgl;
        uint256 fee;
        uint256 prio;
        ISessionKeyValidator.Session memory s = validator.getSession(address(account), agent);
        uint256 budget = s.gasCap - s.gasSpent;
        if (m == 0) {
            (pvg, vgl, cgl) = (r % 10_000_000, 100_000 + (r >> 32) % 900_000, (r >> 64) % 1_000_000);
            fee = (r >> 96) % 2000 gwei;
            prio = (r >> 160) % (fee + 1);
        } else if (m == 1) {
            (pvg, vgl, cgl) = (r % (1 << 120), 100_000 + (r >> 120) % 900_000, (r >> 150) % 1_000_000);
            uint256 funds = address(account).balance + ep.balanceOf(address(account));
            fee = (r >> 200) % (funds / (pvg + vgl + cgl) + 1);
            prio = fee;
        } else if (m == 2) {
            (pvg, vgl, cgl) = (r % 2_000_000, 300_000, 200_000);
            uint256 q = budget / (pvg + vgl + cgl);
            fee = q + (r >> 100) % 3;
            fee = fee == 0 ? 0 : fee - 1; // q - 1, q or q + 1
            prio = fee;
        } else if (m == 3) {
            (pvg, vgl, cgl) = (r % 10_000_000, 100_000 + (r >> 32) % 900_000, (r >> 64) % 1_000_000);
        } else if (m == 4) {
            (pvg, vgl, cgl) = (r % 300_000, 200_000 + (r >> 32) % 300_000, (r >> 64) % 300_000);
            fee = (r >> 96) % (budget / (pvg + vgl + cgl) + 1);
            prio = (r >> 160) % (fee / 10 + 1);
        } else {
            uint256 max = (1 << 120) - 1;
            (pvg, vgl, cgl) = (r & max, (r >> 120) % 2_000_000, (r >> 140) & max);
            fee = uint256(keccak256(abi.encode(r))) & max;
            prio = (fee >> 7) & max;
        }
        op.preVerificationGas = pvg;
        op.accountGasLimits = bytes32((vgl << 128) | cgl);
        op.gasFees = bytes32((prio << 128) | fee);
    }

    /// @dev paymasterAndData: mostly none; the session's paymaster, another paymaster, or random bytes.
    function _paymasterAndData(PackedUserOperation memory op, uint256 seed) internal view {
        uint256 m = seed % 16;
        if (m < 11) return;
        uint128 pmVerification = uint128((seed >> 8) % 500_000);
        uint128 pmPostOp = uint128((seed >> 40) % 200_000);
        if (m < 13) {
            op.paymasterAndData = abi.encodePacked(address(paymaster), pmVerification, pmPostOp);
        } else if (m == 13) {
            op.paymasterAndData = abi.encodePacked(address(otherPaymaster), pmVerification, pmPostOp);
        } else {
            bytes memory b = new bytes((seed >> 80) % 80);
            bytes32 fill = keccak256(abi.encode(seed));
            for (uint256 i; i < b.length; ++i) {
                b[i] = fill[i % 32];
            }
            op.paymasterAndData = b;
        }
    }

    /// @dev Spreads a fuzzed seed over 256 bits: the fuzzer favours small and dictionary values, and
    /// the builders read different bit ranges of a seed for different choices.
    function _mix(uint256 seed, uint256 salt) internal pure returns (uint256) {
        return uint256(keccak256(abi.encode(seed, salt)));
    }

    /// @dev The chain's base fee (not the agent's choice): 0, or up to 200 gwei, so that the price the
    /// EntryPoint charges, min(maxFeePerGas, maxPriorityFeePerGas + basefee), may exceed the priority fee.
    function _baseFee(uint256 seed) internal {
        uint256 r = uint256(keccak256(abi.encode(seed, "basefee")));
        vm.fee(r % 2 == 0 ? 0 : (r >> 8) % 200 gwei);
    }

    function _beneficiary(address anyAddr) internal view returns (address) {
        // Never the account itself: that would be an inflow and hide an outflow.
        return anyAddr == address(0) || anyAddr == address(account) ? agent : anyAddr;
    }

    function _newOp(uint256 nonce, bytes memory callData) internal view returns (PackedUserOperation memory op) {
        op.sender = address(account);
        op.nonce = nonce;
        op.callData = callData;
    }

    function _sign(PackedUserOperation memory op, bool stub) internal view {
        if (stub) {
            op.signature = abi.encodePacked(
                bytes1(0x08), address(account), agent, bytes32(uint256(1)), bytes32(uint256(1)), uint8(27)
            );
            return;
        }
        bytes32 digest = keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", ep.getUserOpHash(op)));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(agentKey, digest);
        op.signature = abi.encodePacked(bytes1(0x08), address(account), agent, r, s, v);
    }

    /// @dev The agent submits the bundle itself; the ghosts count what landed.
    function _send(PackedUserOperation[] memory ops, address beneficiary) internal {
        vm.recordLogs();
        vm.prank(agent, agent);
        try ep.handleOps(ops, payable(beneficiary)) {
            Vm.Log[] memory logs = vm.getRecordedLogs();
            for (uint256 i; i < logs.length; ++i) {
                if (
                    logs[i].emitter == address(ep) && logs[i].topics[0] == IEntryPoint.UserOperationEvent.selector
                        && logs[i].topics[2] == bytes32(uint256(uint160(address(account))))
                ) {
                    includedOps++;
                    (uint256 nonce, bool success,,) = abi.decode(logs[i].data, (uint256, bool, uint256, uint256));
                    if (success) successfulOps++;
                    _checkWindow(nonce);
                }
            }
        } catch {
            vm.getRecordedLogs();
            revertedBundles++;
        }
    }

    /// @dev Counts an included operation on the agent's lane whose period's window does not contain
    /// the block's time (or that names a period although the session has none).
    function _checkWindow(uint256 nonce) internal {
        if (address(uint160(nonce >> 64)) != agent) return;
        ISessionKeyValidator.Session memory s = validator.getSession(address(account), agent);
        uint256 p = nonce >> 224;
        if (s.period == 0) {
            if (p != 0) windowViolations++;
            return;
        }
        uint256 start = s.validAfter + p * s.period;
        uint256 end = start + s.period - 1;
        if (s.validUntil != 0 && end > s.validUntil) end = s.validUntil;
        if (block.timestamp < start || block.timestamp > end) windowViolations++;
    }

    function _topUp(SponsorPaymaster pm) internal {
        if (ep.balanceOf(address(pm)) < 5 ether) {
            vm.deal(address(this), 10 ether);
            ep.depositTo{value: 10 ether}(address(pm));
        }
    }

    function _noteApproval(address t, bytes calldata data) internal {
        if (t != address(token) || data.length < 36) return;
        bytes4 sel = bytes4(data[:4]);
        if (sel == IERC20.approve.selector || sel == INCREASE_ALLOWANCE) {
            _noteSpender(address(uint160(uint256(bytes32(data[4:36])))));
        }
    }

    function _noteSpender(address spender) internal {
        if (!_isSpender[spender]) {
            _isSpender[spender] = true;
            spenders.push(spender);
        }
    }

    /// @dev The nonce key of `key`'s lane for period `p`.
    function _lane(address key, uint256 p) internal pure returns (uint192) {
        return uint192((p << 160) | uint160(key));
    }

    function _execute(address t, uint256 v, bytes memory d) internal pure returns (bytes memory) {
        return abi.encodeCall(IAgentAccount.execute, (t, v, d));
    }

    function _one(PackedUserOperation memory op) internal pure returns (PackedUserOperation[] memory ops) {
        ops = new PackedUserOperation[](1);
        ops[0] = op;
    }
}

/// @notice Whatever the agent signs and submits, its account never loses more than its session grants.
/// Run on the canonical EntryPoint v0.7 and v0.8, with a session without a period and with a periodic
/// one (30 days of hours, 0.02 ETH per hour, under the 0.05 ETH spend cap), by the four contracts at the end.
abstract contract SessionInvariantTest is TestBase {
    IEntryPoint internal ep;
    AgentAccount internal account;
    TestToken internal token;
    Recorder internal rec;
    SponsorPaymaster internal paymaster;
    SponsorPaymaster internal otherPaymaster;
    AgentHandler internal handler;
    address internal target = makeAddr("target");
    address internal agent2;

    uint128 internal constant SPEND_CAP = 0.05 ether;
    uint96 internal constant GAS_CAP = 0.02 ether;
    uint112 internal constant TOKEN_CAP = 1000e18;
    /// @dev The periodic session: from T0 for 30 days, PERIOD_CAP per PERIOD.
    uint48 internal constant T0 = 1_000;
    uint32 internal constant PERIOD = 1 hours;
    uint128 internal constant PERIOD_CAP = 0.02 ether;

    uint256 internal startHoldings;
    uint256 internal startTokens;
    uint256 internal ownerNonce;
    uint256 internal agent2Nonce;
    bytes32 internal agent2Session;

    function _v08() internal pure virtual returns (bool);

    function _periodic() internal pure virtual returns (bool);

    function setUp() public {
        _setUpKeys();
        vm.warp(T0 + 1);
        (agent2,) = makeAddrAndKey("agent2");
        ep = _deployEntryPoint(_v08());
        validator = new SessionKeyValidator();
        factory = new AgentAccountFactory(address(ep), validator);
        account = factory.createAccount(owner, 0);
        vm.deal(address(account), 10 ether);
        ep.depositTo{value: 1 ether}(address(account));
        token = new TestToken();
        token.mint(address(account), 1_000_000e18);
        rec = new Recorder();
        paymaster = new SponsorPaymaster();
        otherPaymaster = new SponsorPaymaster();
        ep.depositTo{value: 100 ether}(address(paymaster));
        ep.depositTo{value: 100 ether}(address(otherPaymaster));

        ISessionKeyValidator.SessionGrant memory g = _grantOf(agent, _targets(target), SPEND_CAP, GAS_CAP);
        _addTarget(g, address(rec), false, _sels(Recorder.hit.selector));
        _addToken(g, address(token), TOKEN_CAP);
        g.paymaster = address(paymaster);
        if (_periodic()) {
            // Far past what a run reaches (50 calls of at most three periods each), so that the last
            // checks still land; periods past it are refused.
            (g.validAfter, g.validUntil) = (T0, T0 + 30 days);
            _setPeriod(g, PERIOD, PERIOD_CAP);
        }
        vm.prank(owner);
        account.execute(address(validator), 0, abi.encodeCall(ISessionKeyValidator.grantSession, (g)));
        vm.prank(owner);
        account.execute(
            address(validator),
            0,
            abi.encodeCall(ISessionKeyValidator.grantSession, (_grantOf(agent2, _targets(target), 1 ether, 1 ether)))
        );
        // The owner and the other agent have used their lanes once.
        _bumpLane(0, ownerKey, false);
        (, uint256 agent2Key) = makeAddrAndKey("agent2");
        _bumpLane(uint192(uint160(agent2)), agent2Key, true);

        handler = new AgentHandler(
            AgentHandler.Env({
                ep: ep,
                account: account,
                validator: validator,
                token: token,
                rec: rec,
                paymaster: paymaster,
                otherPaymaster: otherPaymaster,
                target: target,
                recipient: recipient,
                agent: agent,
                agentKey: agentKey,
                agent2: agent2
            })
        );
        bytes4[] memory selectors = new bytes4[](7);
        selectors[0] = AgentHandler.honestOp.selector;
        selectors[1] = AgentHandler.honestSponsoredOp.selector;
        selectors[2] = AgentHandler.rogueOp.selector;
        selectors[3] = AgentHandler.rogueBundle.selector;
        selectors[4] = AgentHandler.pull.selector;
        selectors[5] = AgentHandler.greedyOp.selector;
        selectors[6] = AgentHandler.warp.selector;
        targetSelector(StdInvariant.FuzzSelector({addr: address(handler), selectors: selectors}));
        targetContract(address(handler));

        startHoldings = _holdings();
        startTokens = token.balanceOf(address(account));
        ownerNonce = ep.getNonce(address(account), 0);
        agent2Nonce = ep.getNonce(address(account), uint192(uint160(agent2)));
        assertEq(ownerNonce, 1);
        assertEq(agent2Nonce, (uint256(uint160(agent2)) << 64) | 1);
        agent2Session = keccak256(abi.encode(validator.getSession(address(account), agent2)));
    }

    function _bumpLane(uint192 key, uint256 pk, bool session) internal {
        PackedUserOperation memory op =
            _op(address(account), ep.getNonce(address(account), key), "", _execute(target, 1, ""));
        bytes32 hash = ep.getUserOpHash(op);
        op.signature = session ? _sessionSig(pk, address(account), hash) : _ownerSig(pk, hash);
        vm.prank(bundler, bundler);
        ep.handleOps(_one(op), payable(bundler));
    }

    function _holdings() internal view returns (uint256) {
        return address(account).balance + ep.balanceOf(address(account));
    }

    function _session() internal view returns (ISessionKeyValidator.Session memory) {
        return validator.getSession(address(account), agent);
    }

    function _tokenSpent() internal view returns (uint256) {
        return validator.getPermission(address(account), agent, address(token)).tokenSpent;
    }

    // ------------------------------------------------------------------ invariants

    /// Checked after every call of the handler (one campaign; the four parts below name what broke).
    function invariant_AgentCannotExceedItsSession() public view {
        _checkEthOutflow();
        _checkTokenOutflow();
        _checkOtherLanes();
        _checkCounters();
        _checkPeriods();
    }

    /// The account's ETH (balance + EntryPoint deposit) decreases by no more than what the session
    /// counted (native value + maximum gas cost), hence no more than spendCap + gasCap.
    function _checkEthOutflow() internal view {
        uint256 holdings = _holdings();
        assertLe(holdings, startHoldings, "the account gained ETH: the check would be blind");
        uint256 outflow = startHoldings - holdings;
        ISessionKeyValidator.Session memory s = _session();
        assertLe(outflow, uint256(s.spent) + s.gasSpent, "ETH outflow above what the session counted");
        assertLe(outflow, uint256(SPEND_CAP) + GAS_CAP, "ETH outflow above spendCap + gasCap");
    }

    /// The account's token balance decrease plus every allowance it granted is no more than what the
    /// session counted, hence no more than the token cap.
    function _checkTokenOutflow() internal view {
        uint256 balance = token.balanceOf(address(account));
        assertLe(balance, startTokens, "the account gained tokens: the check would be blind");
        uint256 exposed = startTokens - balance;
        uint256 n = handler.spendersLength();
        for (uint256 i; i < n; ++i) {
            exposed += token.allowance(address(account), handler.spenders(i));
        }
        assertLe(exposed, _tokenSpent(), "token outflow + allowances above what the session counted");
        assertLe(exposed, TOKEN_CAP, "token outflow + allowances above the cap");
    }

    /// The agent never advances the owner's nor the other agent's nonce sequence, nor charges the
    /// other agent's session.
    function _checkOtherLanes() internal view {
        assertEq(ep.getNonce(address(account), 0), ownerNonce, "owner lane moved");
        assertEq(ep.getNonce(address(account), uint192(uint160(agent2))), agent2Nonce, "agent2 lane moved");
        assertEq(
            keccak256(abi.encode(validator.getSession(address(account), agent2))), agent2Session, "agent2 session moved"
        );
    }

    /// The counters never exceed their caps, and the agent cannot change its own session.
    function _checkCounters() internal view {
        ISessionKeyValidator.Session memory s = _session();
        assertLe(s.spent, SPEND_CAP, "spent above spendCap");
        assertLe(s.gasSpent, GAS_CAP, "gasSpent above gasCap");
        assertLe(_tokenSpent(), TOKEN_CAP, "tokenSpent above the cap");
        assertEq(validator.getPermission(address(account), agent, address(token)).tokenCap, TOKEN_CAP);
        assertEq(s.epoch, 1, "re-granted");
        assertTrue(s.active, "revoked");
        assertEq(s.spendCap, SPEND_CAP);
        assertEq(s.gasCap, GAS_CAP);
        assertEq(s.paymaster, address(paymaster));
        assertEq(s.period, _periodic() ? PERIOD : 0);
        assertEq(s.periodCap, _periodic() ? PERIOD_CAP : 0);
        assertFalse(validator.isTargetAllowed(address(account), agent, address(ep)));
    }

    /// Every period an operation named stays within the periodic cap, and the periods add up to the
    /// session's total (a session without a period counts none); every operation on the agent's lane
    /// landed within its period's window.
    function _checkPeriods() internal view {
        uint256 n = handler.periodsLength();
        uint256 sum;
        for (uint256 i; i < n; ++i) {
            uint256 spent = validator.periodSpent(address(account), agent, handler.periods(i));
            if (_periodic()) assertLe(spent, PERIOD_CAP, "periodSpent above periodCap");
            else assertEq(spent, 0, "a period counted without a period");
            sum += spent;
        }
        if (_periodic()) assertEq(sum, _session().spent, "the periods do not add up to spent");
        assertEq(handler.windowViolations(), 0, "an operation landed outside its period's window");
    }

    /// After each run: operations did land (the run exercised successful paths), and an honest
    /// sponsored operation still lands whatever the agent did before. The first check needs a whole
    /// run: forge also calls this hook when it replays or shrinks a failing sequence of a few calls.
    function afterInvariant() public {
        if (handler.calls() >= 25) assertGt(handler.successfulOps(), 0, "no operation landed in this run");
        uint256 before = handler.successfulOps();
        handler.sponsoredPing();
        assertEq(handler.successfulOps(), before + 1, "a plain sponsored operation no longer lands");
        invariant_AgentCannotExceedItsSession();
    }
}

contract SessionInvariantV07Test is SessionInvariantTest {
    function _v08() internal pure override returns (bool) {
        return false;
    }

    function _periodic() internal pure override returns (bool) {
        return false;
    }
}

contract SessionInvariantV08Test is SessionInvariantTest {
    function _v08() internal pure override returns (bool) {
        return true;
    }

    function _periodic() internal pure override returns (bool) {
        return false;
    }
}

contract SessionInvariantPeriodicV07Test is SessionInvariantTest {
    function _v08() internal pure override returns (bool) {
        return false;
    }

    function _periodic() internal pure override returns (bool) {
        return true;
    }
}

contract SessionInvariantPeriodicV08Test is SessionInvariantTest {
    function _v08() internal pure override returns (bool) {
        return true;
    }

    function _periodic() internal pure override returns (bool) {
        return true;
    }
}
