// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Test, console} from "forge-std/Test.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

import {PackedUserOperation} from "../../interfaces/IERC4337.sol";
import {Call, IAgentAccount} from "../../interfaces/IAgentAccount.sol";

// Validation gas of AgentAccount + SessionKeyValidator, one figure per kind of operation, for
// BENCHMARKS.md. Self-contained on purpose: it imports only interfaces that did not change and deploys
// the contracts by artifact name, so the same file also runs on the contracts before the session rules
// (git b2bce1e), where it grants with the old grantSession and signs owner operations EIP-191 style.
// Reproduce: see BENCHMARKS.md, "Validation gas (SessionKeyValidator)".

interface IEntryPointBench {
    function getUserOpHash(PackedUserOperation calldata userOp) external view returns (bytes32);
    function handleOps(PackedUserOperation[] calldata ops, address payable beneficiary) external;
}

interface IAccountBench {
    function validateUserOp(PackedUserOperation calldata userOp, bytes32 userOpHash, uint256 missingAccountFunds)
        external
        returns (uint256);
}

interface IFactoryBench {
    function createAccount(address owner, uint256 salt) external returns (address);
}

contract BenchToken is ERC20 {
    constructor() ERC20("Bench", "BENCH") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}

contract BenchTarget {
    uint256 public hits;

    function hit(uint256 n) external payable {
        hits += n;
    }
}

