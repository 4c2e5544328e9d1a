// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {console} from "forge-std/Test.sol";
import {Account as OzAccount} from "@openzeppelin/contracts/account/Account.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {
    Execution,
    IERC7579Execution,
    IERC7579ModuleConfig,
    MODULE_TYPE_VALIDATOR
} from "@openzeppelin/contracts/interfaces/draft-IERC7579.sol";

import {IEntryPoint, TestBase} from "./utils/TestBase.sol";
import {AgentAccountFactory} from "../AgentAccountFactory.sol";
import {Eip7702Account} from "../Eip7702Account.sol";
import {SessionKeyValidator} from "../SessionKeyValidator.sol";
import {IAccount, PackedUserOperation} from "../interfaces/IERC4337.sol";
import {IAgentAccount} from "../interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "../interfaces/ISessionKeyValidator.sol";

/// @notice {Eip7702Account}: EOAs delegated to it with EIP-7702 (forge's `signAndAttachDelegation`,
/// the Prague EVM), their owner operations signed by the EOA key through the canonical EntryPoint v0.8
/// with the EIP-7702 initCode marker, {SessionKeyValidator} installed and granted in one batch, the
/// agent's session operations on its module lane, the caps, wrong signers and lanes, sender binding
/// across two delegated EOAs, uninstallation, the EOA's direct calls, EntryPoint v0.7 refused, the
/// userOpHash binding the delegate, and ERC-1271 for the EOA's key only.
/// forge-config: default.evm_version = "prague"
contract Eip7702AccountTest is TestBase {
    IEntryPoint internal ep;
    Eip7702Account internal impl;
    address internal eoa;
    uint256 internal eoaKey;
    address internal agent2;
    uint256 internal agent2Key;
    address internal target = makeAddr("target");

    uint128 internal constant CAP = 1 ether;
    uint96 internal constant GAS_CAP = 1 ether;
    uint48 internal constant AFTER = 1_000;
    uint48 internal constant UNTIL = 100 days;

    bytes32 internal constant MODE_SINGLE = bytes32(0);
    bytes32 internal constant MODE_BATCH = bytes32(bytes1(0x01));

    /// @dev EntryPoint v0.8's EIP-7702 initCode marker: `0x7702` padded to 20 bytes.
    bytes internal constant MARKER = abi.encodePacked(bytes20(bytes2(0x7702)));

    function setUp() public {
        _setUpKeys();
        (agent2, agent2Key) = makeAddrAndKey("agent2");
        (eoa, eoaKey) = makeAddrAndKey("eoa");
        vm.warp(AFTER + 1);
        ep = _deployEntryPoint(true);
        validator = new SessionKeyValidator();
        impl = new Eip7702Account();
        _delegate(eoaKey, address(impl));
        vm.deal(eoa, 10 ether);
    }

    // ------------------------------------------------------------------ helpers

    /// @dev The EOA of `pk` signs an EIP-7702 authorisation naming `implementation`, attached to the
    /// next call (a type-4 transaction sent by this contract).
    function _delegate(uint256 pk, address implementation) internal {
        vm.signAndAttachDelegation(implementation, pk);
        (bool ok,) = vm.addr(pk).call("");
        require(ok, "the delegating call failed");
        assertEq(vm.addr(pk).code, abi.encodePacked(hex"ef0100", implementation), "delegation designator");
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

    function _exec(address to, uint256 value, bytes memory data) internal pure returns (bytes memory) {
        return abi.encodeCall(IERC7579Execution.execute, (MODE_SINGLE, abi.encodePacked(to, value, data)));
    }

    function _execBatch(Execution[] memory calls) internal pure returns (bytes memory) {
        return abi.encodeCall(IERC7579Execution.execute, (MODE_BATCH, abi.encode(calls)));
    }

    function _installCall() internal view returns (bytes memory) {
        return abi.encodeCall(IERC7579ModuleConfig.installModule, (MODULE_TYPE_VALIDATOR, address(validator), ""));
    }

    function _uninstallCall() internal view returns (bytes memory) {
        return abi.encodeCall(IERC7579ModuleConfig.uninstallModule, (MODULE_TYPE_VALIDATOR, address(validator), ""));
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

    /// @dev An owner operation of the EOA `a` on its default lane (nonce key 0: no module), with the
    /// EIP-7702 marker as initCode, signed by `pk` (raw ECDSA over EntryPoint v0.8's userOpHash).
    function _ownerOp(address a, uint256 pk, bytes memory callData)
        internal
        view
        returns (PackedUserOperation memory op)
    {
        op = _op(a, ep.getNonce(a, 0), MARKER, callData);
        _setGas(op, 60_000, 1_500_000, 1_000_000, 1 gwei, 2 gwei); // room for an installation and a grant
        op.signature = _ownerSig(pk, ep.getUserOpHash(op));
    }

    /// @dev The owner operation of the EOA `a` (key `pk`) installing the module and granting `g` in one
    /// ERC-7579 batch: the account's own `installModule` and the validator's `grantSession`.
    function _installAndGrantOp(address a, uint256 pk, ISessionKeyValidator.SessionGrant memory g)
        internal
        view
        returns (PackedUserOperation memory)
    {
        Execution[] memory calls = new Execution[](2);
        calls[0] = Execution(a, 0, _installCall());
        calls[1] = Execution(address(validator), 0, abi.encodeCall(ISessionKeyValidator.grantSession, (g)));
        return _ownerOp(a, pk, _execBatch(calls));
    }

    function _installAndGrant(address a, uint256 pk, ISessionKeyValidator.SessionGrant memory g) internal {
        _handle(_installAndGrantOp(a, pk, g));
        assertTrue(Eip7702Account(payable(a)).isModuleInstalled(MODULE_TYPE_VALIDATOR, address(validator), ""));
        assertTrue(validator.getSession(a, g.key).active);
    }

    /// @dev The module-path nonce key of a lane (period 0): `validator ‖ lane ‖ 0`.
    function _moduleKey(uint16 lane) internal view returns (uint192) {
        return (uint192(uint160(address(validator))) << 32) | (uint192(lane) << 16);
    }

    /// @dev An operation of the key of `pk` on `a`, nonce key `nonceKey`, naming `named` in its signature.
    function _sessionOpOn(address a, uint256 pk, uint192 nonceKey, address named, bytes memory callData)
        internal
        view
        returns (PackedUserOperation memory op)
    {
        op = _op(a, ep.getNonce(a, nonceKey), "", callData);
        op.signature = _sessionSig(pk, named, ep.getUserOpHash(op));
    }

    /// @dev An operation of the key of `pk` on its own lane of `a`, signed.
    function _sessionOp(address a, uint256 pk, bytes memory callData)
        internal
        view
        returns (PackedUserOperation memory)
    {
        return _sessionOpOn(a, pk, _moduleKey(validator.getSession(a, vm.addr(pk)).lane), a, callData);
    }

    /// The suite runs on the Prague EVM (the inline config above; foundry.toml says cancun): EIP-2537's
    /// BLS12-381 G1 addition answers at 0x0b (two points at infinity: 128 zero bytes).
    function test_RunsOnPrague() public view {
        (bool ok, bytes memory ret) = address(0x0b).staticcall(new bytes(256));
        assertTrue(ok);
        assertEq(ret.length, 128, "not Prague");
    }

    // ------------------------------------------------------------------ the flow

    /// The EOA delegates; its first operation (EntryPoint v0.8, initCode = the marker, signed by the EOA
    /// key) installs the module and grants the agent in one batch; the agent's operation on its lane
    /// transfers within the cap.
    function test_Delegate_OwnerInstallsAndGrants_AgentTransfers() public {
        assertEq(eoa.code.length, 23);
        assertEq(bytes3(eoa.code), bytes3(0xef0100));
        assertEq(address(Eip7702Account(payable(eoa)).entryPoint()), ENTRY_POINT_V08, "EntryPoint v0.8");
        assertEq(address(impl.entryPoint()), ENTRY_POINT_V08);
        assertFalse(Eip7702Account(payable(eoa)).isModuleInstalled(MODULE_TYPE_VALIDATOR, address(validator), ""));

        PackedUserOperation memory first = _installAndGrantOp(eoa, eoaKey, _grant(agent, _targets(target)));
        assertEq(first.initCode, hex"7702000000000000000000000000000000000000");
        vm.expectEmit(true, false, false, true, address(eoa));
        emit IERC7579ModuleConfig.ModuleInstalled(MODULE_TYPE_VALIDATOR, address(validator));
        _handle(first);
        assertTrue(Eip7702Account(payable(eoa)).isModuleInstalled(MODULE_TYPE_VALIDATOR, address(validator), ""));
        assertTrue(validator.isInitialized(eoa));
        ISessionKeyValidator.Session memory s = validator.getSession(eoa, agent);
        assertTrue(s.active);
        assertEq(s.lane, 1);
        assertEq(ep.getNonce(eoa, 0), 1, "owner lane used once");

        uint256 before = eoa.balance;
        PackedUserOperation memory op = _sessionOp(eoa, agentKey, _exec(target, 0.4 ether, ""));
        _handle(op);
        assertEq(target.balance, 0.4 ether);
        assertLe(eoa.balance, before - 0.4 ether, "the EOA paid, value and gas");
        s = validator.getSession(eoa, agent);
        assertEq(s.spent, 0.4 ether);
        assertEq(s.gasSpent, _maxCost(op));
        assertEq(s.opsUsed, 1);
        assertEq(ep.getNonce(eoa, _moduleKey(1)) & type(uint64).max, 1, "the agent's lane");

        // A session operation may carry the marker too; the agent's batch lands.
        op = _op(eoa, ep.getNonce(eoa, _moduleKey(1)), MARKER, "");
        Execution[] memory calls = new Execution[](2);
        (calls[0], calls[1]) = (Execution(target, 0.1 ether, ""), Execution(target, 0.2 ether, ""));
        op.callData = _execBatch(calls);
        op.signature = _sessionSig(agentKey, eoa, ep.getUserOpHash(op));
        _handle(op);
        assertEq(target.balance, 0.7 ether);
        assertEq(validator.remainingBudget(eoa, agent), 0.3 ether);
    }

    /// The caps hold: over the value cap, and a target not granted, refused by the validator by name.
    function test_Caps_ValueAndTarget() public {
        _installAndGrant(eoa, eoaKey, _grant(agent, _targets(target)));
        _handle(_sessionOp(eoa, agentKey, _exec(target, 0.6 ether, "")));

        PackedUserOperation memory op = _sessionOp(eoa, agentKey, _exec(target, 0.5 ether, ""));
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.SpendCapExceeded.selector, 0.5 ether, 0.4 ether));
        _handle(op);

        op = _sessionOp(eoa, agentKey, _exec(recipient, 1, ""));
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.TargetNotAllowed.selector, recipient));
        _handle(op);

        // The account itself (the EOA) is never a session target.
        op = _sessionOp(eoa, agentKey, _exec(eoa, 0, _uninstallCall()));
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.ForbiddenTarget.selector, eoa));
        _handle(op);
        assertEq(target.balance, 0.6 ether);
        assertEq(recipient.balance, 0);
    }

    /// An owner operation signed by another key (the agent's, raw) is refused: AA24.
    function test_OwnerOp_OtherKey_AA24() public {
        PackedUserOperation memory op = _installAndGrantOp(eoa, agentKey, _grant(agent, _targets(target)));
        _expectAA24();
        _handle(op);
        // The same operation signed by the EOA key lands.
        op.signature = _ownerSig(eoaKey, ep.getUserOpHash(op));
        _handle(op);
        assertTrue(validator.getSession(eoa, agent).active);
    }

    /// An agent on another agent's lane is refused; the owner's lane refuses a session signature.
    function test_AgentOnAnotherAgentsLane_Refused() public {
        _installAndGrant(eoa, eoaKey, _grant(agent, _targets(target)));
        _handle(
            _ownerOp(
                eoa,
                eoaKey,
                _exec(
                    address(validator),
                    0,
                    abi.encodeCall(ISessionKeyValidator.grantSession, (_grant(agent2, _targets(target))))
                )
            )
        );
        assertEq(validator.getSession(eoa, agent2).lane, 2);

        PackedUserOperation memory op = _sessionOpOn(eoa, agentKey, _moduleKey(2), eoa, _exec(target, 1, ""));
        _expectAA23(
            abi.encodeWithSelector(ISessionKeyValidator.NonceLaneNotAllowed.selector, _moduleKey(2), _moduleKey(1))
        );
        _handle(op);

        op = _sessionOpOn(eoa, agentKey, 0, eoa, _exec(target, 1, ""));
        _expectAA24();
        _handle(op);

        _handle(_sessionOp(eoa, agent2Key, _exec(target, 1, "")));
        assertEq(target.balance, 1);
    }

    /// Sender binding: the session the agent holds on one delegated EOA is not usable on a second one
    /// (with the module installed and another agent granted there).
    function test_SenderBinding_TwoDelegatedEoas() public {
        (address eoa2, uint256 eoa2Key) = makeAddrAndKey("eoa2");
        _delegate(eoa2Key, address(impl));
        vm.deal(eoa2, 10 ether);
        _installAndGrant(eoa, eoaKey, _grant(agent, _targets(target)));
        _installAndGrant(eoa2, eoa2Key, _grant(agent2, _targets(target)));

        // The agent's genuine operation on the first EOA, moved onto the second.
        PackedUserOperation memory op = _sessionOp(eoa, agentKey, _exec(target, 1, ""));
        op.sender = eoa2;
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.AccountMismatch.selector, eoa, eoa2, eoa2));
        _handle(op);

        // Signed for the second EOA, on the first's lane number: no session of the agent there.
        op = _sessionOpOn(eoa2, agentKey, _moduleKey(1), eoa2, _exec(target, 1, ""));
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.UnknownSession.selector, eoa2, agent));
        _handle(op);

        _handle(_sessionOp(eoa, agentKey, _exec(target, 1, "")));
        _handle(_sessionOp(eoa2, agent2Key, _exec(target, 1, "")));
        assertEq(target.balance, 2);
    }

    /// Uninstalling the module (an owner operation) ends the sessions; a reinstallation does not revive them.
    function test_Uninstall_EndsSessions() public {
        _installAndGrant(eoa, eoaKey, _grant(agent, _targets(target)));
        _handle(_sessionOp(eoa, agentKey, _exec(target, 1, "")));

        _handle(_ownerOp(eoa, eoaKey, _exec(eoa, 0, _uninstallCall())));
        assertFalse(Eip7702Account(payable(eoa)).isModuleInstalled(MODULE_TYPE_VALIDATOR, address(validator), ""));
        assertFalse(validator.isInitialized(eoa));

        // The account no longer asks the module: the EOA's own signer refuses the session signature.
        PackedUserOperation memory op = _sessionOpOn(eoa, agentKey, _moduleKey(1), eoa, _exec(target, 1, ""));
        _expectAA24();
        _handle(op);

        _handle(_ownerOp(eoa, eoaKey, _exec(eoa, 0, _installCall())));
        op = _sessionOpOn(eoa, agentKey, _moduleKey(1), eoa, _exec(target, 1, ""));
        _expectAA23(abi.encodeWithSelector(ISessionKeyValidator.SessionUninstalled.selector, eoa, agent));
        _handle(op);
        assertEq(target.balance, 1);
    }

    /// The EOA key keeps full power: it calls the account directly (`msg.sender == address(this)`);
    /// anyone else is refused.
    function test_EoaKeepsFullPower_DirectCalls() public {
        _installAndGrant(eoa, eoaKey, _grant(agent, _targets(target)));
        vm.prank(agent);
        vm.expectRevert(abi.encodeWithSelector(OzAccount.AccountUnauthorized.selector, agent));
        Eip7702Account(payable(eoa)).execute(MODE_SINGLE, abi.encodePacked(recipient, uint256(1)));

        vm.prank(eoa, eoa);
        Eip7702Account(payable(eoa)).execute(MODE_SINGLE, abi.encodePacked(recipient, uint256(1 ether)));
        assertEq(recipient.balance, 1 ether);
        vm.prank(eoa, eoa);
        Eip7702Account(payable(eoa)).uninstallModule(MODULE_TYPE_VALIDATOR, address(validator), "");
        assertFalse(validator.isInitialized(eoa));
    }

    // ------------------------------------------------------------------ EntryPoint v0.7

    /// The implementation trusts EntryPoint v0.8 only: through v0.7 the account's `validateUserOp`
    /// refuses its caller (AA23 `AccountUnauthorized(v0.7)`), for the owner and for a session; v0.7
    /// does not know the marker (AA10: the EOA already has code).
    function test_EntryPointV07_Refused() public {
        IEntryPoint ep07 = _deployEntryPoint(false);
        _installAndGrant(eoa, eoaKey, _grant(agent, _targets(target)));

        PackedUserOperation memory op = _op(eoa, ep07.getNonce(eoa, 0), "", _exec(target, 1, ""));
        op.signature = _ownerSig(eoaKey, ep07.getUserOpHash(op));
        vm.expectRevert(
            abi.encodeWithSelector(
                IEntryPoint.FailedOpWithRevert.selector,
                0,
                "AA23 reverted",
                abi.encodeWithSelector(OzAccount.AccountUnauthorized.selector, address(ep07))
            )
        );
        vm.prank(bundler, bundler);
        ep07.handleOps(_one(op), payable(bundler));

        op = _op(eoa, ep07.getNonce(eoa, _moduleKey(1)), "", _exec(target, 1, ""));
        op.signature = _sessionSig(agentKey, eoa, ep07.getUserOpHash(op));
        vm.expectRevert(
            abi.encodeWithSelector(
                IEntryPoint.FailedOpWithRevert.selector,
                0,
                "AA23 reverted",
                abi.encodeWithSelector(OzAccount.AccountUnauthorized.selector, address(ep07))
            )
        );
        vm.prank(bundler, bundler);
        ep07.handleOps(_one(op), payable(bundler));

        op = _op(eoa, ep07.getNonce(eoa, 0), MARKER, _exec(target, 1, ""));
        op.signature = _ownerSig(eoaKey, ep07.getUserOpHash(op));
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOp.selector, 0, "AA10 sender already constructed"));
        vm.prank(bundler, bundler);
        ep07.handleOps(_one(op), payable(bundler));
        assertEq(target.balance, 0);
    }

    // ------------------------------------------------------------------ the delegate in the hash

    /// With the marker, EntryPoint v0.8's userOpHash binds the delegate: re-delegating the EOA to
    /// another implementation changes the hash, and an operation signed before is refused (AA24);
    /// without the marker the hash does not change.
    function test_UserOpHash_BindsTheDelegate() public {
        PackedUserOperation memory op = _installAndGrantOp(eoa, eoaKey, _grant(agent, _targets(target)));
        bytes32 hash = ep.getUserOpHash(op);
        PackedUserOperation memory plain = _op(eoa, 0, "", op.callData);
        bytes32 plainHash = ep.getUserOpHash(plain);

        Eip7702Account impl2 = new Eip7702Account();
        _delegate(eoaKey, address(impl2));
        assertTrue(ep.getUserOpHash(op) != hash, "the marker binds the delegate");
        assertEq(ep.getUserOpHash(plain), plainHash, "no marker, no binding");

        _expectAA24();
        _handle(op);

        // Signed anew for the new delegate, it lands.
        op.signature = _ownerSig(eoaKey, ep.getUserOpHash(op));
        _handle(op);
        assertTrue(validator.getSession(eoa, agent).active);

        // The next owner operation, signed for the delegate of the moment, lands too.
        _handle(_ownerOp(eoa, eoaKey, _exec(target, 1, "")));
        assertEq(target.balance, 1);
    }

    // ------------------------------------------------------------------ ERC-1271

    /// ERC-1271: the EOA's own ECDSA signature of the hash passes (so verifiers that go to ERC-1271
    /// when the signer has code, like OpenZeppelin's `SignatureChecker`, still accept the EOA's
    /// signatures after delegation); no agent key passes, raw or through the module (which always
    /// refuses), nor the owner's signature wrapped for the module, nor a signature of another hash.
    function test_Erc1271_OwnerOnly() public {
        _installAndGrant(eoa, eoaKey, _grant(agent, _targets(target)));
        bytes32 hash = keccak256("message");
        Eip7702Account a = Eip7702Account(payable(eoa));
        bytes memory ownerSig = _ownerSig(eoaKey, hash);
        assertEq(a.isValidSignature(hash, ownerSig), bytes4(0x1626ba7e), "owner");
        assertTrue(SignatureChecker.isValidSignatureNow(eoa, hash, ownerSig), "SignatureChecker, owner");
        assertEq(a.isValidSignature(keccak256("other"), ownerSig), bytes4(0xffffffff), "another hash");
        assertEq(a.isValidSignature(hash, _ownerSig(agentKey, hash)), bytes4(0xffffffff), "agent raw");
        assertFalse(
            SignatureChecker.isValidSignatureNow(eoa, hash, _ownerSig(agentKey, hash)), "SignatureChecker, agent"
        );
        assertEq(
            a.isValidSignature(hash, abi.encodePacked(address(validator), _sessionSig(agentKey, eoa, hash))),
            bytes4(0xffffffff),
            "session through the module"
        );
        assertEq(
            a.isValidSignature(hash, abi.encodePacked(address(validator), ownerSig)),
            bytes4(0xffffffff),
            "owner through the module"
        );
    }
}

