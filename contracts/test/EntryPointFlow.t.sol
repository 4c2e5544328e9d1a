// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Vm} from "forge-std/Test.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {IEntryPoint, TestBase} from "./utils/TestBase.sol";
import {Recorder, SponsorPaymaster} from "./utils/Mocks.sol";
import {AgentAccount} from "../AgentAccount.sol";
import {AgentAccountFactory} from "../AgentAccountFactory.sol";
import {SessionKeyValidator} from "../SessionKeyValidator.sol";
import {PackedUserOperation} from "../interfaces/IERC4337.sol";
import {Call} from "../interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "../interfaces/ISessionKeyValidator.sol";
import {TestToken} from "../testing/TestToken.sol";

/// @notice Full handleOps flows through the real, canonical EntryPoint (deployed from the npm
/// artifact at its canonical address). Run for v0.7 and v0.8 by the two contracts at the end.
abstract contract EntryPointFlowTest is TestBase {
    IEntryPoint internal ep;
    AgentAccount internal account;
    address internal target = makeAddr("target");
    address internal agent2;
    uint256 internal agent2Key;
    Recorder internal rec;
    TestToken internal token;
    SponsorPaymaster internal paymaster;

    uint128 internal constant CAP = 1 ether;
    uint96 internal constant GAS_CAP = 1 ether;
    uint48 internal constant AFTER = 1_000;
    uint48 internal constant UNTIL = 100_000;

    function _v08() internal pure virtual returns (bool);

    function setUp() public {
        _setUpKeys();
        (agent2, agent2Key) = makeAddrAndKey("agent2");
        vm.warp(AFTER + 1);
        ep = _deployEntryPoint(_v08());
        validator = new SessionKeyValidator();
        factory = new AgentAccountFactory(address(ep), validator);
        rec = new Recorder();
        token = new TestToken();
        paymaster = new SponsorPaymaster();
        ep.depositTo{value: 10 ether}(address(paymaster));
    }

    // ------------------------------------------------------------------ helpers

    function _handle(PackedUserOperation memory op) internal {
        vm.prank(bundler, bundler);
        ep.handleOps(_one(op), payable(bundler));
    }

    /// @dev The agent bundles its own operation and names itself the beneficiary.
    function _handleAsAgent(PackedUserOperation memory op) internal {
        vm.prank(agent, agent);
        ep.handleOps(_one(op), payable(agent));
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

    /// @dev The default grant of `agent`: window [AFTER, UNTIL], the revoker, CAP, GAS_CAP, plain
    /// transfers to `targets`.
    function _grant(address[] memory targets) internal view returns (ISessionKeyValidator.SessionGrant memory g) {
        g = _grantOf(agent, targets, CAP, GAS_CAP);
        (g.validAfter, g.validUntil, g.revoker) = (AFTER, UNTIL, revoker);
    }

    /// @dev Deploys the account of (owner, salt) with 10 ETH through its first operation, which also
    /// grants `g`.
    function _deployAndGrant(uint256 salt, ISessionKeyValidator.SessionGrant memory g)
        internal
        returns (AgentAccount acct)
    {
        acct = AgentAccount(payable(factory.getAddress(owner, salt)));
        vm.deal(address(acct), 10 ether);
        _handle(_signOwner(_op(address(acct), 0, _initCode(owner, salt), _grantCall(g))));
        assertTrue(validator.getSession(address(acct), g.key).active);
    }

    function _deployAndGrant(uint256 salt, address[] memory targets) internal returns (AgentAccount) {
        return _deployAndGrant(salt, _grant(targets));
    }

    /// @dev An operation of the agent on its own lane, signed.
    function _sessionOp(AgentAccount acct, bytes memory callData) internal view returns (PackedUserOperation memory) {
        return _signSession(_op(address(acct), _agentNonce(address(acct)), "", callData), agentKey);
    }

    function _sessionTransfer(AgentAccount acct, address to, uint256 value)
        internal
        view
        returns (PackedUserOperation memory)
    {
        return _sessionOp(acct, _execute(to, value, ""));
    }

    function _expectAA23(bytes memory inner) internal {
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOpWithRevert.selector, 0, "AA23 reverted", inner));
    }

    /// @dev What the account holds: its balance plus its EntryPoint deposit.
    function _holdings(address acct) internal view returns (uint256) {
        return acct.balance + ep.balanceOf(acct);
    }

    /// @dev The (success, actualGasCost) of the UserOperationEvent among the recorded logs.
    function _userOpEvent() internal returns (bool success, uint256 actualGasCost) {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        bool found;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter == address(ep) && logs[i].topics[0] == IEntryPoint.UserOperationEvent.selector) {
                (, success, actualGasCost,) = abi.decode(logs[i].data, (uint256, bool, uint256, uint256));
                found = true;
            }
        }
        assertTrue(found, "no UserOperationEvent");
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

    /// The owner's personal-message (EIP-191) signature of the userOpHash is refused.
    function test_OwnerOp_PersonalMessageSignature_AA24() public {
        account = _deployAndGrant(0, _targets(target));
        PackedUserOperation memory op =
            _op(address(account), ep.getNonce(address(account), 0), "", _execute(recipient, 1 ether, ""));
        op.signature = _personalSig(ownerKey, ep.getUserOpHash(op));
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOp.selector, 0, "AA24 signature error"));
        _handle(op);
    }

    // ------------------------------------------------------------------ session

    function test_SessionOp_TransfersWithinPolicy() public {
        account = _deployAndGrant(0, _targets(target));
        PackedUserOperation memory op = _sessionTransfer(account, target, 0.4 ether);
        _handle(op);
        assertEq(target.balance, 0.4 ether);
        ISessionKeyValidator.Session memory s = validator.getSession(address(account), agent);
        assertEq(s.spent, 0.4 ether);
        assertEq(s.gasSpent, _maxCost(op));
        assertEq(s.opsUsed, 1);

        // A batch on the agent's own nonce key.
        Call[] memory calls = new Call[](2);
        calls[0] = Call(target, 0.1 ether, "");
        calls[1] = Call(target, 0.2 ether, "");
        _handle(_sessionOp(account, _executeBatch(calls)));
        assertEq(target.balance, 0.7 ether);
        assertEq(validator.remainingBudget(address(account), agent), 0.3 ether);
        assertEq(_agentNonce(address(account)) & type(uint64).max, 2);
        assertEq(validator.getSession(address(account), agent).gasSpent, 2 * MAX_COST);
        assertEq(ep.getNonce(address(account), 0), 1, "owner lane: only the deployment");
    }

    function test_SessionOp_ListedFunctionAndToken() public {
        ISessionKeyValidator.SessionGrant memory g = _grant(_targets(target));
        _addTarget(g, address(rec), false, _sels(Recorder.hit.selector));
        _addToken(g, address(token), 100e18);
        account = _deployAndGrant(0, g);
        token.mint(address(account), 1000e18);

        Call[] memory calls = new Call[](3);
        calls[0] = Call(target, 0.1 ether, "");
        calls[1] = Call(address(rec), 0.2 ether, abi.encodeCall(Recorder.hit, (1)));
        calls[2] = Call(address(token), 0, abi.encodeCall(IERC20.transfer, (recipient, 30e18)));
        _handle(_sessionOp(account, _executeBatch(calls)));
        assertEq(rec.calls(), 1);
        assertEq(rec.received(), 0.2 ether);
        assertEq(token.balanceOf(recipient), 30e18);
        assertEq(validator.getPermission(address(account), agent, address(token)).tokenSpent, 30e18);
        assertEq(validator.getSession(address(account), agent).spent, 0.3 ether);

        PackedUserOperation memory op =
            _sessionOp(account, _execute(address(rec), 0, abi.encodeCall(Recorder.other, ())));
        _expectAA23(
            abi.encodeWithSelector(
                ISessionKeyValidator.SelectorNotAllowed.selector, address(rec), Recorder.other.selector
            )
        );
        _handle(op);
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
        // The EntryPoint itself (withdrawTo would move the deposit) is no target either.
        op = _sessionOp(
            account, _execute(address(ep), 0, abi.encodeWithSignature("withdrawTo(address,uint256)", agent, 1))
        );
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, address(ep)));
        _handle(op);
    }

    function test_SessionOp_CannotCallValidatorOrAccount_AA23() public {
        account = _deployAndGrant(0, _targets(target));
        PackedUserOperation memory op =
            _sessionOp(account, _grantCall(_grantOf(agent, _targets(recipient), type(uint128).max, type(uint96).max)));
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
                    _grantCall(_grantOf(agent, _targets(recipient), CAP, GAS_CAP))
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
            _op(
                address(account), ep.getNonce(address(account), uint192(uint160(stranger))), "", _execute(target, 1, "")
            ),
            strangerKey
        );
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.UnknownSession.selector, address(account), stranger));
        _handle(op);
    }

    function test_SessionOp_UsageLimit_AA23() public {
        ISessionKeyValidator.SessionGrant memory g = _grant(_targets(target));
        g.maxOps = 1;
        account = _deployAndGrant(0, g);
        _handle(_sessionTransfer(account, target, 1));
        PackedUserOperation memory op = _sessionTransfer(account, target, 1);
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.UsageLimitReached.selector, 1));
        _handle(op);
    }

    // ------------------------------------------------------------------ the agent attacks its account

    /// The gas drain: the agent signs a harmless call with an 8M preVerificationGas and 1000 gwei fees
    /// and bundles it itself, naming itself the beneficiary. Without the gas budget the EntryPoint would
    /// pay the agent up to the operation's maximum cost (8.2 ETH) out of the account. Now validation
    /// refuses it and nothing moves.
    function test_Attack_GasDrain_Refused() public {
        ISessionKeyValidator.SessionGrant memory g = _grantOf(agent, _targets(target), 0.01 ether, 0.01 ether);
        account = _deployAndGrant(0, g);
        uint256 balance = address(account).balance;
        uint256 deposit = ep.balanceOf(address(account));
        assertGt(balance, 9.9 ether, "funded");

        PackedUserOperation memory op =
            _op(address(account), _agentNonce(address(account)), "", _execute(target, 0, ""));
        _setGas(op, 8_000_000, 100_000, 100_000, 1000 gwei, 1000 gwei);
        op = _signSession(op, agentKey);
        uint256 maxCost = _maxCost(op);
        assertEq(maxCost, 8.2 ether);
        assertGt(maxCost, 8 ether, "what the old rules let the agent take");

        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.GasBudgetExceeded.selector, maxCost, 0.01 ether));
        _handleAsAgent(op);

        assertEq(address(account).balance, balance, "account balance moved");
        assertEq(ep.balanceOf(address(account)), deposit, "account deposit moved");
        assertEq(agent.balance, 0, "the agent was paid");
        assertEq(validator.getSession(address(account), agent).gasSpent, 0);
    }

    /// An operation within the gas budget lands: it is charged its maximum cost, and what the account
    /// actually pays (UserOperationEvent.actualGasCost, to the agent as beneficiary) is no more. Then
    /// the agent raises its fees until the budget refuses; the account never loses more than gasCap.
    function test_Attack_GasWithinBudget_ActualCostAtMostCharged() public {
        uint96 gasCap = 0.05 ether;
        account = _deployAndGrant(0, _grantOf(agent, _targets(target), 0, gasCap));
        uint256 start = _holdings(address(account));

        PackedUserOperation memory op =
            _op(address(account), _agentNonce(address(account)), "", _execute(target, 0, ""));
        _setGas(op, 100_000, 200_000, 100_000, 10 gwei, 10 gwei);
        op = _signSession(op, agentKey);
        uint256 charged = _maxCost(op);
        vm.recordLogs();
        _handleAsAgent(op);
        (bool success, uint256 actualGasCost) = _userOpEvent();
        assertTrue(success);
        assertEq(validator.getSession(address(account), agent).gasSpent, charged, "charged the maximum cost");
        assertGt(actualGasCost, 0);
        assertLe(actualGasCost, charged, "paid more than charged");
        assertEq(start - _holdings(address(account)), actualGasCost, "outflow is the actual cost");
        assertEq(agent.balance, actualGasCost, "the beneficiary got it");

        // Fees up and up: each op lands while it fits in what is left, then the budget refuses.
        uint256 fee = 1 gwei;
        uint256 landed = 1;
        while (true) {
            op = _op(address(account), _agentNonce(address(account)), "", _execute(target, 0, ""));
            _setGas(op, 1_000_000, 200_000, 100_000, fee, fee);
            op = _signSession(op, agentKey);
            uint256 remaining = gasCap - validator.getSession(address(account), agent).gasSpent;
            if (_maxCost(op) > remaining) {
                _expectAA23(
                    abi.encodeWithSelector(ISessionKeyValidator.GasBudgetExceeded.selector, _maxCost(op), remaining)
                );
                _handleAsAgent(op);
                break;
            }
            _handleAsAgent(op);
            ++landed;
            fee *= 2;
        }
        assertGt(landed, 1);
        assertLe(start - _holdings(address(account)), gasCap, "outflow above the gas budget");
        assertLe(agent.balance, gasCap);
    }

    function test_Attack_TokenOverCap_AA23() public {
        ISessionKeyValidator.SessionGrant memory g = _grant(_noTargets());
        _addToken(g, address(token), 100e18);
        account = _deployAndGrant(0, g);
        token.mint(address(account), 1000e18);

        _handleAsAgent(
            _sessionOp(account, _execute(address(token), 0, abi.encodeCall(IERC20.transfer, (agent, 60e18))))
        );
        assertEq(token.balanceOf(agent), 60e18);
        uint256 holdings = _holdings(address(account));

        PackedUserOperation memory op =
            _sessionOp(account, _execute(address(token), 0, abi.encodeCall(IERC20.transfer, (agent, 50e18))));
        _expectAA23(
            abi.encodeWithSelector(ISessionKeyValidator.TokenCapExceeded.selector, address(token), 50e18, 40e18)
        );
        _handleAsAgent(op);
        assertEq(token.balanceOf(address(account)), 940e18, "tokens moved");
        assertEq(_holdings(address(account)), holdings, "ETH moved");
        // An approval counts too: the agent cannot approve itself more than what is left and pull it.
        op = _sessionOp(account, _execute(address(token), 0, abi.encodeCall(IERC20.approve, (agent, 41e18))));
        _expectAA23(
            abi.encodeWithSelector(ISessionKeyValidator.TokenCapExceeded.selector, address(token), 41e18, 40e18)
        );
        _handleAsAgent(op);
        _handleAsAgent(_sessionOp(account, _execute(address(token), 0, abi.encodeCall(IERC20.approve, (agent, 40e18)))));
        vm.prank(agent);
        token.transferFrom(address(account), agent, 40e18);
        assertEq(token.balanceOf(agent), 100e18);
        assertEq(token.balanceOf(address(account)), 900e18, "the account lost exactly the cap");
        op = _sessionOp(account, _execute(address(token), 0, abi.encodeCall(IERC20.approve, (agent, 1))));
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.TokenCapExceeded.selector, address(token), 1, 0));
        _handleAsAgent(op);
    }

    /// The agent cannot use the owner's lane (0) nor another agent's lane, so it can neither burn
    /// their nonces nor pass as them.
    function test_Attack_WrongLane_AA23() public {
        account = _deployAndGrant(0, _targets(target));
        ISessionKeyValidator.SessionGrant memory g2 = _grant(_targets(target));
        g2.key = agent2;
        _handle(_signOwner(_op(address(account), ep.getNonce(address(account), 0), "", _grantCall(g2))));
        uint192 lane = uint192(uint160(agent));
        uint192 lane2 = uint192(uint160(agent2));
        uint256 ownerNonce = ep.getNonce(address(account), 0);
        uint256 agent2Nonce = ep.getNonce(address(account), lane2);
        uint256 holdings = _holdings(address(account));

        PackedUserOperation memory op =
            _signSession(_op(address(account), ownerNonce, "", _execute(target, 1, "")), agentKey);
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.NonceLaneNotAllowed.selector, uint192(0), lane));
        _handleAsAgent(op);

        op = _signSession(_op(address(account), agent2Nonce, "", _execute(target, 1, "")), agentKey);
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.NonceLaneNotAllowed.selector, lane2, lane));
        _handleAsAgent(op);

        assertEq(ep.getNonce(address(account), 0), ownerNonce, "owner nonce moved");
        assertEq(ep.getNonce(address(account), lane2), agent2Nonce, "agent2 nonce moved");
        assertEq(_holdings(address(account)), holdings, "ETH moved");
        assertEq(agent.balance, 0, "the agent was paid");
        // Both still work on their own lanes.
        _handle(_signSession(_op(address(account), agent2Nonce, "", _execute(target, 1, "")), agent2Key));
        _handle(_signOwner(_op(address(account), ownerNonce, "", _execute(target, 1, ""))));
        assertEq(target.balance, 2);
    }

    function test_Attack_PaymasterNotAllowed_AA23() public {
        account = _deployAndGrant(0, _targets(target));
        PackedUserOperation memory op =
            _op(address(account), _agentNonce(address(account)), "", _execute(target, 0, ""));
        op.paymasterAndData = _paymasterAndData(address(paymaster));
        op = _signSession(op, agentKey);
        uint256 holdings = _holdings(address(account));
        uint256 pmDeposit = ep.balanceOf(address(paymaster));
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.PaymasterNotAllowed.selector, address(paymaster)));
        _handleAsAgent(op);
        assertEq(_holdings(address(account)), holdings, "ETH moved");
        assertEq(ep.balanceOf(address(paymaster)), pmDeposit, "the paymaster paid");
    }

    /// With its granted paymaster the agent's operations cost the account nothing (and no gas budget),
    /// whatever gas fields it signs; another paymaster is refused.
    function test_SessionOp_GrantedPaymasterSponsors() public {
        ISessionKeyValidator.SessionGrant memory g = _grant(_targets(target));
        g.paymaster = address(paymaster);
        g.gasCap = 0;
        account = _deployAndGrant(0, g);
        uint256 start = _holdings(address(account));
        uint256 pmDeposit = ep.balanceOf(address(paymaster));

        PackedUserOperation memory op =
            _op(address(account), _agentNonce(address(account)), "", _execute(target, 0.1 ether, ""));
        _setGas(op, 1_000_000, 200_000, 100_000, 100 gwei, 100 gwei);
        op.paymasterAndData = _paymasterAndData(address(paymaster));
        op = _signSession(op, agentKey);
        vm.recordLogs();
        _handleAsAgent(op);
        (bool success, uint256 actualGasCost) = _userOpEvent();
        assertTrue(success);
        assertEq(start - _holdings(address(account)), 0.1 ether, "the account paid more than the value");
        assertEq(pmDeposit - ep.balanceOf(address(paymaster)), actualGasCost, "the paymaster paid the gas");
        assertEq(validator.getSession(address(account), agent).gasSpent, 0);

        SponsorPaymaster otherPm = new SponsorPaymaster();
        ep.depositTo{value: 1 ether}(address(otherPm));
        op = _op(address(account), _agentNonce(address(account)), "", _execute(target, 0, ""));
        op.paymasterAndData = _paymasterAndData(address(otherPm));
        op = _signSession(op, agentKey);
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.PaymasterNotAllowed.selector, address(otherPm)));
        _handleAsAgent(op);
    }

    // ------------------------------------------------------------------ periodic budget

    /// @dev A daily budget of 0.1 ETH (within CAP) for ten days from AFTER: period p is
    /// [AFTER + p days, AFTER + (p + 1) days - 1]; period 10 is the single second AFTER + 10 days.
    function _dailyGrant() internal view returns (ISessionKeyValidator.SessionGrant memory g) {
        g = _grantOf(agent, _targets(target), CAP, GAS_CAP);
        (g.validAfter, g.validUntil, g.revoker) = (AFTER, AFTER + 10 days, revoker);
        _setPeriod(g, 1 days, 0.1 ether);
    }

    /// @dev The start of period `p` of {_dailyGrant}.
    function _dayStart(uint256 p) internal pure returns (uint256) {
        return AFTER + p * 1 days;
    }

    /// @dev The agent's transfer of `value` to `target` in period `p` (its lane for p), signed.
    function _periodTransfer(AgentAccount acct, uint256 p, uint256 value)
        internal
        view
        returns (PackedUserOperation memory)
    {
        uint256 nonce = ep.getNonce(address(acct), _laneKey(agent, p));
        return _signSession(_op(address(acct), nonce, "", _execute(target, value, "")), agentKey);
    }

    function _expectAA22() internal {
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOp.selector, 0, "AA22 expired or not due"));
    }

    /// The agent spends 0.06 of its 0.1 daily budget, is refused 0.05 more the same day, signs an
    /// operation for the next day that the EntryPoint holds back until that day begins, and cannot
    /// spend the first day's rest once the day is over.
    function test_Periodic_DailyBudget() public {
        account = _deployAndGrant(0, _dailyGrant());
        assertEq(block.timestamp, _dayStart(0) + 1);

        _handle(_periodTransfer(account, 0, 0.06 ether));
        assertEq(target.balance, 0.06 ether);
        assertEq(validator.periodSpent(address(account), agent, 0), 0.06 ether);
        PackedUserOperation memory op = _periodTransfer(account, 0, 0.05 ether);
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.PeriodCapExceeded.selector, 0, 0.05 ether, 0.04 ether));
        _handle(op);

        // Signed now for period 1: not due before period 1 begins, not even in period 0's last second.
        PackedUserOperation memory next = _periodTransfer(account, 1, 0.05 ether);
        _expectAA22();
        _handle(next);
        vm.warp(_dayStart(1) - 1);
        _expectAA22();
        _handle(next);
        // EntryPoint v0.8 takes validAfter as exclusive: the period's first second is not yet due there.
        vm.warp(_dayStart(1));
        if (_v08()) {
            _expectAA22();
            _handle(next);
            vm.warp(_dayStart(1) + 1);
        }
        _handle(next);
        assertEq(target.balance, 0.11 ether, "the next day's operation landed");
        assertEq(validator.periodSpent(address(account), agent, 1), 0.05 ether);
        assertEq(validator.periodSpent(address(account), agent, 0), 0.06 ether);
        assertEq(ep.getNonce(address(account), _laneKey(agent, 1)), _periodLane(agent, 1, 1));
        assertEq(ep.getNonce(address(account), _laneKey(agent, 0)), _periodLane(agent, 0, 1), "own sequence per period");

        // Period 0 is over: what it had left cannot be spent any more.
        op = _periodTransfer(account, 0, 0.04 ether);
        _expectAA22();
        _handle(op);
        vm.warp(_dayStart(2) + 5 hours);
        _expectAA22();
        _handle(op);
        assertEq(target.balance, 0.11 ether);
        assertEq(validator.periodSpent(address(account), agent, 0), 0.06 ether);
        ISessionKeyValidator.Session memory s = validator.getSession(address(account), agent);
        assertEq(s.spent, 0.11 ether);
        assertEq(s.opsUsed, 2);
    }

    /// Each day gets the full budget, and spendCap (0.25 ETH here) still caps the total across days.
    function test_Periodic_EachDayItsBudget_SpendCapOverall() public {
        ISessionKeyValidator.SessionGrant memory g = _dailyGrant();
        g.spendCap = 0.25 ether;
        account = _deployAndGrant(0, g);
        for (uint256 p; p < 3; ++p) {
            vm.warp(_dayStart(p) + 2 hours);
            uint256 value = p < 2 ? 0.1 ether : 0.05 ether;
            _handle(_periodTransfer(account, p, value));
            assertEq(validator.periodSpent(address(account), agent, p), value);
        }
        assertEq(target.balance, 0.25 ether);
        vm.warp(_dayStart(3) + 2 hours);
        PackedUserOperation memory op = _periodTransfer(account, 3, 1);
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, 1, 0));
        _handle(op);
        // A zero-value operation still lands: the period window is the only time rule.
        _handle(_periodTransfer(account, 3, 0));
        assertEq(validator.getSession(address(account), agent).opsUsed, 4);
    }

    /// Past the session's end: the last period is cut at validUntil, a later one is refused in
    /// validation (PeriodOutsideWindow), and an operation of the session's own window after it is AA22.
    function test_Periodic_PeriodsEndWithTheSession() public {
        account = _deployAndGrant(0, _dailyGrant());
        PackedUserOperation memory op = _periodTransfer(account, 11, 1);
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.PeriodOutsideWindow.selector, 11));
        _handle(op);

        // Period 10 is the single second AFTER + 10 days (validUntil); v0.8 takes validAfter as
        // exclusive, so there it never comes due.
        op = _periodTransfer(account, 10, 1);
        vm.warp(_dayStart(10) - 1);
        _expectAA22();
        _handle(op);
        vm.warp(_dayStart(10));
        if (_v08()) {
            _expectAA22();
            _handle(op);
        } else {
            _handle(op);
            assertEq(target.balance, 1);
        }
        vm.warp(_dayStart(10) + 1);
        op = _periodTransfer(account, 10, 1);
        _expectAA22();
        _handle(op);
    }

    /// A non-periodic session's operations naming a period are refused (the lane), at any time.
    function test_Periodic_NonPeriodicSessionRefusesPeriodLanes() public {
        account = _deployAndGrant(0, _targets(target));
        PackedUserOperation memory op = _periodTransfer(account, 1, 1);
        _expectAA23(
            abi.encodeWithSelector(
                ISessionKeyValidator.NonceLaneNotAllowed.selector, _laneKey(agent, 1), uint192(uint160(agent))
            )
        );
        _handle(op);
        _handle(_periodTransfer(account, 0, 1));
        assertEq(target.balance, 1);
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
