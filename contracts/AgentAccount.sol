// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ERC7739} from "@openzeppelin/contracts/utils/cryptography/signers/draft-ERC7739.sol";

import {IAccount, PackedUserOperation, SIG_VALIDATION_FAILED, SIG_VALIDATION_SUCCESS} from "./interfaces/IERC4337.sol";
import {Call, IAgentAccount} from "./interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "./interfaces/ISessionKeyValidator.sol";

/// @title AgentAccount
/// @notice ERC-4337 smart account (EntryPoint v0.7; the same code works with v0.8) owned by one EOA,
/// whose agent keys act through {SessionKeyValidator} (docs/ARCHITECTURE.md, "The contracts").
///
/// Signatures accepted by {validateUserOp}:
/// - 65 bytes `r ‖ s ‖ v`: the owner's ECDSA signature over the userOpHash itself (no prefix; the
///   userOpHash already binds the EntryPoint, the chain and the sender);
/// - 106 bytes starting with 0x08: a session signature, handed to the validator, which enforces
///   the session's policy (and reverts with a named error when the operation breaks it);
/// - anything else: SIG_VALIDATION_FAILED (never a revert).
///
/// ERC-1271 ({isValidSignature}) follows ERC-7739: the owner signs the hash wrapped in this account's
/// EIP-712 domain (`name = "AgentAccount"`, `version = "1"`, the chain id, this account), either as
/// `PersonalSign(bytes prefixed)` or as a nested `TypedDataSign`. A message signature is therefore
/// bound to one account on one chain, and it never equals an operation signature (an EIP-712 digest
/// is not a userOpHash), nor does a personal-message signature (EIP-191) pass either check. Session
/// keys have no ERC-1271 power.
///
/// Deployed as an EIP-1167 clone by {AgentAccountFactory}; the owner lives in the clone's storage,
/// the EntryPoint and the validator are immutables of the implementation.
contract AgentAccount is IAccount, IAgentAccount, ERC7739 {
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
