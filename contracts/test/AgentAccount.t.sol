// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {TestBase} from "./utils/TestBase.sol";
import {Recorder} from "./utils/Mocks.sol";
import {AgentAccount} from "../AgentAccount.sol";
import {AgentAccountFactory} from "../AgentAccountFactory.sol";
import {SessionKeyValidator} from "../SessionKeyValidator.sol";
import {IAccount, PackedUserOperation} from "../interfaces/IERC4337.sol";
import {Call} from "../interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "../interfaces/ISessionKeyValidator.sol";

/// @notice Unit tests of AgentAccount and AgentAccountFactory (the EntryPoint is pranked).
contract AgentAccountTest is TestBase {
    address internal entryPoint = makeAddr("entryPoint");
    AgentAccount internal account;
    Recorder internal rec;

    bytes4 internal constant MAGIC = 0x1626ba7e;
    bytes4 internal constant INVALID = 0xffffffff;
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant PERSONAL_SIGN_TYPEHASH = keccak256("PersonalSign(bytes prefixed)");
    bytes32 internal constant DETECTION_HASH = 0x7739773977397739773977397739773977397739773977397739773977397739;

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
        return IAccount(address(account)).validateUserOp(op, hash, missing);
    }

    function _grantAgent() internal {
        vm.prank(address(account));
        validator.grantSession(_grantOf(agent, _targets(address(rec)), 1 ether, 1 ether));
    }

    // ------------------------------------------------------------------ ERC-7739 helpers

    /// @dev The account's EIP-712 domain separator, computed here from the spec.
    function _domain(address acct) internal view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, keccak256("AgentAccount"), keccak256("1"), block.chainid, acct));
    }

    /// @dev ERC-7739 PersonalSign: what the owner signs so that `hash` (an EIP-191 message hash) is
    /// valid for `acct`.
    function _personalSignDigest(address acct, bytes32 hash) internal view returns (bytes32) {
        return
            keccak256(abi.encodePacked("\x19\x01", _domain(acct), keccak256(abi.encode(PERSONAL_SIGN_TYPEHASH, hash))));
    }

    function _erc1271PersonalSig(uint256 pk, address acct, bytes32 hash) internal view returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, _personalSignDigest(acct, hash));
        return abi.encodePacked(r, s, v);
    }

    string internal constant MAIL_TYPE = "Mail(address to,string contents)";

    /// @dev A dApp's EIP-712 message (`Mail` in the dApp's domain): its hash, the dApp's separator and
    /// the contents hash.
    function _mail() internal returns (bytes32 hash, bytes32 appSeparator, bytes32 contentsHash) {
        appSeparator =
            keccak256(abi.encode(DOMAIN_TYPEHASH, keccak256("Dapp"), keccak256("2"), block.chainid, makeAddr("dapp")));
        contentsHash = keccak256(abi.encode(keccak256(bytes(MAIL_TYPE)), recipient, keccak256("hello")));
        hash = keccak256(abi.encodePacked("\x19\x01", appSeparator, contentsHash));
    }

    /// @dev ERC-7739 TypedDataSign signature of the `Mail` message by `pk` for `acct`:
    /// `sig ‖ appSeparator ‖ contentsHash ‖ contentsDescr ‖ uint16(len(contentsDescr))`.
    function _erc1271TypedSig(uint256 pk, address acct, bytes32 appSeparator, bytes32 contentsHash)
        internal
        view
        returns (bytes memory)
    {
        bytes32 typehash = keccak256(
            abi.encodePacked(
                "TypedDataSign(Mail contents,string name,string version,uint256 chainId,address verifyingContract,bytes32 salt)",
                MAIL_TYPE
            )
        );
        bytes32 structHash = keccak256(
            abi.encode(
                typehash, contentsHash, keccak256("AgentAccount"), keccak256("1"), block.chainid, acct, bytes32(0)
            )
        );
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, keccak256(abi.encodePacked("\x19\x01", appSeparator, structHash)));
        return abi.encodePacked(r, s, v, appSeparator, contentsHash, MAIL_TYPE, uint16(bytes(MAIL_TYPE).length));
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
        assertEq(address(created.entryPoint()), entryPoint);
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
        IAccount(address(account)).validateUserOp(op, bytes32(0), 0);
    }

    /// The owner signs the userOpHash itself (no EIP-191 prefix).
    function test_Validate_OwnerRawSignature() public {
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
        // High s.
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(ownerKey, hash);
        uint256 n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        op.signature = abi.encodePacked(r, bytes32(n - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        assertEq(_validate(op, hash, 0), 1);
    }

    /// The owner's personal-message (EIP-191) signature of the userOpHash is no operation signature.
    function test_Validate_OwnerPersonalMessageSignatureRefused() public {
        bytes32 hash = keccak256("op");
        PackedUserOperation memory op = _op(address(account), 0, "", "");
        op.signature = _personalSig(ownerKey, hash);
        assertEq(op.signature.length, 65);
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
        ISessionKeyValidator.SessionGrant memory g = _grantOf(agent, _targets(address(rec)), 1 ether, 1 ether);
        (g.validAfter, g.validUntil, g.revoker) = (10, 20, revoker);
        vm.prank(address(account));
        validator.grantSession(g);
        bytes32 hash = keccak256("op");
        PackedUserOperation memory op =
            _op(address(account), _lane(agent, 0), "", _execute(address(rec), 0.1 ether, ""));
        op.signature = _sessionSig(agentKey, address(account), hash);
        assertEq(_validate(op, hash, 0), (uint256(20) << 160) | (uint256(10) << 208));
        ISessionKeyValidator.Session memory s = validator.getSession(address(account), agent);
        assertEq(s.spent, 0.1 ether);
        assertEq(s.gasSpent, MAX_COST);
        assertEq(s.opsUsed, 1);
    }

    /// A periodic session's validation data, through the account, is the window of the period the
    /// nonce names; a period past the session's end reverts by name.
    function test_Validate_PeriodicSessionReturnsThePeriodsWindow() public {
        ISessionKeyValidator.SessionGrant memory g = _grantOf(agent, _targets(address(rec)), 1 ether, 1 ether);
        (g.validAfter, g.validUntil) = (100, 1000);
        _setPeriod(g, 60, 0.5 ether);
        vm.prank(address(account));
        validator.grantSession(g);
        bytes32 hash = keccak256("op");
        PackedUserOperation memory op =
            _op(address(account), _periodLane(agent, 2, 0), "", _execute(address(rec), 0.1 ether, ""));
        op.signature = _sessionSig(agentKey, address(account), hash);
        assertEq(_validate(op, hash, 0), (uint256(279) << 160) | (uint256(220) << 208));
        assertEq(validator.periodSpent(address(account), agent, 2), 0.1 ether);
        // Period 15 is [1000, 1000] (cut at validUntil); 16 is past it.
        op.nonce = _periodLane(agent, 15, 0);
        assertEq(_validate(op, hash, 0), (uint256(1000) << 160) | (uint256(1000) << 208));
        op.nonce = _periodLane(agent, 16, 0);
        vm.prank(entryPoint);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.PeriodOutsideWindow.selector, 16));
        IAccount(address(account)).validateUserOp(op, hash, 0);
    }

    function test_Validate_SessionPolicyErrorBubbles() public {
        bytes32 hash = keccak256("op");
        PackedUserOperation memory op = _op(address(account), _lane(agent, 0), "", _execute(address(rec), 0, ""));
        op.signature = _sessionSig(agentKey, address(account), hash);
        vm.prank(entryPoint);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.UnknownSession.selector, address(account), agent));
        IAccount(address(account)).validateUserOp(op, hash, 0);

        _grantAgent();
        op.nonce = 0;
        vm.prank(entryPoint);
        vm.expectRevert(
            abi.encodeWithSelector(ISessionKeyValidator.NonceLaneNotAllowed.selector, 0, uint192(uint160(agent)))
        );
        IAccount(address(account)).validateUserOp(op, hash, 0);
    }

    /// An account can never give a session its own EntryPoint as a target.
    function test_Grant_OwnEntryPointForbidden() public {
        ISessionKeyValidator.SessionGrant memory g = _grantOf(agent, _targets(entryPoint), 1 ether, 1 ether);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ISessionKeyValidator.ForbiddenTarget.selector, entryPoint));
        account.execute(address(validator), 0, abi.encodeCall(ISessionKeyValidator.grantSession, (g)));
    }

    /// Any signature bytes through the account: never an unexpected revert. Non-session layouts give
    /// SIG_VALIDATION_FAILED; the 106-byte 0x08 layout reaches the validator, whose named errors are
    /// the only reverts.
    function testFuzz_Validate_AnySignature(bytes memory sig, bytes32 hash, bool sessionLayout, bool granted) public {
        if (granted) _grantAgent();
        if (sessionLayout) {
            // Force the session layout, keeping the fuzzed bytes for the rest.
            bytes memory s = new bytes(106);
            for (uint256 i; i < 106 && i < sig.length; ++i) {
                s[i] = sig[i];
            }
            s[0] = 0x08;
            sig = s;
        }
        PackedUserOperation memory op = _op(address(account), _lane(agent, 0), "", _execute(address(rec), 1, ""));
        op.signature = sig;
        vm.prank(entryPoint);
        try IAccount(address(account)).validateUserOp(op, hash, 0) returns (uint256 data) {
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

    /// The account itself is no caller of `execute` (unlike OpenZeppelin's `onlyEntryPointOrSelf`):
    /// the hand-written account's rule, kept when it was rebuilt from the parts.
    function test_Execute_NotBySelf() public {
        vm.prank(address(account));
        vm.expectRevert(abi.encodeWithSelector(AgentAccount.NotEntryPointOrOwner.selector, address(account)));
        account.execute(recipient, 0, "");
    }

    /// What the OpenZeppelin parts add to the ABI: `signer()` is the owner (zero on the
    /// implementation), `getNonce()` reads the EntryPoint's nonce of the account's default lane.
    function test_Parts_SignerAndNonce() public {
        assertEq(account.signer(), owner);
        assertEq(factory.accountImplementation().signer(), address(0));
        assertEq(factory.accountImplementation().owner(), address(0));
        vm.mockCall(
            entryPoint,
            abi.encodeWithSignature("getNonce(address,uint192)", address(account), uint192(0)),
            abi.encode(5)
        );
        assertEq(account.getNonce(), 5);
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

    // ------------------------------------------------------------------ ERC-1271 (ERC-7739)

    function test_Erc1271_Eip712Domain() public view {
        (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        ) = account.eip712Domain();
        assertEq(fields, bytes1(0x0f));
        assertEq(name, "AgentAccount");
        assertEq(version, "1");
        assertEq(chainId, block.chainid);
        assertEq(verifyingContract, address(account), "the clone, not the implementation");
        assertEq(salt, bytes32(0));
        assertEq(extensions.length, 0);
    }

    /// A PersonalSign signature is valid for the account it was made for, not for another account of
    /// the same owner.
    function test_Erc1271_PersonalSign_BoundToTheAccount() public {
        AgentAccount accountB = factory.createAccount(owner, 1);
        bytes32 hash = _ethSigned(keccak256("hello"));
        bytes memory sigA = _erc1271PersonalSig(ownerKey, address(account), hash);
        assertEq(account.isValidSignature(hash, sigA), MAGIC);
        assertEq(accountB.isValidSignature(hash, sigA), INVALID, "replayed on another account of the owner");
        bytes memory sigB = _erc1271PersonalSig(ownerKey, address(accountB), hash);
        assertEq(accountB.isValidSignature(hash, sigB), MAGIC);
        assertEq(account.isValidSignature(hash, sigB), INVALID);
        // Bound to the hash as well.
        assertEq(account.isValidSignature(keccak256("other"), sigA), INVALID);
    }

    function test_Erc1271_PersonalSign_BoundToTheChain() public {
        bytes32 hash = _ethSigned(keccak256("hello"));
        bytes memory sig = _erc1271PersonalSig(ownerKey, address(account), hash);
        assertEq(account.isValidSignature(hash, sig), MAGIC);
        vm.chainId(block.chainid + 1);
        assertEq(account.isValidSignature(hash, sig), INVALID, "replayed on another chain");
        assertEq(account.isValidSignature(hash, _erc1271PersonalSig(ownerKey, address(account), hash)), MAGIC);
    }

    /// The nested TypedDataSign path: bound to the account and the chain, and to the dApp's message.
    function test_Erc1271_TypedDataSign() public {
        AgentAccount accountB = factory.createAccount(owner, 1);
        (bytes32 hash, bytes32 appSeparator, bytes32 contentsHash) = _mail();
        bytes memory sig = _erc1271TypedSig(ownerKey, address(account), appSeparator, contentsHash);
        assertEq(account.isValidSignature(hash, sig), MAGIC);
        assertEq(accountB.isValidSignature(hash, sig), INVALID, "replayed on another account of the owner");
        assertEq(account.isValidSignature(keccak256("other"), sig), INVALID, "hash does not match the contents");
        assertEq(
            account.isValidSignature(hash, _erc1271TypedSig(agentKey, address(account), appSeparator, contentsHash)),
            INVALID,
            "agent key"
        );
        vm.chainId(block.chainid + 1);
        assertEq(account.isValidSignature(hash, sig), INVALID, "replayed on another chain");
    }

    /// The owner's personal-message (EIP-191) signature of the hash, and the raw one, are refused.
    function test_Erc1271_PlainSignaturesRefused() public view {
        bytes32 hash = keccak256("message");
        assertEq(account.isValidSignature(hash, _personalSig(ownerKey, hash)), INVALID, "EIP-191");
        assertEq(account.isValidSignature(hash, _ownerSig(ownerKey, hash)), INVALID, "raw hash");
        assertEq(account.isValidSignature(hash, ""), INVALID);
    }

    function test_Erc1271_DetectionValue() public view {
        assertEq(account.isValidSignature(DETECTION_HASH, ""), bytes4(0x77390001));
        assertEq(account.isValidSignature(DETECTION_HASH, hex"00"), INVALID);
        assertEq(account.isValidSignature(bytes32(uint256(DETECTION_HASH) - 1), ""), INVALID);
    }

    /// A message signature over a hash that happens to be a userOpHash is no operation signature.
    function test_Erc1271_SignatureIsNoUserOpSignature() public {
        bytes32 userOpHash = keccak256("op");
        PackedUserOperation memory op = _op(address(account), 0, "", _execute(recipient, 1 ether, ""));
        op.signature = _erc1271PersonalSig(ownerKey, address(account), userOpHash);
        assertEq(account.isValidSignature(userOpHash, op.signature), MAGIC);
        assertEq(_validate(op, userOpHash, 0), 1);
        (, bytes32 appSeparator, bytes32 contentsHash) = _mail();
        op.signature = _erc1271TypedSig(ownerKey, address(account), appSeparator, contentsHash);
        assertEq(_validate(op, userOpHash, 0), 1);
    }

    /// And an operation signature is no message signature.
    function test_Erc1271_UserOpSignatureIsNoMessageSignature() public {
        bytes32 userOpHash = keccak256("op");
        PackedUserOperation memory op = _op(address(account), 0, "", "");
        op.signature = _ownerSig(ownerKey, userOpHash);
        assertEq(_validate(op, userOpHash, 0), 0);
        assertEq(account.isValidSignature(userOpHash, op.signature), INVALID);
    }

    /// A session key, however it signs, has no ERC-1271 power.
    function test_Erc1271_SessionKeyHasNoPower() public {
        _grantAgent();
        bytes32 hash = _ethSigned(keccak256("message"));
        assertEq(account.isValidSignature(hash, _sessionSig(agentKey, address(account), hash)), INVALID);
        assertEq(account.isValidSignature(hash, _erc1271PersonalSig(agentKey, address(account), hash)), INVALID);
        assertEq(account.isValidSignature(hash, _personalSig(agentKey, hash)), INVALID);
        assertEq(account.isValidSignature(hash, _ownerSig(agentKey, hash)), INVALID);
        assertEq(account.isValidSignature(hash, _erc1271PersonalSig(ownerKey, address(account), hash)), MAGIC);
    }

    /// Random bytes are never a valid signature, and the detection value answers only its own query.
    function testFuzz_Erc1271_RandomSignature(bytes32 hash, bytes memory sig) public view {
        bytes4 result = account.isValidSignature(hash, sig);
        if (hash == DETECTION_HASH && sig.length == 0) assertEq(result, bytes4(0x77390001));
        else assertEq(result, INVALID);
    }
}
