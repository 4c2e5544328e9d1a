// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IERC7579Module} from "@openzeppelin/contracts/interfaces/draft-IERC7579.sol";

import {PackedUserOperation} from "./IERC4337.sol";

/// @title ISessionKeyValidator
/// @notice On-chain policy for agent (session) keys of ERC-4337 accounts. Per (account, key): call
/// targets with the functions allowed on each, a cumulative native-value cap, a gas budget in wei
/// (the operation's maximum cost), per-token ERC-20 caps, an optional usage limit, an optional
/// paymaster, a validity window, the key's own nonce lane, revocation and sender binding.
///
/// Whatever the key signs, the account's outflow is bounded by what the session grants: native value
/// by `spendCap`, gas by `gasCap` (unless the named paymaster pays), each listed token by its cap
/// (`transfer`, `approve`, `increaseAllowance` and `transferFrom(account, …)` count), and nothing else
/// moves because every call goes to a listed target and, with data, to an allowed function. A periodic
/// budget (`period`, `periodCap`) also caps the native value per period, without reading the clock in
/// validation: the operation names its period in its nonce key and the validator returns that
/// period's window as the validation data, which the EntryPoint enforces.
///
/// Two ways in, the same policy: {AgentAccount} calls {validateSessionUserOp}; an ERC-7579 account
/// with this contract installed as its validator module (type 1) calls {validateUserOp}. The module
/// path reads ERC-7579 `execute(mode, executionCalldata)` calldata (single and batch calls, default
/// exec type), takes the agent's lane from the account's nonce key layout `module (20 bytes) ‖ lane
/// (2) ‖ period (2)` (OpenZeppelin's `AccountERC7579` picks the validator by the first 20 bytes and
/// leaves 4 for the key: the period index has 16 bits there, so a periodic session can be used on an
/// ERC-7579 account for its first 65,536 periods), and accepts a session only if it was granted since
/// the module's last uninstallation from the account. The views below ({isSessionActive},
/// {remainingBudget}, …) do not look at the module generation: for an ERC-7579 account compare the
/// session's `generation` with {moduleState}'s.
interface ISessionKeyValidator is IERC7579Module {
    /// @notice The functions a session may call on one target (grant input).
    /// @param target The contract or address called.
    /// @param anySelector Every function may be called (must come with an empty `selectors`; never on
    /// a token with a cap, whose other functions would then move tokens uncounted).
    /// @param selectors The function selectors that may be called. Empty calldata (a plain transfer)
    /// is always allowed on a listed target; with neither `anySelector` nor `selectors`, only plain
    /// transfers are.
    struct TargetPermission {
        address target;
        bool anySelector;
        bytes4[] selectors;
    }

    /// @notice A cumulative cap on what a session may move of one ERC-20 token (grant input). Listing a
    /// token allows its `transfer`, `approve`, `increaseAllowance` and `transferFrom(account, …)`, each
    /// counted; its other functions need a `TargetPermission` with their selectors.
    /// @param token The token contract.
    /// @param cap The most the session may move or approve in total, in the token's units (> 0; 112
    /// bits, so that the cap and what was counted share one storage slot).
    struct TokenLimit {
        address token;
        uint112 cap;
    }

    /// @notice Everything an account grants to one agent key ({grantSession} input).
    /// @param key The agent key address.
    /// @param validAfter First valid timestamp.
    /// @param validUntil Last valid timestamp (0 = no end).
    /// @param revoker An address that may also revoke the session (0 = only the account).
    /// @param spendCap Cap on the cumulative native value of the calls, in wei.
    /// @param gasCap Cap on the cumulative maximum gas cost of the operations the account pays for, in
    /// wei: each operation is charged `(preVerificationGas + verificationGasLimit + callGasLimit) ×
    /// maxFeePerGas`, the EntryPoint's prefund bound. Unused gas is not credited back.
    /// @param paymaster The one paymaster the session's operations may use (then nothing is charged to
    /// `gasCap`), or 0: no paymaster.
    /// @param maxOps The most operations the session may make (0 = no limit).
    /// @param period Length of a budget period in seconds (0 = no periodic budget; else at least 60).
    /// Period `p` runs from `validAfter + p × period` for `period` seconds (within the window).
    /// @param periodCap Cap on the native value of the calls in one period, in wei (with a period only,
    /// and then > 0). `spendCap` still caps the total.
    /// @param targets The call targets and their functions (no duplicates).
    /// @param tokens The ERC-20 caps (no duplicates).
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

