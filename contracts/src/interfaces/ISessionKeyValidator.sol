// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {PackedUserOperation} from "./IERC4337.sol";

/// @title ISessionKeyValidator
/// @notice On-chain policy for agent (session) keys of ERC-4337 accounts: per (account, key) a call
/// target allowlist, a cumulative native-value spend cap, a validity window, revocation and sender
/// binding. See DESIGN.md §5.2.
interface ISessionKeyValidator {
    /// @notice The stored state of one session, i.e. one (account, key) pair.
    /// @param validAfter First timestamp at which the key's operations are valid.
    /// @param validUntil Last timestamp at which the key's operations are valid (0 = no end).
    /// @param revoker An address that may revoke the session besides the account (0 = none).
    /// @param spendCap Cap on the cumulative native value the key may move, in wei.
    /// @param spent Native value moved so far in this grant, in wei.
    /// @param epoch Grant counter of this (account, key): 0 = never granted; every grant adds one.
    /// Allowed targets are stored per epoch, so a new grant never inherits old targets.
    /// @param active True from a grant until a revocation.
    struct Session {
        uint48 validAfter;
        uint48 validUntil;
        address revoker;
        uint128 spendCap;
        uint128 spent;
        uint64 epoch;
        bool active;
    }

    /// @notice Emitted when an account grants (or re-grants) a session to a key.
    /// @param account The account (the caller of {grantSession}).
    /// @param key The agent key address.
    /// @param epoch The new grant counter of the session.
    /// @param targets The allowed call targets of this grant.
    /// @param spendCap The native-value spend cap, in wei.
    /// @param validAfter First valid timestamp.
    /// @param validUntil Last valid timestamp (0 = no end).
    /// @param revoker The additional revoker (0 = none).
    event SessionGranted(
        address indexed account,
        address indexed key,
        uint64 epoch,
        address[] targets,
        uint128 spendCap,
        uint48 validAfter,
        uint48 validUntil,
        address revoker
    );

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

    /// @notice The operation's callData calls neither `execute` nor `executeBatch` of the account.
    /// @param selector The selector found (zero when callData is shorter than four bytes).
    error UnsupportedCall(bytes4 selector);

    /// @notice A call targets the account itself or this validator, which a session may never call.
    /// @param target The target.
    error ForbiddenTarget(address target);

    /// @notice A call targets an address that is not on the session's allowlist.
    /// @param target The target.
    error TargetNotAllowed(address target);

    /// @notice The operation's native value would take the session over its spend cap.
    /// @param requested The value of the call that would pass the cap (or the total so far).
    /// @param remaining The budget left before that call, in wei.
    error SpendCapExceeded(uint256 requested, uint256 remaining);

    /// @notice The caller is neither the account nor the session's revoker.
    /// @param caller The caller.
    error NotAuthorizedToRevoke(address caller);

    /// @notice The session key is the zero address.
    error InvalidSessionKey();

    /// @notice `validUntil` is not zero and not after `validAfter`.
    /// @param validAfter The window start given.
    /// @param validUntil The window end given.
    error InvalidValidityWindow(uint48 validAfter, uint48 validUntil);

    /// @notice Grants (or re-grants, replacing the previous grant) a session on the caller's account.
    /// @dev msg.sender is the account. Every grant starts a new epoch: `spent` restarts at zero and
    /// only `targets` are allowed, never the targets of an earlier grant.
    /// @param key The agent key address.
    /// @param targets The allowed call targets (never the account itself nor this validator).
    /// @param spendCap Cap on the cumulative native value, in wei.
    /// @param validAfter First valid timestamp.
    /// @param validUntil Last valid timestamp (0 = no end).
    /// @param revoker An address that may also revoke the session (0 = only the account).
    function grantSession(
        address key,
        address[] calldata targets,
        uint128 spendCap,
        uint48 validAfter,
        uint48 validUntil,
        address revoker
    ) external;

    /// @notice Revokes a session. Callable by the account or by the session's revoker.
    /// @param account The account.
    /// @param key The agent key address.
    function revokeSession(address account, address key) external;

    /// @notice Validates a session-signed user operation and records its spend. Called by the account
    /// from `validateUserOp` (msg.sender is the account).
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

    /// @notice Returns the stored session of (account, key) (all zero if never granted).
    /// @param account The account.
    /// @param key The agent key address.
    /// @return The session.
    function getSession(address account, address key) external view returns (Session memory);

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

    /// @notice Whether `target` is on the allowlist of the session's current grant.
    /// @param account The account.
    /// @param key The agent key address.
    /// @param target The call target.
    /// @return True if allowed in the current epoch (false once revoked).
    function isTargetAllowed(address account, address key, address target) external view returns (bool);
}
