// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {AgentAccount} from "./AgentAccount.sol";
import {ISessionKeyValidator} from "./interfaces/ISessionKeyValidator.sol";

/// @title AgentAccountFactory
/// @notice Deploys {AgentAccount}s as EIP-1167 clones at counterfactual CREATE2 addresses, one factory
/// per EntryPoint. Usable as the `factory` of an account's first user operation
/// (`factoryData = abi.encodeCall(createAccount, (owner, salt))`).
/// @dev ERC-7562: `createAccount` reads no storage of the factory and uses no banned opcode (no
/// SELFBALANCE/BALANCE), so the factory needs no stake.
contract AgentAccountFactory {
    /// @notice The implementation every account clone delegates to.
    AgentAccount public immutable accountImplementation;

    /// @notice The EntryPoint of the accounts made here.
    address public immutable entryPoint;

    /// @notice The session key validator of the accounts made here.
    ISessionKeyValidator public immutable validator;

    /// @notice Emitted when an account is deployed.
    /// @param account The new account.
    /// @param owner Its owner.
    /// @param salt The salt given to {createAccount}.
    event AccountCreated(address indexed account, address indexed owner, uint256 salt);

    /// @notice The CREATE2 deployment failed.
    error DeploymentFailed();

    /// @param entryPoint_ The EntryPoint (v0.7 or v0.8) of the accounts.
    /// @param validator_ The session key validator of the accounts.
    constructor(address entryPoint_, ISessionKeyValidator validator_) {
        entryPoint = entryPoint_;
        validator = validator_;
        accountImplementation = new AgentAccount(entryPoint_, validator_);
    }

    /// @notice Deploys the account of (`owner`, `salt`), or returns it if it already exists.
    /// @param owner The owner EOA.
    /// @param salt Any number; one owner can have many accounts.
    /// @return account The account, at {getAddress}(`owner`, `salt`).
    function createAccount(address owner, uint256 salt) external returns (AgentAccount account) {
        address predicted = getAddress(owner, salt);
        if (predicted.code.length != 0) return AgentAccount(payable(predicted));

        bytes memory initCode = _cloneInitCode();
        bytes32 create2Salt = _create2Salt(owner, salt);
        address deployed;
        assembly ("memory-safe") {
            deployed := create2(0, add(initCode, 0x20), mload(initCode), create2Salt)
        }
        if (deployed == address(0)) revert DeploymentFailed();

        account = AgentAccount(payable(deployed));
        account.initialize(owner);
        emit AccountCreated(deployed, owner, salt);
    }

    /// @notice The counterfactual address of the account of (`owner`, `salt`).
    /// @param owner The owner EOA.
    /// @param salt The salt.
    /// @return The address {createAccount} deploys to.
    function getAddress(address owner, uint256 salt) public view returns (address) {
        bytes32 hash = keccak256(
            abi.encodePacked(bytes1(0xff), address(this), _create2Salt(owner, salt), keccak256(_cloneInitCode()))
        );
        return address(uint160(uint256(hash)));
    }

    /// @dev The CREATE2 salt binds the owner, so nobody can take another owner's address.
    function _create2Salt(address owner, uint256 salt) private pure returns (bytes32) {
        return keccak256(abi.encode(owner, salt));
    }

    /// @dev EIP-1167 minimal proxy creation code for the implementation.
    function _cloneInitCode() private view returns (bytes memory) {
        return abi.encodePacked(
            hex"3d602d80600a3d3981f3363d3d373d3d3d363d73",
            address(accountImplementation),
            hex"5af43d82803e903d91602b57fd5bf3"
        );
    }
}
