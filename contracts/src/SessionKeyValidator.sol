// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";

import {PackedUserOperation, _packValidationData} from "./interfaces/IERC4337.sol";
import {Call, IAgentAccount} from "./interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "./interfaces/ISessionKeyValidator.sol";

/// @title SessionKeyValidator
/// @notice Holds the on-chain policy of agent (session) keys and validates their user operations
/// for {AgentAccount}s (DESIGN.md §5.2).
///
/// Session signature (106 bytes): `0x08 ‖ account (20) ‖ key (20) ‖ r (32) ‖ s (32) ‖ v (1)`, an ECDSA
/// signature by `key` over the EIP-191 hash `keccak256("\x19Ethereum Signed Message:\n32" ‖ userOpHash)`,
/// with `v ∈ {27, 28}` and a low `s`.
///
/// ERC-7562: validation reads no block environment (no TIMESTAMP/NUMBER; the window goes into the
/// validation data) and every storage slot it touches is keyed with the account as the innermost
/// mapping key (storage "associated with the sender"), so unstaked accounts can use it.
contract SessionKeyValidator is ISessionKeyValidator {
    /// @notice First byte of every session signature.
    bytes1 public constant SESSION_MARKER = 0x08;

    /// @notice Exact length of a session signature.
    uint256 public constant SESSION_SIGNATURE_LENGTH = 106;

    /// @dev Sessions by key, then account (the account is the innermost key).
    mapping(address key => mapping(address account => Session)) internal _sessions;

    /// @dev Allowed targets by target, key and grant epoch, then account (innermost). Keying by epoch
    /// means a re-grant starts with an empty allowlist without clearing the old one.
    mapping(address target => mapping(address key => mapping(uint256 epoch => mapping(address account => bool))))
        internal _allowedTargets;

    /// @inheritdoc ISessionKeyValidator
    function grantSession(
        address key,
        address[] calldata targets,
        uint128 spendCap,
        uint48 validAfter,
        uint48 validUntil,
        address revoker
    ) external {
        if (key == address(0)) revert InvalidSessionKey();
        if (validUntil != 0 && validUntil <= validAfter) revert InvalidValidityWindow(validAfter, validUntil);

        address account = msg.sender;
        Session storage session = _sessions[key][account];
        uint64 epoch = session.epoch + 1;
        _sessions[key][account] = Session({
            validAfter: validAfter,
            validUntil: validUntil,
            revoker: revoker,
            spendCap: spendCap,
            spent: 0,
            epoch: epoch,
            active: true
        });

        for (uint256 i; i < targets.length; ++i) {
            address target = targets[i];
            if (target == account || target == address(this)) revert ForbiddenTarget(target);
            _allowedTargets[target][key][epoch][account] = true;
        }

        emit SessionGranted(account, key, epoch, targets, spendCap, validAfter, validUntil, revoker);
    }

    /// @inheritdoc ISessionKeyValidator
    function revokeSession(address account, address key) external {
        Session storage session = _sessions[key][account];
        if (msg.sender != account && (msg.sender != session.revoker || session.revoker == address(0))) {
            revert NotAuthorizedToRevoke(msg.sender);
        }
        _requireActive(session, account, key);
        session.active = false;
        emit SessionRevoked(account, key, msg.sender);
    }

    /// @inheritdoc ISessionKeyValidator
    function validateSessionUserOp(PackedUserOperation calldata userOp, bytes32 userOpHash)
        external
        returns (uint256 validationData)
    {
        bytes calldata sig = userOp.signature;
        if (sig.length != SESSION_SIGNATURE_LENGTH) revert InvalidSignatureLength(sig.length);
        if (sig[0] != SESSION_MARKER) revert InvalidSignatureMarker(sig[0]);

        // Sender binding: the signature names the account it was made for.
        address account = address(bytes20(sig[1:21]));
        if (account != userOp.sender || account != msg.sender) {
            revert AccountMismatch(account, userOp.sender, msg.sender);
        }
        address key = address(bytes20(sig[21:41]));

        Session storage session = _sessions[key][account];
        _requireActive(session, account, key);

        // Policy: targets and cumulative value. Runs whatever the signature, so that estimation
        // with a stub signature takes the path (and the gas) of the real operation.
        uint256 value = _checkCalls(userOp.callData, account, key, session.epoch, session.spendCap - session.spent);
        if (value != 0) {
            // Cannot overflow or truncate: _checkCalls keeps value <= spendCap - spent < 2^128.
            // forge-lint: disable-next-line(unsafe-typecast)
            uint128 totalSpent = session.spent + uint128(value);
            session.spent = totalSpent;
            emit SessionSpent(account, key, value, totalSpent);
        }

        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(
            MessageHashUtils.toEthSignedMessageHash(userOpHash),
            uint8(sig[105]),
            bytes32(sig[41:73]),
            bytes32(sig[73:105])
        );
        bool sigFailed = err != ECDSA.RecoverError.NoError || signer != key;
        return _packValidationData(sigFailed, session.validUntil, session.validAfter);
    }

    /// @inheritdoc ISessionKeyValidator
    function getSession(address account, address key) external view returns (Session memory) {
        return _sessions[key][account];
    }

    /// @inheritdoc ISessionKeyValidator
    function isSessionActive(address account, address key) external view returns (bool) {
        Session storage session = _sessions[key][account];
        // A view for off-chain pre-checks, never called in validation; mirrors EntryPoint v0.7's test.
        // forge-lint: disable-next-item(block-timestamp)
        return session.active && session.validAfter <= block.timestamp
            && (session.validUntil == 0 || block.timestamp <= session.validUntil);
    }

    /// @inheritdoc ISessionKeyValidator
    function remainingBudget(address account, address key) external view returns (uint256) {
        Session storage session = _sessions[key][account];
        return session.active ? session.spendCap - session.spent : 0;
    }

    /// @inheritdoc ISessionKeyValidator
    function isTargetAllowed(address account, address key, address target) external view returns (bool) {
        Session storage session = _sessions[key][account];
        return session.active && _allowedTargets[target][key][session.epoch][account];
    }

    /// @dev Reverts unless the session has been granted and not revoked.
    function _requireActive(Session storage session, address account, address key) private view {
        if (!session.active) {
            if (session.epoch == 0) revert UnknownSession(account, key);
            revert SessionIsRevoked(account, key);
        }
    }

    /// @dev Checks every call of `callData` (the account's `execute` or `executeBatch`) against the
    /// allowlist of `epoch` and the remaining budget; returns the operation's total native value.
    function _checkCalls(bytes calldata callData, address account, address key, uint64 epoch, uint256 remaining)
        private
        view
        returns (uint256 total)
    {
        bytes4 selector = callData.length >= 4 ? bytes4(callData[:4]) : bytes4(0);
        if (selector == IAgentAccount.execute.selector) {
            (address target, uint256 value,) = abi.decode(callData[4:], (address, uint256, bytes));
            _checkTarget(target, account, key, epoch);
            if (value > remaining) revert SpendCapExceeded(value, remaining);
            return value;
        }
        if (selector == IAgentAccount.executeBatch.selector) {
            Call[] memory calls = abi.decode(callData[4:], (Call[]));
            for (uint256 i; i < calls.length; ++i) {
                _checkTarget(calls[i].target, account, key, epoch);
                uint256 value = calls[i].value;
                if (value > remaining) revert SpendCapExceeded(value, remaining);
                remaining -= value;
                total += value;
            }
            return total;
        }
        revert UnsupportedCall(selector);
    }

    /// @dev Reverts unless `target` may be called by the session of `epoch`.
    function _checkTarget(address target, address account, address key, uint64 epoch) private view {
        if (target == account || target == address(this)) revert ForbiddenTarget(target);
        if (!_allowedTargets[target][key][epoch][account]) revert TargetNotAllowed(target);
    }
}
