// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ERC7739} from "@openzeppelin/contracts/utils/cryptography/signers/draft-ERC7739.sol";

import {
    IAccount,
    PackedUserOperation,
    SIG_VALIDATION_FAILED,
    SIG_VALIDATION_SUCCESS
} from "../../interfaces/IERC4337.sol";
import {Call, IAgentAccount} from "../../interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "../../interfaces/ISessionKeyValidator.sol";

/// @title HandAgentAccount
/// @notice The hand-written `AgentAccount` as it was before it was built from OpenZeppelin's parts
/// (git e586195, `contracts/AgentAccount.sol`), renamed and kept only as the baseline of
/// `OzAgentAccountGas.t.sol` (BENCHMARKS.md, "AgentAccount: hand-written vs OpenZeppelin parts").
/// Test contract only: not deployed. Behaviour and ABI as documented on {AgentAccount}, without the
/// parts' extras (`signer()`, `getNonce`).
contract HandAgentAccount is IAccount, IAgentAccount, ERC7739 {
    /// @notice The EntryPoint this account trusts.
    address public immutable entryPoint;

    /// @notice The session key validator this account delegates session signatures to.
    ISessionKeyValidator public immutable validator;

    /// @dev The implementation's own address, so that only clones can be initialised.
    address private immutable _self;

    /// @notice The owner EOA: signs operations with 65-byte signatures and may call {execute} directly.
    address public owner;

    /// @notice Emitted once, when a clone is initialised with its owner.
    /// @param owner The owner.
    /// @param entryPoint The EntryPoint.
    /// @param validator The session key validator.
    event AgentAccountInitialized(address indexed owner, address indexed entryPoint, address indexed validator);

    /// @notice The caller is not the EntryPoint.
    /// @param caller The caller.
    error NotFromEntryPoint(address caller);

    /// @notice The caller is neither the EntryPoint nor the owner.
    /// @param caller The caller.
    error NotEntryPointOrOwner(address caller);

    /// @notice The account is already initialised, or this is the implementation itself.
    error AlreadyInitialized();

    /// @notice The owner given is the zero address.
    error InvalidOwner();

    /// @param entryPoint_ The EntryPoint (v0.7 or v0.8).
    /// @param validator_ The session key validator.
    constructor(address entryPoint_, ISessionKeyValidator validator_) EIP712("AgentAccount", "1") {
        entryPoint = entryPoint_;
        validator = validator_;
        _self = address(this);
    }

    /// @notice Sets the owner of a freshly deployed clone. Called once by the factory in the same
    /// transaction as the deployment; never callable on the implementation.
    /// @param owner_ The owner EOA.
    function initialize(address owner_) external {
        if (address(this) == _self || owner != address(0)) revert AlreadyInitialized();
        if (owner_ == address(0)) revert InvalidOwner();
        owner = owner_;
        emit AgentAccountInitialized(owner_, entryPoint, address(validator));
    }

    /// @notice Accepts native value (funding for gas and for agent spending).
    receive() external payable {}

    /// @inheritdoc IAccount
    function validateUserOp(PackedUserOperation calldata userOp, bytes32 userOpHash, uint256 missingAccountFunds)
        external
        returns (uint256 validationData)
    {
        if (msg.sender != entryPoint) revert NotFromEntryPoint(msg.sender);

        bytes calldata sig = userOp.signature;
        if (sig.length == 65) {
            validationData = _rawSignatureValidation(userOpHash, sig) ? SIG_VALIDATION_SUCCESS : SIG_VALIDATION_FAILED;
        } else if (sig.length == 106 && sig[0] == 0x08) {
            validationData = validator.validateSessionUserOp(userOp, userOpHash);
        } else {
            validationData = SIG_VALIDATION_FAILED;
        }

        if (missingAccountFunds != 0) {
            // The EntryPoint checks the deposit itself; a failed transfer is its concern.
            assembly ("memory-safe") {
                pop(call(gas(), caller(), missingAccountFunds, 0, 0, 0, 0))
            }
        }
    }

    /// @inheritdoc IAgentAccount
    function execute(address target, uint256 value, bytes calldata data) external {
        _requireEntryPointOrOwner();
        _call(target, value, data);
    }

    /// @inheritdoc IAgentAccount
    function executeBatch(Call[] calldata calls) external {
        _requireEntryPointOrOwner();
        for (uint256 i; i < calls.length; ++i) {
            _call(calls[i].target, calls[i].value, calls[i].data);
        }
    }

    /// @dev True when `signature` is the owner's 65-byte ECDSA signature over `hash` itself (low s).
    /// Used for operations (over the userOpHash) and, through {ERC7739}, for ERC-1271 (over the
    /// account-bound EIP-712 wrapping of the hash). Never reverts.
    function _rawSignatureValidation(bytes32 hash, bytes calldata signature) internal view override returns (bool) {
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(hash, signature);
        return err == ECDSA.RecoverError.NoError && signer == owner;
    }

    /// @dev Reverts unless called by the EntryPoint or the owner.
    function _requireEntryPointOrOwner() private view {
        if (msg.sender != entryPoint && msg.sender != owner) revert NotEntryPointOrOwner(msg.sender);
    }

    /// @dev Calls `target`, bubbling up its revert data on failure.
    function _call(address target, uint256 value, bytes calldata data) private {
        (bool success, bytes memory result) = target.call{value: value}(data);
        if (!success) {
            assembly ("memory-safe") {
                revert(add(result, 0x20), mload(result))
            }
        }
    }
}

/// @title HandAgentAccountFactory
/// @notice {AgentAccountFactory} for {HandAgentAccount}: the same code, another implementation.
contract HandAgentAccountFactory {
    /// @notice The implementation every account clone delegates to.
    HandAgentAccount public immutable accountImplementation;

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
        accountImplementation = new HandAgentAccount(entryPoint_, validator_);
    }

    /// @notice Deploys the account of (`owner`, `salt`), or returns it if it already exists.
    /// @param owner The owner EOA.
    /// @param salt Any number; one owner can have many accounts.
    /// @return account The account, at {getAddress}(`owner`, `salt`).
    function createAccount(address owner, uint256 salt) external returns (HandAgentAccount account) {
        address predicted = getAddress(owner, salt);
        if (predicted.code.length != 0) return HandAgentAccount(payable(predicted));

        bytes memory initCode = _cloneInitCode();
        bytes32 create2Salt = _create2Salt(owner, salt);
        address deployed;
        assembly ("memory-safe") {
            deployed := create2(0, add(initCode, 0x20), mload(initCode), create2Salt)
        }
        if (deployed == address(0)) revert DeploymentFailed();

        account = HandAgentAccount(payable(deployed));
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