abstract contract ValidationGasBase is Test {
    // The new grant input, mirrored here (ISessionKeyValidator of the new code).
    struct TargetPermission {
        address target;
        bool anySelector;
        bytes4[] selectors;
    }

    struct TokenLimit {
        address token;
        uint112 cap;
    }

    struct SessionGrant {
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
        TargetPermission[] targets;
        TokenLimit[] tokens;
    }

    address internal constant CREATE2_DEPLOYER = 0x4e59b44847b379578588920cA78FbF26c0B4956C;
    bytes32 internal constant SALT_V07 = 0x90d8084deab30c2a37c45e8d47f49f2f7965183cb6990a98943ef94940681de3;
    bytes internal constant CREATE2_DEPLOYER_CODE =
        hex"7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffe03601600081602082378035828234f58015156039578182fd5b8082525050506014600cf3";

    IEntryPointBench internal ep;
    address internal validator;
    address internal account;
    BenchToken internal token;
    BenchTarget internal rec;
    address internal target = makeAddr("target");
    address internal recipient = makeAddr("recipient");
    address internal owner;
    uint256 internal ownerKey;
    address internal agent;
    uint256 internal agentKey;
    /// @dev True for the new contracts (session rules), false for b2bce1e.
    bool internal sessionRules;
    /// @dev The grant's budget period in seconds (0: none) and its cap, set before `setUp` grants.
    uint32 internal period;
    uint128 internal periodCap;
    /// @dev The period index the session operations name in their nonce key.
    uint256 internal periodIndex;

    function setUp() public virtual {
        (owner, ownerKey) = makeAddrAndKey("owner");
        (agent, agentKey) = makeAddrAndKey("agent");
        vm.etch(CREATE2_DEPLOYER, CREATE2_DEPLOYER_CODE);
        bytes memory creationCode = vm.parseJsonBytes(
            vm.readFile("node_modules/@account-abstraction/contracts/artifacts/EntryPoint.json"), ".bytecode"
        );
        (bool ok, bytes memory ret) = CREATE2_DEPLOYER.call(abi.encodePacked(SALT_V07, creationCode));
        require(ok, "EntryPoint deployment failed");
        ep = IEntryPointBench(address(bytes20(ret)));

        validator = deployCode("SessionKeyValidator.sol:SessionKeyValidator");
        address factory = deployCode("AgentAccountFactory.sol:AgentAccountFactory", abi.encode(ep, validator));
        account = IFactoryBench(factory).createAccount(owner, 0);
        vm.deal(account, 10 ether);
        token = new BenchToken();
        token.mint(account, 1000e18);
        rec = new BenchTarget();

        (sessionRules,) = validator.staticcall(
            abi.encodeWithSignature("getPermission(address,address,address)", account, agent, target)
        );
        vm.prank(owner);
        IAgentAccount(account).execute(validator, 0, sessionRules ? _newGrant() : _oldGrant());
    }

    /// @dev New: plain transfers to `target`, `hit` on `rec`, `token` capped.
    function _newGrant() internal view returns (bytes memory) {
        SessionGrant memory g;
        (g.key, g.spendCap, g.gasCap) = (agent, 1 ether, 1 ether);
        (g.period, g.periodCap) = (period, periodCap);
        g.targets = new TargetPermission[](2);
        g.targets[0].target = target;
        g.targets[1].target = address(rec);
        g.targets[1].selectors = new bytes4[](1);
        g.targets[1].selectors[0] = BenchTarget.hit.selector;
        g.tokens = new TokenLimit[](1);
        g.tokens[0] = TokenLimit(address(token), 1000e18);
        return abi.encodeWithSignature(
            "grantSession((address,uint48,uint48,address,uint128,uint96,address,uint32,uint32,uint128,(address,bool,bytes4[])[],(address,uint112)[]))",
            g
        );
    }

    /// @dev Old (b2bce1e): an allowlist of targets (any call) and a spend cap.
    function _oldGrant() internal view returns (bytes memory) {
        address[] memory targets = new address[](3);
        (targets[0], targets[1], targets[2]) = (target, address(rec), address(token));
        return abi.encodeWithSignature(
            "grantSession(address,address[],uint128,uint48,uint48,address)", agent, targets, 1 ether, 0, 0, address(0)
        );
    }

    function _tokenTransfer() internal view returns (bytes memory) {
        return abi.encodeCall(ERC20.transfer, (recipient, 1e18));
    }

    /// @dev Gas of the account's validateUserOp (called as the EntryPoint, storage cold as in a fresh
    /// transaction), for an operation of `callData` signed by the owner or the agent (or a stub).
    function _measure(string memory name, bytes memory callData, bool session, bool stub)
        internal
        returns (uint256 used)
    {
        PackedUserOperation memory op;
        op.sender = account;
        op.nonce = session ? (periodIndex << 224) | (uint256(uint160(agent)) << 64) : 0;
        op.callData = callData;
        op.accountGasLimits = bytes32((uint256(1_500_000) << 128) | uint256(300_000));
        op.preVerificationGas = 60_000;
        op.gasFees = bytes32((uint256(1 gwei) << 128) | uint256(2 gwei));
        bytes32 hash = ep.getUserOpHash(op);
        bytes32 eip191 = keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", hash));
        if (session) {
            (uint8 v, bytes32 r, bytes32 s) = vm.sign(agentKey, eip191);
            op.signature = stub
                ? abi.encodePacked(bytes1(0x08), account, agent, bytes32(uint256(1)), bytes32(uint256(1)), uint8(27))
                : abi.encodePacked(bytes1(0x08), account, agent, r, s, v);
        } else {
            // New: the raw userOpHash; old: its EIP-191 hash.
            (uint8 v, bytes32 r, bytes32 s) = vm.sign(ownerKey, sessionRules ? hash : eip191);
            op.signature = abi.encodePacked(r, s, v);
        }

        vm.prank(address(ep));
        uint256 before = gasleft();
        uint256 validationData = IAccountBench(account).validateUserOp(op, hash, 0);
        used = before - gasleft();
        assertEq(validationData & 1, stub ? 1 : 0, "unexpected signature result");
        console.log("%s: %d gas (%s)", name, used, sessionRules ? "session rules" : "b2bce1e");
    }
}