    /// @notice The stored state of one session, i.e. one (account, key) pair (five storage slots; the
    /// fifth, `periodCap`, is read only by periodic sessions).
    /// @param validAfter First timestamp at which the key's operations are valid.
    /// @param validUntil Last timestamp at which the key's operations are valid (0 = no end).
    /// @param revoker An address that may revoke the session besides the account (0 = none).
    /// @param spendCap Cap on the cumulative native value the key may move, in wei.
    /// @param spent Native value moved so far in this grant, in wei.
    /// @param gasCap Cap on the cumulative maximum gas cost charged, in wei.
    /// @param gasSpent Maximum gas cost charged so far in this grant, in wei.
    /// @param maxOps Most operations in this grant (0 = no limit).
    /// @param opsUsed Operations validated so far in this grant.
    /// @param paymaster The one paymaster allowed (0 = none).
    /// @param epoch Grant counter of this (account, key): 0 = never granted; every grant adds one.
    /// Permissions are stored per epoch, so a new grant never inherits old targets, functions or tokens.
    /// @param active True from a grant until a revocation.
    /// @param period Budget period in seconds (0 = none).
    /// @param lane The key's lane on ERC-7579 accounts (the 2 bytes after the module's address in the
    /// nonce key): assigned at the key's first grant on the account (1, 2, … in grant order, never
    /// reused on that account), kept by re-grants. Not used by {AgentAccount}, whose lanes are the keys.
    /// @param periodCap Native-value cap per period, in wei.
    /// @param generation The account's module generation (its number of uninstallations of this
    /// module) when the session was granted; the module path refuses it once the account's moves on.
    struct Session {
        uint48 validAfter;
        uint48 validUntil;
        address revoker;
        uint128 spendCap;
        uint128 spent;
        uint96 gasCap;
        uint96 gasSpent;
        uint32 maxOps;
        uint32 opsUsed;
        address paymaster;
        uint32 epoch;
        bool active;
        uint32 period;
        uint16 lane;
        uint128 periodCap;
        uint32 generation;
    }

    /// @notice What the current grant of a session allows on one target (one storage slot).
    /// @param allowed The target is listed (as a target or as a token).
    /// @param anySelector Every function of the target may be called.
    /// @param isToken The target is an ERC-20 token with a cap.
    /// @param tokenCap The token cap (0 unless `isToken`).
    /// @param tokenSpent What was moved or approved of the token so far in this grant.
    struct Permission {
        bool allowed;
        bool anySelector;
        bool isToken;
        uint112 tokenCap;
        uint112 tokenSpent;
    }

    /// @notice Emitted when an account grants (or re-grants) a session to a key.
    /// @param account The account (the caller of {grantSession}).
    /// @param key The agent key address.
    /// @param epoch The new grant counter of the session.
    /// @param grant The grant, as given.
    event SessionGranted(address indexed account, address indexed key, uint32 epoch, SessionGrant grant);

    /// @notice Emitted at the first grant of a key on an account: the key's lane on ERC-7579 accounts.
    /// @param account The account.
    /// @param key The agent key address.
    /// @param lane The lane (the nonce key's 2 bytes after the module's address).
    event SessionLaneAssigned(address indexed account, address indexed key, uint16 lane);

    /// @notice Emitted when an account installs this contract as its ERC-7579 validator module.
    /// @param account The account.
    /// @param generation The account's module generation (sessions granted in earlier ones stay ended).
    event ModuleInstalled(address indexed account, uint32 generation);

    /// @notice Emitted when an account uninstalls the module: every session it granted before ends on
    /// the module path.
    /// @param account The account.
    /// @param generation The account's new module generation.
    event ModuleUninstalled(address indexed account, uint32 generation);

    /// @notice Emitted when a session is revoked.
    /// @param account The account.
    /// @param key The agent key address.
    /// @param by The caller: the account or the session's revoker.
    event SessionRevoked(address indexed account, address indexed key, address indexed by);

    /// @notice Emitted when a validated session operation moves native value.
    /// @param account The account.
    /// @param key The agent key address.
    /// @param amount The value of this operation, in wei.
    /// @param totalSpent The cumulative value spent in this grant after this operation, in wei.
    event SessionSpent(address indexed account, address indexed key, uint256 amount, uint256 totalSpent);

    /// @notice Emitted when a validated operation of a periodic session moves native value.
    /// @param account The account.
    /// @param key The agent key address.
    /// @param periodIndex The period.
    /// @param amount The value of this operation, in wei.
    /// @param totalSpent The value spent in this period after this operation, in wei.
    event PeriodSpent(
        address indexed account, address indexed key, uint256 indexed periodIndex, uint256 amount, uint256 totalSpent
    );

