// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Account} from "@openzeppelin/contracts/account/Account.sol";
import {IEntryPoint, PackedUserOperation} from "@openzeppelin/contracts/interfaces/draft-IERC4337.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ERC7739} from "@openzeppelin/contracts/utils/cryptography/signers/draft-ERC7739.sol";
import {SignerECDSA} from "@openzeppelin/contracts/utils/cryptography/signers/SignerECDSA.sol";

import {Call, IAgentAccount} from "./interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "./interfaces/ISessionKeyValidator.sol";

/// @dev {ISessionKeyValidator-validateSessionUserOp} with OpenZeppelin's `PackedUserOperation` (the
/// same tuple as the project's, so the same selector and encoding).
interface ISessionUserOpValidator {
    function validateSessionUserOp(PackedUserOperation calldata userOp, bytes32 userOpHash)
        external
        returns (uint256 validationData);
}

/// @title AgentAccount
/// @notice ERC-4337 smart account (EntryPoint v0.7; the same code works with v0.8) owned by one EOA,
/// whose agent keys act through {SessionKeyValidator} (docs/ARCHITECTURE.md, "The contracts").
///
/// Built from OpenZeppelin 5.4.0's parts: `Account` (validateUserOp, the EntryPoint check, the
/// prefund, `receive`), `SignerECDSA` (the owner is the account's signer: raw ECDSA over the hash),
/// `ERC7739` with `EIP712("AgentAccount", "1")` (ERC-1271). Hand-written on top: the session branch
/// of validation, `initialize` for clones, and `execute`/`executeBatch` of {IAgentAccount} (the
/// validator decodes that ABI; OpenZeppelin's ERC-7821 / ERC-7579 `execute(bytes32,bytes)` is another
/// one, and `Address.functionCallWithValue` refuses a plain transfer to an address without code).
/// Gas against the former hand-written account: BENCHMARKS.md, "AgentAccount: hand-written vs
/// OpenZeppelin parts" (at most +3% on a path, +372 gas on an owner operation's validation).
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
/// Deployed as an EIP-1167 clone by {AgentAccountFactory}; the owner lives in the clone's storage
/// (`SignerECDSA`'s slot), the EntryPoint and the validator are immutables of the implementation.
/// The parts add `signer()` (= {owner}), `getNonce()`/`getNonce(uint192)` (the EntryPoint's nonce
/// of this account) and the error `AccountUnauthorized` (unused here) to the ABI.
contract AgentAccount is Account, EIP712, ERC7739, SignerECDSA, IAgentAccount {
    IEntryPoint private immutable _entryPoint;

    /// @notice The session key validator this account delegates session signatures to.
    ISessionKeyValidator public immutable validator;

    /// @dev The implementation's own address, so that only clones can be initialised.
    address private immutable _self;

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
    constructor(address entryPoint_, ISessionKeyValidator validator_)
        EIP712("AgentAccount", "1")
        SignerECDSA(address(0))
    {
        _entryPoint = IEntryPoint(entryPoint_);
        validator = validator_;
        _self = address(this);
    }

    /// @notice The EntryPoint this account trusts.
    /// @return The EntryPoint given to the implementation's constructor.
    function entryPoint() public view override returns (IEntryPoint) {
        return _entryPoint;
    }

    /// @notice The owner EOA (the account's `SignerECDSA` signer): signs operations with 65-byte
    /// signatures and may call {execute} directly.
    /// @return The owner (zero on the implementation).
    function owner() public view returns (address) {
        return signer();
    }

    /// @notice Sets the owner of a freshly deployed clone. Called once by the factory in the same
    /// transaction as the deployment; never callable on the implementation.
    /// @param owner_ The owner EOA.
    function initialize(address owner_) external {
        if (address(this) == _self || signer() != address(0)) revert AlreadyInitialized();
        if (owner_ == address(0)) revert InvalidOwner();
        _setSigner(owner_);
        emit AgentAccountInitialized(owner_, address(_entryPoint), address(validator));
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

    /// @dev Session signatures go to the validator; everything else to `Account`'s path (the owner's
    /// raw ECDSA over the userOpHash; a wrong length fails recovery: SIG_VALIDATION_FAILED).
    function _validateUserOp(PackedUserOperation calldata userOp, bytes32 userOpHash)
        internal
        override
        returns (uint256)
    {
        bytes calldata sig = userOp.signature;
        if (sig.length == 106 && sig[0] == 0x08) {
            return ISessionUserOpValidator(address(validator)).validateSessionUserOp(userOp, userOpHash);
        }
        return super._validateUserOp(userOp, userOpHash);
    }

    /// @dev `Account`'s EntryPoint check, with this account's own error (`NotFromEntryPoint`, not
    /// `AccountUnauthorized`).
    function _checkEntryPoint() internal view override {
        if (msg.sender != address(_entryPoint)) revert NotFromEntryPoint(msg.sender);
    }

    /// @dev Reverts unless called by the EntryPoint or the owner.
    function _requireEntryPointOrOwner() private view {
        if (msg.sender != address(_entryPoint) && msg.sender != signer()) revert NotEntryPointOrOwner(msg.sender);
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