/// @notice One validation per kind of operation, each in a fresh transaction (cold storage).
contract ValidationGasTest is ValidationGasBase {
    function test_Gas_OwnerOp() public {
        _measure(
            "owner op, execute(recipient, 1 wei)",
            abi.encodeCall(IAgentAccount.execute, (recipient, 1, "")),
            false,
            false
        );
    }

    function test_Gas_SessionPlainTransfer() public {
        _measure("session plain transfer, 1 wei", abi.encodeCall(IAgentAccount.execute, (target, 1, "")), true, false);
    }

    function test_Gas_SessionPlainTransfer_StubSignature() public {
        _measure(
            "session plain transfer, stub signature", abi.encodeCall(IAgentAccount.execute, (target, 1, "")), true, true
        );
    }

    function test_Gas_SessionListedFunction() public {
        _measure(
            "session call of a listed function",
            abi.encodeCall(IAgentAccount.execute, (address(rec), 0, abi.encodeCall(BenchTarget.hit, (1)))),
            true,
            false
        );
    }

    function test_Gas_SessionTokenTransfer() public {
        _measure(
            "session token transfer, first of the grant",
            abi.encodeCall(IAgentAccount.execute, (address(token), 0, _tokenTransfer())),
            true,
            false
        );
    }

    function test_Gas_SessionBatchOfThree() public {
        Call[] memory calls = new Call[](3);
        calls[0] = Call(target, 1, "");
        calls[1] = Call(address(rec), 0, abi.encodeCall(BenchTarget.hit, (1)));
        calls[2] = Call(address(token), 0, _tokenTransfer());
        _measure(
            "session batch of 3 (plain, listed function, token)",
            abi.encodeCall(IAgentAccount.executeBatch, (calls)),
            true,
            false
        );
    }
}

/// @notice The same, later in the grant: one capped token transfer was validated before (setUp), so
/// the token's counter is no longer written from zero.
contract ValidationGasLaterTest is ValidationGasBase {
    function setUp() public override {
        super.setUp();
        _measure("(warm-up in setUp, warm storage: not a figure)", _tokenTransferOp(), true, false);
    }

    function _tokenTransferOp() internal view returns (bytes memory) {
        return abi.encodeCall(IAgentAccount.execute, (address(token), 0, _tokenTransfer()));
    }

    function test_Gas_SessionTokenTransfer_Later() public {
        _measure("session token transfer, later in the grant", _tokenTransferOp(), true, false);
    }
}

/// @dev A periodic session (1 day, 0.5 ETH per period), operations of period 3: a plain transfer also
/// counts against the period's cap, in a counter slot of its own per period. Skipped on b2bce1e (no
/// periods there).
abstract contract ValidationGasPeriodicBase is ValidationGasBase {
    function setUp() public virtual override {
        (period, periodCap) = (1 days, 0.5 ether);
        super.setUp();
        // Period 3 runs from 3 days after validAfter (0) on.
        vm.warp(3 days + 1);
        periodIndex = 3;
    }

    function _plainTransfer() internal view returns (bytes memory) {
        return abi.encodeCall(IAgentAccount.execute, (target, 1, ""));
    }
}

/// @notice The first operation of a period: the period's counter is written from zero.
contract ValidationGasPeriodicTest is ValidationGasPeriodicBase {
    function test_Gas_SessionPlainTransfer_Periodic() public {
        vm.skip(!sessionRules);
        _measure("periodic session plain transfer, 1 wei, first of the period", _plainTransfer(), true, false);
    }
}

/// @notice Later in the period: one operation of the period was validated before (setUp), so the
/// period's counter is no longer written from zero.
contract ValidationGasPeriodicLaterTest is ValidationGasPeriodicBase {
    function setUp() public override {
        super.setUp();
        if (sessionRules) _measure("(warm-up in setUp, warm storage: not a figure)", _plainTransfer(), true, false);
    }

    function test_Gas_SessionPlainTransfer_Periodic_Later() public {
        vm.skip(!sessionRules);
        _measure("periodic session plain transfer, 1 wei, later in the period", _plainTransfer(), true, false);
    }
}