/// @notice Gas of an agent's session operation (a plain transfer of 1 wei) on a delegated EOA and on
/// `AgentAccount`, both through EntryPoint v0.8 with the same validator and grant, each case in its own
/// transaction after `setUp` (storage cold): the account's `validateUserOp` called as the EntryPoint
/// with `missingAccountFunds` 0 (as `gas/ValidationGas.t.sol` measures), and the whole `handleOps`
/// (deposit-funded). The figures are logged, not asserted.
/// forge-config: default.evm_version = "prague"
contract Eip7702AccountGasTest is TestBase {
    IEntryPoint internal ep;
    address internal eoa;
    uint256 internal eoaKey;
    address internal agentAccount;
    address internal target = makeAddr("target");

    function setUp() public {
        _setUpKeys();
        (eoa, eoaKey) = makeAddrAndKey("eoa");
        ep = _deployEntryPoint(true);
        validator = new SessionKeyValidator();
        ISessionKeyValidator.SessionGrant memory g = _grantOf(agent, _targets(target), 1 ether, 1 ether);

        Eip7702Account impl = new Eip7702Account();
        vm.signAndAttachDelegation(address(impl), eoaKey);
        (bool ok,) = eoa.call("");
        require(ok, "the delegating call failed");
        vm.deal(eoa, 10 ether);
        vm.startPrank(eoa, eoa);
        Eip7702Account(payable(eoa)).installModule(MODULE_TYPE_VALIDATOR, address(validator), "");
        validator.grantSession(g);
        ep.depositTo{value: 1 ether}(eoa);
        vm.stopPrank();

        factory = new AgentAccountFactory(address(ep), validator);
        agentAccount = address(factory.createAccount(owner, 0));
        vm.deal(agentAccount, 10 ether);
        vm.prank(owner);
        IAgentAccount(agentAccount)
            .execute(address(validator), 0, abi.encodeCall(ISessionKeyValidator.grantSession, (g)));
        ep.depositTo{value: 1 ether}(agentAccount);
    }

    /// @dev The agent's operation: on the delegated EOA, ERC-7579 `execute` on its module lane 1; on
    /// `AgentAccount`, `execute` on its key's lane.
    function _opOf(bool eip7702) internal view returns (PackedUserOperation memory op) {
        if (eip7702) {
            uint192 key = (uint192(uint160(address(validator))) << 32) | (uint192(1) << 16);
            op = _op(
                eoa,
                ep.getNonce(eoa, key),
                "",
                abi.encodeCall(IERC7579Execution.execute, (bytes32(0), abi.encodePacked(target, uint256(1))))
            );
        } else {
            op = _op(agentAccount, _lane(agent, 0), "", _execute(target, 1, ""));
        }
        op.signature = _sessionSig(agentKey, op.sender, ep.getUserOpHash(op));
    }

    function _validation(bool eip7702, string memory name) internal {
        PackedUserOperation memory op = _opOf(eip7702);
        bytes32 hash = ep.getUserOpHash(op);
        vm.prank(address(ep));
        uint256 before = gasleft();
        uint256 validationData = IAccount(op.sender).validateUserOp(op, hash, 0);
        uint256 used = before - gasleft();
        assertEq(validationData & 1, 0);
        console.log("%s, session plain transfer, validateUserOp: %d gas", name, used);
    }

    function _handleOps(bool eip7702, string memory name) internal {
        PackedUserOperation memory op = _opOf(eip7702);
        vm.prank(bundler, bundler);
        uint256 before = gasleft();
        ep.handleOps(_one(op), payable(bundler));
        uint256 used = before - gasleft();
        assertEq(target.balance, 1);
        console.log("%s, session plain transfer, handleOps: %d gas", name, used);
    }

    function test_Gas_Eip7702_Validation() public {
        _validation(true, "Eip7702Account (delegated EOA)");
    }

    function test_Gas_AgentAccount_Validation() public {
        _validation(false, "AgentAccount");
    }

    function test_Gas_Eip7702_HandleOps() public {
        _handleOps(true, "Eip7702Account (delegated EOA)");
    }

    function test_Gas_AgentAccount_HandleOps() public {
        _handleOps(false, "AgentAccount");
    }
}
