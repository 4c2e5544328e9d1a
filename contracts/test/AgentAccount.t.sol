// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {TestBase} from "./utils/TestBase.sol";
import {AgentAccount} from "../src/AgentAccount.sol";
import {AgentAccountFactory} from "../src/AgentAccountFactory.sol";
import {SessionKeyValidator} from "../src/SessionKeyValidator.sol";
import {PackedUserOperation} from "../src/interfaces/IERC4337.sol";
import {Call} from "../src/interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "../src/interfaces/ISessionKeyValidator.sol";

/// @dev A call target that records calls and can revert with a custom error.
contract Recorder {
    error Nope(uint256 code);

    uint256 public calls;
    uint256 public received;

    function hit(uint256 code) external payable {
        if (code == 13) revert Nope(code);
        calls += 1;
        received += msg.value;
    }
}

/// @notice Unit tests of AgentAccount and AgentAccountFactory (the EntryPoint is pranked).
contract AgentAccountTest is TestBase {
    address internal entryPoint = makeAddr("entryPoint");
    AgentAccount internal account;
    Recorder internal rec;

    function setUp() public {
        _setUpKeys();
        validator = new SessionKeyValidator();
        factory = new AgentAccountFactory(entryPoint, validator);
        account = factory.createAccount(owner, 0);
        rec = new Recorder();
        vm.deal(address(account), 10 ether);
    }

    function _validate(PackedUserOperation memory op, bytes32 hash, uint256 missing) internal returns (uint256) {
        vm.prank(entryPoint);
        return account.validateUserOp(op, hash, missing);
    }

    // ------------------------------------------------------------------ factory

    function test_Factory_CounterfactualAddress() public {
        address predicted = factory.getAddress(owner, 7);
        assertEq(predicted.code.length, 0);
        vm.expectEmit(true, true, true, true, predicted);
        emit AgentAccount.AgentAccountInitialized(owner, entryPoint, address(validator));
        vm.expectEmit(true, true, false, true, address(factory));
        emit AgentAccountFactory.AccountCreated(predicted, owner, 7);
        AgentAccount created = factory.createAccount(owner, 7);
        assertEq(address(created), predicted);
        assertEq(created.owner(), owner);
        assertEq(created.entryPoint(), entryPoint);
        assertEq(address(created.validator()), address(validator));
        assertEq(address(factory.accountImplementation().validator()), address(validator));
        assertEq(factory.entryPoint(), entryPoint);
        assertEq(address(factory.validator()), address(validator));
    }

    function test_Factory_ReturnsExisting() public {
        vm.recordLogs();
        AgentAccount again = factory.createAccount(owner, 0);
        assertEq(address(again), address(account));
        assertEq(vm.getRecordedLogs().length, 0, "nothing deployed twice");
    }

    function test_Factory_AddressDependsOnOwnerAndSalt() public view {
        assertTrue(factory.getAddress(owner, 0) != factory.getAddress(owner, 1));
        assertTrue(factory.getAddress(owner, 0) != factory.getAddress(agent, 0));
    }

    function test_Factory_RejectsZeroOwner() public {
        vm.expectRevert(AgentAccount.InvalidOwner.selector);
        factory.createAccount(address(0), 0);
    }

    function test_Initialize_OnlyOnce_NeverOnImplementation() public {
        vm.expectRevert(AgentAccount.AlreadyInitialized.selector);
        account.initialize(agent);
        AgentAccount impl = factory.accountImplementation();
        vm.expectRevert(AgentAccount.AlreadyInitialized.selector);
        impl.initialize(agent);
    }

    // ------------------------------------------------------------------ validateUserOp

    function test_Validate_OnlyEntryPoint() public {
        PackedUserOperation memory op = _op(address(account), 0, "", "");
        vm.expectRevert(abi.encodeWithSelector(AgentAccount.NotFromEntryPoint.selector, owner));
        vm.prank(owner);
        account.validateUserOp(op, bytes32(0), 0);
    }

    function test_Validate_OwnerSignature() public {
        bytes32 hash = keccak256("op");
        PackedUserOperation memory op = _op(address(account), 0, "", "");
        op.signature = _ownerSig(ownerKey, hash);
        assertEq(_validate(op, hash, 0), 0);
    }

    function test_Validate_WrongOwnerSignature_Fails() public {
        bytes32 hash = keccak256("op");
        PackedUserOperation memory op = _op(address(account), 0, "", "");
        op.signature = _ownerSig(agentKey, hash);
        assertEq(_validate(op, hash, 0), 1);
        op.signature = _ownerSig(ownerKey, keccak256("other"));
        assertEq(_validate(op, hash, 0), 1);
        // A raw (non EIP-191) signature of the owner is refused.
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(ownerKey, hash);
        op.signature = abi.encodePacked(r, s, v);
        assertEq(_validate(op, hash, 0), 1);
        // High s.
        (v, r, s) = vm.sign(ownerKey, _ethSigned(hash));
        uint256 n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        op.signature = abi.encodePacked(r, bytes32(n - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        assertEq(_validate(op, hash, 0), 1);
    }

    function test_Validate_PaysMissingFunds() public {
        bytes32 hash = keccak256("op");
        PackedUserOperation memory op = _op(address(account), 0, "", "");
        op.signature = _ownerSig(ownerKey, hash);
        uint256 before = entryPoint.balance;
        _validate(op, hash, 0.01 ether);
        assertEq(entryPoint.balance - before, 0.01 ether);
        // Even a failed signature pays (the EntryPoint decides what happens next).
        op.signature = "";
        assertEq(_validate(op, hash, 0.01 ether), 1);
        assertEq(entryPoint.balance - before, 0.02 ether);
    }

    function test_Validate_SessionSignatureIsDelegated() public {
        vm.prank(address(account));
        validator.grantSession(agent, _targets(address(rec)), 1 ether, 10, 20, revoker);
        bytes32 hash = keccak256("op");
        PackedUserOperation memory op = _op(address(account), 0, "", _execute(address(rec), 0.1 ether, ""));
        op.signature = _sessionSig(agentKey, address(account), hash);
        assertEq(_validate(op, hash, 0), (uint256(20) << 160) | (uint256(10) << 208));
        assertEq(validator.getSession(address(account), agent).spent, 0.1 ether);
    }

    function test_Validate_SessionPolicyErrorBubbles() public {
        bytes32 hash = keccak256("op");
        PackedUserOperation memory op = _op(address(account), 0, "", _execute(address(rec), 0, ""));
        op.signature = _sessionSig(agentKey, address(account), hash);
        vm.prank(entryPoint);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.UnknownSession.selector, address(account), agent));
        account.validateUserOp(op, hash, 0);
    }

    /// Any signature bytes through the account: never an unexpected revert. Non-session layouts give
    /// SIG_VALIDATION_FAILED; the 106-byte 0x08 layout reaches the validator, whose named errors are
    /// the only reverts.
    function testFuzz_Validate_AnySignature(bytes memory sig, bytes32 hash, bool sessionLayout, bool granted) public {
        if (granted) {
            vm.prank(address(account));
            validator.grantSession(agent, _targets(address(rec)), 1 ether, 0, 0, address(0));
        }
        if (sessionLayout) {
            // Force the session layout, keeping the fuzzed bytes for the rest.
            bytes memory s = new bytes(106);
            for (uint256 i; i < 106 && i < sig.length; ++i) {
                s[i] = sig[i];
            }
            s[0] = 0x08;
            sig = s;
        }
        PackedUserOperation memory op = _op(address(account), 0, "", _execute(address(rec), 1, ""));
        op.signature = sig;
        vm.prank(entryPoint);
        try account.validateUserOp(op, hash, 0) returns (uint256 data) {
            assertEq(data & 1, 1, "random bytes validated");
            if (!(sig.length == 106 && sig[0] == 0x08)) assertEq(data, 1);
        } catch (bytes memory err) {
            assertEq(sig.length, 106, "reverted outside the session layout");
            assertEq(uint8(sig[0]), 8);
            bytes4 sel = bytes4(err);
            assertTrue(
                sel == ISessionKeyValidator.AccountMismatch.selector
                    || sel == ISessionKeyValidator.UnknownSession.selector,
                "unexpected revert"
            );
        }
    }

    // ------------------------------------------------------------------ execute

    function test_Execute_ByOwnerAndEntryPoint() public {
        vm.prank(owner);
        account.execute(address(rec), 1 ether, abi.encodeCall(Recorder.hit, (1)));
        vm.prank(entryPoint);
        account.execute(address(rec), 0, abi.encodeCall(Recorder.hit, (2)));
        assertEq(rec.calls(), 2);
        assertEq(rec.received(), 1 ether);
        vm.prank(owner);
        account.execute(recipient, 0.5 ether, "");
        assertEq(recipient.balance, 0.5 ether);
    }

    function test_Execute_RevertsForOthers() public {
        vm.prank(agent);
        vm.expectRevert(abi.encodeWithSelector(AgentAccount.NotEntryPointOrOwner.selector, agent));
        account.execute(address(rec), 0, "");
        Call[] memory calls = new Call[](0);
        vm.prank(agent);
        vm.expectRevert(abi.encodeWithSelector(AgentAccount.NotEntryPointOrOwner.selector, agent));
        account.executeBatch(calls);
    }

    function test_Execute_BubblesRevertData() public {
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(Recorder.Nope.selector, 13));
        account.execute(address(rec), 0, abi.encodeCall(Recorder.hit, (13)));
    }

    function test_ExecuteBatch() public {
        Call[] memory calls = new Call[](3);
        calls[0] = Call(address(rec), 1, abi.encodeCall(Recorder.hit, (1)));
        calls[1] = Call(address(rec), 2, abi.encodeCall(Recorder.hit, (2)));
        calls[2] = Call(recipient, 3, "");
        vm.prank(entryPoint);
        account.executeBatch(calls);
        assertEq(rec.calls(), 2);
        assertEq(rec.received(), 3);
        assertEq(recipient.balance, 3);

        calls[1] = Call(address(rec), 0, abi.encodeCall(Recorder.hit, (13)));
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(Recorder.Nope.selector, 13));
        account.executeBatch(calls);
        assertEq(rec.calls(), 2, "batch is atomic");
    }

    function test_Receive() public {
        vm.deal(agent, 1 ether);
        vm.prank(agent);
        (bool ok,) = address(account).call{value: 1 ether}("");
        assertTrue(ok);
        assertEq(address(account).balance, 11 ether);
    }

    // ------------------------------------------------------------------ ERC-1271

    function test_IsValidSignature() public view {
        bytes32 hash = keccak256("message");
        assertEq(account.isValidSignature(hash, _ownerSig(ownerKey, hash)), bytes4(0x1626ba7e));
        assertEq(account.isValidSignature(hash, _ownerSig(agentKey, hash)), bytes4(0xffffffff));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(ownerKey, hash);
        assertEq(account.isValidSignature(hash, abi.encodePacked(r, s, v)), bytes4(0xffffffff), "raw hash");
        assertEq(account.isValidSignature(hash, ""), bytes4(0xffffffff));
        assertEq(account.isValidSignature(hash, _sessionSig(agentKey, address(account), hash)), bytes4(0xffffffff));
    }
}
