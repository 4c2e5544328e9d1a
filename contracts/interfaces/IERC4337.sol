// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title ERC-4337 types and helpers shared by the agent account and the session key validator
/// @notice ABI-identical to the definitions of EntryPoint v0.7 and v0.8 (which share the packed
/// format), written here so the project's contracts do not depend on the EntryPoint's sources.

/// @notice A user operation in the packed form that EntryPoint v0.7 and v0.8 pass to accounts.
/// @param sender The account making the operation.
/// @param nonce Anti-replay value; the upper 192 bits are the nonce key, the lower 64 its sequence.
/// @param initCode `factory ‖ factoryData` when the account is deployed by this operation, else empty.
/// @param callData The call the EntryPoint makes on the account in the execution phase.
/// @param accountGasLimits `verificationGasLimit (16 bytes) ‖ callGasLimit (16 bytes)`.
/// @param preVerificationGas Gas paid to the bundler for overhead outside validation and execution.
/// @param gasFees `maxPriorityFeePerGas (16 bytes) ‖ maxFeePerGas (16 bytes)`.
/// @param paymasterAndData `paymaster ‖ verificationGas (16) ‖ postOpGas (16) ‖ data`, or empty.
/// @param signature Account-specific signature data.
struct PackedUserOperation {
    address sender;
    uint256 nonce;
    bytes initCode;
    bytes callData;
    bytes32 accountGasLimits;
    uint256 preVerificationGas;
    bytes32 gasFees;
    bytes paymasterAndData;
    bytes signature;
}

/// @notice The interface an ERC-4337 account exposes to the EntryPoint.
interface IAccount {
    /// @notice Validates a user operation; called by the EntryPoint in the validation phase.
    /// @param userOp The operation to validate.
    /// @param userOpHash The EntryPoint's hash of the operation (covers the EntryPoint and chain id).
    /// @param missingAccountFunds What the account must pay the EntryPoint before execution.
    /// @return validationData `sigFailed (bit 0, in the 20-byte aggregator field) ‖ validUntil (6) ‖
    /// validAfter (6)`, packed as by {_packValidationData}.
    function validateUserOp(PackedUserOperation calldata userOp, bytes32 userOpHash, uint256 missingAccountFunds)
        external
        returns (uint256 validationData);
}

/// @dev Validation data meaning "signature valid, no time restriction".
uint256 constant SIG_VALIDATION_SUCCESS = 0;

/// @dev Validation data meaning "signature invalid"; returned instead of reverting so that gas
/// estimation with a stub signature works.
uint256 constant SIG_VALIDATION_FAILED = 1;

/// @notice Packs validation data the way the EntryPoint parses it.
/// @param sigFailed True when the signature did not verify.
/// @param validUntil Last timestamp at which the operation is valid (0 = no end).
/// @param validAfter First timestamp at which the operation is valid.
/// @return The packed validation data.
function _packValidationData(bool sigFailed, uint48 validUntil, uint48 validAfter) pure returns (uint256) {
    return (sigFailed ? 1 : 0) | (uint256(validUntil) << 160) | (uint256(validAfter) << 208);
}