    /// @notice Emitted when a validated session operation moves or approves a capped token.
    /// @param account The account.
    /// @param key The agent key address.
    /// @param token The token.
    /// @param amount The amount of this call.
    /// @param totalSpent The cumulative amount counted in this grant after this call.
    event TokenSpent(
        address indexed account, address indexed key, address indexed token, uint256 amount, uint256 totalSpent
    );

    /// @notice The session signature is not exactly 106 bytes long.
    /// @param length The length received.
    error InvalidSignatureLength(uint256 length);

    /// @notice The session signature does not start with the session marker 0x08.
    /// @param marker The first byte received.
    error InvalidSignatureMarker(bytes1 marker);

    /// @notice The account named in the signature is not the operation's sender or not the caller.
    /// @param signedAccount The account named in the signature (`sig[1:21]`).
    /// @param sender The operation's sender.
    /// @param caller The caller of {validateSessionUserOp}.
    error AccountMismatch(address signedAccount, address sender, address caller);

    /// @notice The key has never been granted a session on the account.
    /// @param account The account.
    /// @param key The agent key address.
    error UnknownSession(address account, address key);

    /// @notice The key's session on the account has been revoked.
    /// @param account The account.
    /// @param key The agent key address.
    error SessionIsRevoked(address account, address key);

    /// @notice The operation's nonce key is not one of the key's own lanes. On {AgentAccount}:
    /// `uint160(key)` in the low 160 bits, and above them the period index (0 unless the session has a
    /// period). On an ERC-7579 account (module path): the session's `lane` in bits 16–31 and the
    /// period index in bits 0–15 (the bits above, the module's address, are the account's concern).
    /// @param nonceKey The nonce key of the operation (`nonce >> 64`).
    /// @param expected The key's lane for period 0 (module path: `module ‖ lane ‖ 0x0000`).
    error NonceLaneNotAllowed(uint192 nonceKey, uint192 expected);

    /// @notice The period the operation names lies outside the session's window (or past 2^48 − 1).
    /// @param periodIndex The period named in the nonce key.
    error PeriodOutsideWindow(uint256 periodIndex);

    /// @notice The operation's native value would take its period over the periodic cap.
    /// @param periodIndex The period.
    /// @param requested The value of the operation.
    /// @param remaining What is left of the period's cap, in wei.
    error PeriodCapExceeded(uint256 periodIndex, uint256 requested, uint256 remaining);

    /// @notice A period shorter than 60 seconds, a period without a cap, or a cap without a period.
    /// @param period The period given.
    /// @param periodCap The periodic cap given.
    error InvalidPeriod(uint32 period, uint128 periodCap);

    /// @notice The operation names a paymaster the session does not allow.
    /// @param paymaster The paymaster named (0 when `paymasterAndData` is shorter than an address).
    error PaymasterNotAllowed(address paymaster);

    /// @notice The operation's maximum gas cost exceeds what is left of the session's gas budget.
    /// @param maxCost `(preVerificationGas + verificationGasLimit + callGasLimit) × maxFeePerGas`.
    /// @param remaining The gas budget left, in wei.
    error GasBudgetExceeded(uint256 maxCost, uint256 remaining);

    /// @notice The session has made all the operations its usage limit allows.
    /// @param maxOps The limit.
    error UsageLimitReached(uint32 maxOps);

    /// @notice The operation's callData calls neither `execute` nor `executeBatch` of the account (module
    /// path: not ERC-7579 `execute(bytes32,bytes)`; `executeFromExecutor`, module management and the
    /// rest are refused too).
    /// @param selector The selector found (zero when callData is shorter than four bytes).
    error UnsupportedCall(bytes4 selector);

    /// @notice A call targets the account itself, this validator or an EntryPoint, which a session may
    /// never call.
    /// @param target The target.
    error ForbiddenTarget(address target);

    /// @notice A call targets an address that is not on the session's allowlist.
    /// @param target The target.
    error TargetNotAllowed(address target);

    /// @notice A call's function is not allowed on its target (data shorter than four bytes included).
    /// @param target The target.
    /// @param selector The first four bytes of the call data (zero-padded when shorter).
    error SelectorNotAllowed(address target, bytes4 selector);

    /// @notice A counted token call (`transfer`, `approve`, `increaseAllowance`, `transferFrom`) is too
    /// short for its arguments or names its `from` with dirty upper bits.
    /// @param token The token.
    /// @param selector The function.
    error MalformedTokenCall(address token, bytes4 selector);

    /// @notice The operation's native value would take the session over its spend cap.
    /// @param requested The value of the call that would pass the cap.
    /// @param remaining The budget left before that call, in wei.
    error SpendCapExceeded(uint256 requested, uint256 remaining);

