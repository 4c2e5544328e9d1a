// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Vm, console} from "forge-std/Test.sol";

import {TestBase, IEntryPoint} from "../utils/TestBase.sol";
import {AgentAccountFactory} from "../../AgentAccountFactory.sol";
import {SessionKeyValidator} from "../../SessionKeyValidator.sol";
import {PackedUserOperation} from "../../interfaces/IERC4337.sol";
import {ISessionKeyValidator} from "../../interfaces/ISessionKeyValidator.sol";
import {TestToken} from "../../testing/TestToken.sol";
import {HandAgentAccountFactory} from "./HandAgentAccount.sol";

interface IAccountGas {
    function validateUserOp(PackedUserOperation calldata userOp, bytes32 userOpHash, uint256 missingAccountFunds)
        external
        returns (uint256);
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4);
}

interface IFactoryGas {
    function createAccount(address owner, uint256 salt) external returns (address);
}

/// @notice Gas of `AgentAccount` (built from OpenZeppelin's parts since #16 item 6) and of
/// `HandAgentAccount` (the hand-written account it replaced, kept as a test contract), side by side on the canonical EntryPoint v0.7 and v0.8 with the same
/// validator, the same grant and the same state, for BENCHMARKS.md ("AgentAccount: hand-written vs
/// OpenZeppelin parts"). Each case measures one path on both accounts from the same snapshot: the
/// state is restored (`revertToState`) and every address involved cooled (`vm.cool`) before each,
/// and restored again after the second, so each starts from the same state, cold as in a fresh
/// transaction (`test_Method_SameAccountTwice` checks the method: the same account measured twice
/// gives the same gas). Figures and ratios (OpenZeppelin / hand-written) are logged, never asserted.
///
/// Paths: (a) an agent's session operation, a plain transfer of 1 wei; (b) an agent's capped ERC-20
/// `transfer`; (c) an owner operation `execute(recipient, 1 wei)`: each as the account's
/// `validateUserOp` (called as the EntryPoint, `missingAccountFunds` 0) and as a whole `handleOps` (no
/// deposit: the account pays the prefund); (d) deployment, the factory's `createAccount` (clone +
/// `initialize`); (e) ERC-1271 `isValidSignature` through ERC-7739, `PersonalSign` and nested
/// `TypedDataSign`. Recipients are funded beforehand, so no figure carries a new-account surcharge.
contract OzAgentAccountGasTest is TestBase {
    struct Deployed {
        IEntryPoint ep;
        address[2] factories; // [hand-written (HandAgentAccount), OpenZeppelin parts (AgentAccount)]
        address[2] accounts;
    }

    Deployed[2] internal chains; // [v0.7, v0.8]
    TestToken internal token;
    address internal target = makeAddr("target");
    address[] internal touched;

    string internal constant MAIL_TYPE = "Mail(address to,string contents)";
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");

    function setUp() public {
        _setUpKeys();
        validator = new SessionKeyValidator();
        token = new TestToken();
        vm.deal(target, 1 ether);
        vm.deal(recipient, 1 ether);
        vm.deal(bundler, 1 ether);
        token.mint(recipient, 1e18);
        touched.push(address(validator));
        touched.push(address(token));
        touched.push(target);
        touched.push(recipient);
        touched.push(bundler);
        touched.push(owner);
        touched.push(agent);

        ISessionKeyValidator.SessionGrant memory g = _grantOf(agent, _targets(target), 1 ether, 1 ether);
        _addToken(g, address(token), 1000e18);

        for (uint256 v; v < 2; ++v) {
            Deployed storage c = chains[v];
            c.ep = _deployEntryPoint(v == 1);
            c.factories[0] = address(new HandAgentAccountFactory(address(c.ep), validator));
            c.factories[1] = address(new AgentAccountFactory(address(c.ep), validator));
            touched.push(address(c.ep));
            for (uint256 k; k < 2; ++k) {
                address account = IFactoryGas(c.factories[k]).createAccount(owner, 0);
                c.accounts[k] = account;
                vm.deal(account, 10 ether);
                token.mint(account, 1000e18);
                vm.prank(owner);
                (bool ok,) = account.call(_grantCall(g));
                require(ok, "grant failed");
                touched.push(account);
                touched.push(c.factories[k]);
                (, bytes memory impl) = c.factories[k].staticcall(abi.encodeWithSignature("accountImplementation()"));
                touched.push(abi.decode(impl, (address)));
            }
        }
    }

    // ------------------------------------------------------------------ the method

    function _coolAll() internal {
        for (uint256 i; i < touched.length; ++i) {
            vm.cool(touched[i]);
        }
    }

    /// @dev `m(v, k)` measured for k = 0 (hand-written) and k = 1 (OpenZeppelin) from the same state.
    function _compare(string memory name, uint256 v, function(uint256, uint256) internal returns (uint256) m)
        internal
        returns (uint256 hand, uint256 oz)
    {
        uint256 snap = vm.snapshotState();
        _coolAll();
        hand = m(v, 0);
        vm.revertToState(snap);
        _coolAll();
        oz = m(v, 1);
        vm.revertToState(snap);
        console.log(
            string.concat(
                v == 0 ? "v0.7 " : "v0.8 ",
                name,
                ": hand-written ",
                vm.toString(hand),
                ", OpenZeppelin ",
                vm.toString(oz),
                ", ratio ",
                _ratio(oz, hand)
            )
        );
    }

    /// @dev `a / b` with four decimals.
    function _ratio(uint256 a, uint256 b) internal pure returns (string memory) {
        uint256 r = (a * 10_000 + b / 2) / b;
        string memory frac = vm.toString(r % 10_000);
        while (bytes(frac).length < 4) {
            frac = string.concat("0", frac);
        }
        return string.concat(vm.toString(r / 10_000), ".", frac);
    }

    /// @dev Gas of one call of `to` with `data` (from `from` when not 0), from the CALL to its return,
    /// every address involved cooled just before (building the operation and reading balances warmed
    /// some): the call data is encoded beforehand and the return data copied afterwards, so the test's
    /// own memory (which grows from case to case) costs nothing inside the measurement.
    function _gasOf(address from, address to, bytes memory data) internal returns (uint256 used, bytes memory ret) {
        _coolAll();
        if (from != address(0)) vm.prank(from, from);
        bool ok;
        uint256 before = gasleft();
        assembly {
            ok := call(gas(), to, 0, add(data, 0x20), mload(data), 0, 0)
        }
        used = before - gasleft();
        ret = new bytes(0);
        assembly {
            ret := mload(0x40)
            mstore(ret, returndatasize())
            returndatacopy(add(ret, 0x20), 0, returndatasize())
            mstore(0x40, add(add(ret, 0x20), and(add(returndatasize(), 0x1f), not(0x1f))))
        }
        if (!ok) {
            assembly {
                revert(add(ret, 0x20), mload(ret))
            }
        }
    }

    // ------------------------------------------------------------------ operations

    function _sessionOp(uint256 v, uint256 k, bytes memory callData)
        internal
        view
        returns (PackedUserOperation memory op)
    {
        Deployed storage c = chains[v];
        op = _op(c.accounts[k], _lane(agent, 0), "", callData);
        op.signature = _sessionSig(agentKey, op.sender, c.ep.getUserOpHash(op));
    }

    function _ownerOp(uint256 v, uint256 k) internal view returns (PackedUserOperation memory op) {
        Deployed storage c = chains[v];
        op = _op(c.accounts[k], 0, "", _execute(recipient, 1, ""));
        op.signature = _ownerSig(ownerKey, c.ep.getUserOpHash(op));
    }

    function _plainOp(uint256 v, uint256 k) internal view returns (PackedUserOperation memory) {
        return _sessionOp(v, k, _execute(target, 1, ""));
    }

    function _tokenOp(uint256 v, uint256 k) internal view returns (PackedUserOperation memory) {
        return _sessionOp(v, k, _execute(address(token), 0, abi.encodeCall(token.transfer, (recipient, 1e18))));
    }

    function _validate(uint256 v, PackedUserOperation memory op) internal returns (uint256 used) {
        bytes32 hash = chains[v].ep.getUserOpHash(op);
        bytes memory data = abi.encodeCall(IAccountGas.validateUserOp, (op, hash, 0));
        bytes memory ret;
        (used, ret) = _gasOf(address(chains[v].ep), op.sender, data);
        assertEq(abi.decode(ret, (uint256)), 0, "validation failed");
    }

    function _handle(uint256 v, PackedUserOperation memory op) internal returns (uint256 used) {
        bytes memory data = abi.encodeCall(IEntryPoint.handleOps, (_one(op), payable(bundler)));
        vm.recordLogs();
        (used,) = _gasOf(bundler, address(chains[v].ep), data);
        // UserOperationEvent(…, success, …): the operation executed.
        Vm.Log[] memory logs = vm.getRecordedLogs();
        bool found;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] == IEntryPoint.UserOperationEvent.selector) {
                (, bool success,,) = abi.decode(logs[i].data, (uint256, bool, uint256, uint256));
                assertTrue(success, "operation reverted");
                found = true;
            }
        }
        assertTrue(found, "no UserOperationEvent");
    }

    function _validatePlain(uint256 v, uint256 k) internal returns (uint256) {
        return _validate(v, _plainOp(v, k));
    }

    function _handlePlain(uint256 v, uint256 k) internal returns (uint256 used) {
        used = _handle(v, _plainOp(v, k));
        assertEq(target.balance, 1 ether + 1); // (no balance read before: it would warm the address)
    }

    function _validateToken(uint256 v, uint256 k) internal returns (uint256) {
        return _validate(v, _tokenOp(v, k));
    }

    function _handleToken(uint256 v, uint256 k) internal returns (uint256 used) {
        used = _handle(v, _tokenOp(v, k));
        assertEq(token.balanceOf(recipient), 2e18);
    }

    function _validateOwner(uint256 v, uint256 k) internal returns (uint256) {
        return _validate(v, _ownerOp(v, k));
    }

    function _handleOwner(uint256 v, uint256 k) internal returns (uint256 used) {
        used = _handle(v, _ownerOp(v, k));
        assertEq(recipient.balance, 1 ether + 1);
    }

    function _deploy(uint256 v, uint256 k) internal returns (uint256 used) {
        address newOwner = makeAddr("new owner");
        address factory_ = chains[v].factories[k];
        bytes memory ret;
        (used, ret) = _gasOf(address(0), factory_, abi.encodeCall(IFactoryGas.createAccount, (newOwner, 42)));
        address account = abi.decode(ret, (address));
        (, bytes memory got) = account.staticcall(abi.encodeWithSignature("owner()"));
        assertEq(abi.decode(got, (address)), newOwner);
    }

    function _personalSign(uint256 v, uint256 k) internal returns (uint256 used) {
        address account = chains[v].accounts[k];
        bytes32 hash = keccak256("a message");
        bytes32 structHash = keccak256(abi.encode(keccak256("PersonalSign(bytes prefixed)"), hash));
        (uint8 sv, bytes32 r, bytes32 s) =
            vm.sign(ownerKey, keccak256(abi.encodePacked("\x19\x01", _domain(account), structHash)));
        bytes memory sig = abi.encodePacked(r, s, sv);
        bytes memory ret;
        (used, ret) = _gasOf(address(0), account, abi.encodeCall(IAccountGas.isValidSignature, (hash, sig)));
        assertEq(abi.decode(ret, (bytes4)), bytes4(0x1626ba7e));
    }

    function _typedDataSign(uint256 v, uint256 k) internal returns (uint256 used) {
        address account = chains[v].accounts[k];
        bytes32 appSeparator =
            keccak256(abi.encode(DOMAIN_TYPEHASH, keccak256("Dapp"), keccak256("2"), block.chainid, makeAddr("dapp")));
        bytes32 contentsHash = keccak256(abi.encode(keccak256(bytes(MAIL_TYPE)), recipient, keccak256("hello")));
        bytes32 hash = keccak256(abi.encodePacked("\x19\x01", appSeparator, contentsHash));
        bytes32 typehash = keccak256(
            abi.encodePacked(
                "TypedDataSign(Mail contents,string name,string version,uint256 chainId,address verifyingContract,bytes32 salt)",
                MAIL_TYPE
            )
        );
        bytes32 structHash = keccak256(
            abi.encode(
                typehash, contentsHash, keccak256("AgentAccount"), keccak256("1"), block.chainid, account, bytes32(0)
            )
        );
        (uint8 sv, bytes32 r, bytes32 s) =
            vm.sign(ownerKey, keccak256(abi.encodePacked("\x19\x01", appSeparator, structHash)));
        bytes memory sig =
            abi.encodePacked(r, s, sv, appSeparator, contentsHash, MAIL_TYPE, uint16(bytes(MAIL_TYPE).length));
        bytes memory ret;
        (used, ret) = _gasOf(address(0), account, abi.encodeCall(IAccountGas.isValidSignature, (hash, sig)));
        assertEq(abi.decode(ret, (bytes4)), bytes4(0x1626ba7e));
    }

    function _domain(address account) internal view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, keccak256("AgentAccount"), keccak256("1"), block.chainid, account));
    }

    /// @dev The method's control: the hand-written account against itself.
    function _validatePlainHandTwice(uint256 v, uint256) internal returns (uint256) {
        return _validate(v, _plainOp(v, 0));
    }

    function _handlePlainHandTwice(uint256 v, uint256) internal returns (uint256) {
        return _handle(v, _plainOp(v, 0));
    }

    // ------------------------------------------------------------------ the cases

    function test_Method_SameAccountTwice() public {
        for (uint256 v; v < 2; ++v) {
            (uint256 a, uint256 b) = _compare("control, hand-written twice, validateUserOp", v, _validatePlainHandTwice);
            assertEq(a, b, "the two measurements of one path differ: the method is broken");
            (a, b) = _compare("control, hand-written twice, handleOps", v, _handlePlainHandTwice);
            assertEq(a, b, "the two measurements of one path differ: the method is broken");
        }
    }

    function test_Gas_A_SessionPlainTransfer() public {
        for (uint256 v; v < 2; ++v) {
            _compare("(a) session plain transfer, validateUserOp", v, _validatePlain);
            _compare("(a) session plain transfer, handleOps", v, _handlePlain);
        }
    }

    function test_Gas_B_SessionTokenTransfer() public {
        for (uint256 v; v < 2; ++v) {
            _compare("(b) session ERC-20 transfer, validateUserOp", v, _validateToken);
            _compare("(b) session ERC-20 transfer, handleOps", v, _handleToken);
        }
    }

    function test_Gas_C_OwnerOp() public {
        for (uint256 v; v < 2; ++v) {
            _compare("(c) owner op, validateUserOp", v, _validateOwner);
            _compare("(c) owner op, handleOps", v, _handleOwner);
        }
    }

    function test_Gas_D_Deployment() public {
        for (uint256 v; v < 2; ++v) {
            _compare("(d) factory createAccount (clone + initialize)", v, _deploy);
        }
    }

    function test_Gas_E_Erc1271() public {
        for (uint256 v; v < 2; ++v) {
            _compare("(e) isValidSignature, ERC-7739 PersonalSign", v, _personalSign);
            _compare("(e) isValidSignature, ERC-7739 TypedDataSign", v, _typedDataSign);
        }
    }
}
