// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Account} from "@openzeppelin/contracts/account/Account.sol";
import {IEntryPoint, PackedUserOperation} from "@openzeppelin/contracts/interfaces/draft-IERC4337.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ERC7739} from "@openzeppelin/contracts/utils/cryptography/signers/draft-ERC7739.sol";
import {SignerECDSA} from "@openzeppelin/contracts/utils/cryptography/signers/SignerECDSA.sol";

import {Call, IAgentAccount} from "../../interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "../../interfaces/ISessionKeyValidator.sol";

/// @dev {ISessionKeyValidator-validateSessionUserOp} with OpenZeppelin's `PackedUserOperation` (the
/// same tuple, so the same selector and encoding as the project's interface).
interface ISessionUserOpValidator {
    function validateSessionUserOp(PackedUserOperation calldata userOp, bytes32 userOpHash)
        external
        returns (uint256 validationData);
}

/// @title OzAgentAccount
/// @notice {AgentAccount} built from OpenZeppelin 5.4.0's parts, for the gas comparison of
/// `OzAgentAccountGas.t.sol` (BENCHMARKS.md, "AgentAccount: hand-written vs OpenZeppelin parts"):
/// `Account` (validateUserOp, the EntryPoint check, the prefund, receive), `SignerECDSA` (the owner as
/// the account's signer, raw ECDSA over the userOpHash), `ERC7739` with `EIP712("AgentAccount", "1")`
/// (ERC-1271). The same external behaviour as the hand-written account: 65-byte owner signatures,
/// 106-byte session signatures (0x08) handed to the validator, anything else SIG_VALIDATION_FAILED;
/// `execute`/`executeBatch` of {IAgentAccount} for the EntryPoint or the owner; `initialize(owner)`
/// once per EIP-1167 clone; the same events and errors. What stays hand-written: the session branch,
/// `initialize`, and `execute`/`executeBatch` (the validator decodes that ABI; OpenZeppelin's ERC-7821 /
/// ERC-7579 `execute(bytes32,bytes)` is another ABI, and `Address.functionCallWithValue` refuses a
/// plain transfer to an address without code). Extra ABI from the parts: `signer()`, `getNonce()`,
/// `getNonce(uint192)`, error `AccountUnauthorized`. Test contract only: not deployed.
contract OzAgentAccount is Account, EIP712, ERC7739, SignerECDSA, IAgentAccount {
    IEntryPoint private immutable _entryPoint;

    /// @notice The session key validator this account delegates session signatures to.
    ISessionKeyValidator public immutable validator;

    /// @dev The implementation's own address, so that only clones can be initialised.
    address private immutable _self;

    /// @notice Emitted once, when a clone is initialised with its owner.
    event AgentAccountInitialized(address indexed owner, address indexed entryPoint, address indexed validator);

    /// @notice The caller is not the EntryPoint.
    error NotFromEntryPoint(address caller);

    /// @notice The caller is neither the EntryPoint nor the owner.
    error NotEntryPointOrOwner(address caller);

    /// @notice The account is already initialised, or this is the implementation itself.
    error AlreadyInitialized();

    /// @notice The owner given is the zero address.
    error InvalidOwner();

    constructor(address entryPoint_, ISessionKeyValidator validator_)
        EIP712("AgentAccount", "1")
        SignerECDSA(address(0))
    {
        _entryPoint = IEntryPoint(entryPoint_);
        validator = validator_;
        _self = address(this);
    }

    /// @notice The EntryPoint this account trusts.
    function entryPoint() public view override returns (IEntryPoint) {
        return _entryPoint;
    }

    /// @notice The owner EOA (the account's `SignerECDSA` signer).
    function owner() public view returns (address) {
        return signer();
    }

    /// @notice Sets the owner of a freshly deployed clone; never callable on the implementation.
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

    /// @dev The hand-written account's error for a caller other than the EntryPoint.
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

/// @title OzAgentAccountFactory
/// @notice {AgentAccountFactory} for {OzAgentAccount}: the same code, another implementation.
contract OzAgentAccountFactory {
    OzAgentAccount public immutable accountImplementation;

    event AccountCreated(address indexed account, address indexed owner, uint256 salt);

    error DeploymentFailed();

    constructor(address entryPoint_, ISessionKeyValidator validator_) {
        accountImplementation = new OzAgentAccount(entryPoint_, validator_);
    }

    function createAccount(address owner, uint256 salt) external returns (OzAgentAccount account) {
        address predicted = getAddress(owner, salt);
        if (predicted.code.length != 0) return OzAgentAccount(payable(predicted));

        bytes memory initCode = _cloneInitCode();
        bytes32 create2Salt = _create2Salt(owner, salt);
        address deployed;
        assembly ("memory-safe") {
            deployed := create2(0, add(initCode, 0x20), mload(initCode), create2Salt)
        }
        if (deployed == address(0)) revert DeploymentFailed();

        account = OzAgentAccount(payable(deployed));
        account.initialize(owner);
        emit AccountCreated(deployed, owner, salt);
    }

    function getAddress(address owner, uint256 salt) public view returns (address) {
        bytes32 hash = keccak256(
            abi.encodePacked(bytes1(0xff), address(this), _create2Salt(owner, salt), keccak256(_cloneInitCode()))
        );
        return address(uint160(uint256(hash)));
    }

    function _create2Salt(address owner, uint256 salt) private pure returns (bytes32) {
        return keccak256(abi.encode(owner, salt));
    }

    function _cloneInitCode() private view returns (bytes memory) {
        return abi.encodePacked(
            hex"3d602d80600a3d3981f3363d3d373d3d3d363d73",
            address(accountImplementation),
            hex"5af43d82803e903d91602b57fd5bf3"
        );
    }
}