    /// @notice A token call would take the session over the token's cap.
    /// @param token The token.
    /// @param requested The amount of the call.
    /// @param remaining What is left of the cap before that call.
    error TokenCapExceeded(address token, uint256 requested, uint256 remaining);

    /// @notice An ERC-7579 execution mode the module path refuses: anything but a single (0x00) or batch
    /// (0x01) call with the default exec type and zero selector and payload (delegatecall 0xff and the
    /// try exec type 0x01 included).
    /// @param mode The mode.
    error UnsupportedExecutionMode(bytes32 mode);

    /// @notice ERC-7579 `execute` calldata that is not canonically encoded (the bytes argument at offset
    /// 0x40, within the calldata) or a single execution shorter than its 52-byte head.
    error MalformedExecution();

    /// @notice The module is not installed on the account calling {validateUserOp}.
    /// @param account The account.
    error ModuleNotInstalled(address account);

    /// @notice {onInstall} by an account that has the module installed already.
    /// @param account The account.
    error ModuleAlreadyInstalled(address account);

    /// @notice The session was granted before the module was last uninstalled from the account
    /// (re-grant it).
    /// @param account The account.
    /// @param key The agent key address.
    error SessionUninstalled(address account, address key);

    /// @notice The account has given lanes to 65,535 keys: no lane is left for a new key.
    /// @param account The account.
    error LanesExhausted(address account);

    /// @notice {readSession} was given lists of different lengths.
    /// @param targets The number of targets.
    /// @param selectors The number of selectors.
    error LengthMismatch(uint256 targets, uint256 selectors);

    /// @notice The caller is neither the account nor the session's revoker.
    /// @param caller The caller.
    error NotAuthorizedToRevoke(address caller);

    /// @notice The session key is the zero address.
    error InvalidSessionKey();

    /// @notice `validUntil` is not zero and not after `validAfter`.
    /// @param validAfter The window start given.
    /// @param validUntil The window end given.
    error InvalidValidityWindow(uint48 validAfter, uint48 validUntil);

    /// @notice A target or token is listed twice in one grant.
    /// @param target The target.
    error DuplicateTarget(address target);

    /// @notice A selector is listed twice for one target.
    /// @param target The target.
    /// @param selector The selector.
    error DuplicateSelector(address target, bytes4 selector);

    /// @notice A target has both `anySelector` and a selector list, or a capped token is also given
    /// `anySelector`.
    /// @param target The target.
    error ConflictingPermission(address target);

    /// @notice A target with a selector list, or a token, has no code.
    /// @param target The target.
    error NotAContract(address target);

    /// @notice A token is listed with a zero cap.
    /// @param token The token.
    error ZeroTokenCap(address token);

    /// @notice Grants (or re-grants, replacing the previous grant) a session on the caller's account.
    /// @dev msg.sender is the account. Every grant starts a new epoch: the counters restart at zero and
    /// only this grant's targets, functions and tokens are allowed.
    /// @param grant The session.
    function grantSession(SessionGrant calldata grant) external;

    /// @notice Revokes a session. Callable by the account or by the session's revoker.
    /// @param account The account.
    /// @param key The agent key address.
    function revokeSession(address account, address key) external;

    /// @notice Validates a session-signed user operation and records what it may spend. Called by the
    /// account from `validateUserOp` (msg.sender is the account).
    /// @dev Policy violations revert with a named error; a wrong signature returns SIG_VALIDATION_FAILED
    /// packed with the window, after the same policy work, so estimation with a stub signature costs
    /// what the real operation costs. Reads no block environment (ERC-7562): the window is returned in
    /// the validation data for the EntryPoint to enforce.
    /// @param userOp The operation; its signature is `0x08 ‖ account ‖ key ‖ r ‖ s ‖ v` (106 bytes).
    /// @param userOpHash The EntryPoint's hash of the operation.
    /// @return validationData `_packValidationData(sigFailed, validUntil, validAfter)`.
    function validateSessionUserOp(PackedUserOperation calldata userOp, bytes32 userOpHash)
        external
        returns (uint256 validationData);

