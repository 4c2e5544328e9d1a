// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @notice One call of a batch made by the account.
/// @param target The address called.
/// @param value The native value sent with the call, in wei.
/// @param data The call data.
struct Call {
    address target;
    uint256 value;
    bytes data;
}

/// @title IAgentAccount
/// @notice The execution interface of {AgentAccount}. {SessionKeyValidator} decodes user operations
/// whose callData calls one of these two functions.
interface IAgentAccount {
    /// @notice Makes one call from the account. Only the EntryPoint or the owner may call it.
    /// @param target The address called.
    /// @param value The native value sent, in wei.
    /// @param data The call data.
    function execute(address target, uint256 value, bytes calldata data) external;

    /// @notice Makes several calls from the account, in order; any failure reverts them all.
    /// Only the EntryPoint or the owner may call it.
    /// @param calls The calls to make.
    function executeBatch(Call[] calldata calls) external;
}