    /// @notice Validates a session-signed user operation for an ERC-7579 account that has this module
    /// installed (IERC7579Validator.validateUserOp; msg.sender is the account). The rules of
    /// {validateSessionUserOp}, with the module's calldata (ERC-7579 `execute(mode, executionCalldata)`:
    /// single or batch calls, default exec type; delegatecall, try mode and any other call refused),
    /// lane (`nonceKey = module ‖ lane (16 bits) ‖ period (16 bits)`), and a session of the account's
    /// current module generation. A call to address 0 is refused (ERC-7579 accounts take it for
    /// themselves). Same 106-byte signature.
    /// @param userOp The operation (ABI-identical to the EntryPoint's `PackedUserOperation`).
    /// @param userOpHash The hash the account passes (the EntryPoint's userOpHash for OpenZeppelin's
    /// accounts).
    /// @return validationData `_packValidationData(sigFailed, validUntil, validAfter)`.
    function validateUserOp(PackedUserOperation calldata userOp, bytes32 userOpHash)
        external
        returns (uint256 validationData);

    /// @notice ERC-7579 ERC-1271 validation through the module: session keys have no ERC-1271 power,
    /// so this always returns the failure value 0xffffffff (whatever the signature).
    /// @return The failure value 0xffffffff.
    function isValidSignatureWithSender(address sender, bytes32 hash, bytes calldata signature)
        external
        view
        returns (bytes4);

    /// @notice Whether the module is installed on `account`.
    /// @param account The account.
    /// @return True between {onInstall} and {onUninstall}.
    function isInitialized(address account) external view returns (bool);

    /// @notice The module state of `account`.
    /// @param account The account.
    /// @return installed Whether the module is installed.
    /// @return generation Its number of uninstallations (sessions of older generations are ended).
    /// @return lanes The number of lanes assigned on the account (the last lane given).
    function moduleState(address account) external view returns (bool installed, uint32 generation, uint16 lanes);

    /// @notice Returns the stored session of (account, key) (all zero if never granted).
    /// @param account The account.
    /// @param key The agent key address.
    /// @return The session.
    function getSession(address account, address key) external view returns (Session memory);

    /// @notice What the session's current grant allows on `target` (all zero when not listed).
    /// @param account The account.
    /// @param key The agent key address.
    /// @param target The target.
    /// @return The permission.
    function getPermission(address account, address key, address target) external view returns (Permission memory);

    /// @notice Whether the current grant lists `selector` for `target` (false once revoked).
    /// @param account The account.
    /// @param key The agent key address.
    /// @param target The target.
    /// @param selector The function selector.
    /// @return True if listed explicitly (`anySelector` and counted token functions are not reported here).
    function isSelectorAllowed(address account, address key, address target, bytes4 selector)
        external
        view
        returns (bool);

    /// @notice One read for an off-chain pre-check: the session, for each `(targets[i], selectors[i])` the
    /// target's permission and whether the selector is listed, and the period that contains `timestamp`.
    /// @param account The account.
    /// @param key The agent key address.
    /// @param targets The targets of the calls to check.
    /// @param selectors The selector of each call (same length as `targets`; any value for plain transfers).
    /// @param timestamp A timestamp (the caller's "now").
    /// @return session The session.
    /// @return permissions The permission of each target.
    /// @return selectorAllowed Whether each selector is listed for its target.
    /// @return periodIndex The period containing `timestamp` (0 without a period, or before
    /// `validAfter`).
    /// @return spentInPeriod The native value spent in that period, in wei.
    function readSession(
        address account,
        address key,
        address[] calldata targets,
        bytes4[] calldata selectors,
        uint48 timestamp
    )
        external
        view
        returns (
            Session memory session,
            Permission[] memory permissions,
            bool[] memory selectorAllowed,
            uint256 periodIndex,
            uint256 spentInPeriod
        );

    /// @notice The native value spent by the session's current grant in period `periodIndex`.
    /// @param account The account.
    /// @param key The agent key address.
    /// @param periodIndex The period.
    /// @return The value spent, in wei.
    function periodSpent(address account, address key, uint256 periodIndex) external view returns (uint256);

    /// @notice True when the session is granted, not revoked, and inside its validity window now
    /// (`validAfter <= block.timestamp` and, unless `validUntil` is 0, `block.timestamp <= validUntil`).
    /// @param account The account.
    /// @param key The agent key address.
    /// @return Whether an operation of this key could validate now.
    function isSessionActive(address account, address key) external view returns (bool);

    /// @notice The native value the key may still move (`spendCap - spent`; 0 unless active).
    /// @param account The account.
    /// @param key The agent key address.
    /// @return The remaining budget, in wei.
    function remainingBudget(address account, address key) external view returns (uint256);

    /// @notice Whether `target` is listed (as a target or a token) by the session's current grant.
    /// @param account The account.
    /// @param key The agent key address.
    /// @param target The call target.
    /// @return True if listed in the current epoch (false once revoked).
    function isTargetAllowed(address account, address key, address target) external view returns (bool);
}
