// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {AccountERC7579} from "@openzeppelin/contracts/account/extensions/draft-AccountERC7579.sol";
import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {SignerERC7702} from "@openzeppelin/contracts/utils/cryptography/signers/SignerERC7702.sol";

/// @title Eip7702Account
/// @notice The account implementation an EOA delegates to with EIP-7702, so that the EOA itself (its
/// address, balance and tokens; no new contract account, no funds moved) becomes an ERC-4337 account
/// with ERC-7579 modules, and {SessionKeyValidator} can give agents capped sessions on it.
///
/// Built only from OpenZeppelin 5.4.0's parts: `AccountERC7579` (ERC-4337 validation, ERC-7579
/// `execute`, module management, validator selection by the nonce key) and `SignerERC7702` (the
/// account's own signer is the EOA's key: raw ECDSA recovering `address(this)`). No constructor
/// arguments and no state variables of its own: the code runs in the EOA's context, where no
/// constructor ever ran and nothing can be initialised. The module registry of `AccountERC7579`
/// (validators, executors, fallbacks) lives in the EOA's storage, slots 0 to 4 of the usual
/// layout; re-delegating the EOA to another implementation leaves it there. `entryPoint()` is
/// `Account`'s default, the canonical EntryPoint v0.8 `0x4337084D9E255Ff0702461CF8895CE9E3b5Ff108`,
/// the only caller `validateUserOp`, `execute` and the module management accept besides the EOA
/// itself: operations through EntryPoint v0.7 are refused (AA23, `AccountUnauthorized`).
///
/// **Use.**
/// 1. The EOA signs an EIP-7702 authorisation naming this contract's address (type-4 transaction;
///    anyone may send it). Its code is then `0xef0100 ‖ this address`.
/// 2. Its first operation, through EntryPoint v0.8, has `sender` = the EOA,
///    `initCode` = the EIP-7702 marker `0x7702` padded to 20 bytes (so that the userOpHash binds the
///    delegate: re-delegating to another implementation invalidates signed operations), a nonce key
///    naming no module (e.g. 0), and callData an ERC-7579 batch `execute` of
///    `installModule(1, validator, "")` on the account itself and `validator.grantSession(…)`. It is
///    signed by the EOA's key: the 65-byte raw ECDSA signature over EntryPoint v0.8's userOpHash (an
///    EIP-712 hash). A longer `initCode` (marker ‖ init call) is not the way to install: the EntryPoint
///    makes that call from its SenderCreator, which {installModule} does not accept.
/// 3. Agents then act exactly as on any `AccountERC7579` with the validator: on their own module
///    lane (nonce key `validator ‖ lane ‖ period`), with the 106-byte session signature and
///    ERC-7579 `execute` calldata, within the caps of their grant. Uninstalling the module (an owner
///    operation `uninstallModule(1, validator, "")`) ends every session.
///
/// **The EOA's key keeps full power.** It is the owner: it signs operations on the default lanes
/// (nonce keys naming no installed validator), it can still send ordinary transactions from the EOA
/// (including `execute` on itself: `msg.sender == address(this)`), and it can re-delegate the EOA
/// or clear the delegation with a new authorisation at any time. Sessions limit agents, never the
/// owner.
///
/// **ERC-1271.** {isValidSignature} first asks an installed validator module named in the
/// signature's first 20 bytes, as `AccountERC7579` does ({SessionKeyValidator} always refuses: session
/// keys have no ERC-1271 power), then accepts the EOA's own 65-byte ECDSA signature of the hash.
/// That keeps the EOA's message signatures valid after delegation: verifiers that see code at a
/// signer's address go to ERC-1271 instead of `ecrecover` (OpenZeppelin's `SignatureChecker`,
/// Permit2), and `AccountERC7579` alone would answer `0xffffffff` to them. It grants nothing the key
/// did not have: the same signature already recovers to the EOA's address. No agent key passes.
contract Eip7702Account is AccountERC7579, SignerERC7702 {
    /// @dev The EOA's signature, for operations whose nonce key names no installed validator module:
    /// `SignerERC7702`'s raw ECDSA over the userOpHash, recovering `address(this)` (`AccountERC7579`'s
    /// own answer is always false).
    /// @param hash The userOpHash (EntryPoint v0.8's EIP-712 hash).
    /// @param signature 65 bytes `r ‖ s ‖ v` (anything else fails).
    /// @return Whether the EOA's key signed `hash`.
    function _rawSignatureValidation(bytes32 hash, bytes calldata signature)
        internal
        view
        override(AccountERC7579, SignerERC7702)
        returns (bool)
    {
        return SignerERC7702._rawSignatureValidation(hash, signature);
    }

    /// @notice ERC-1271: `0x1626ba7e` if an installed validator module named in the signature's first
    /// 20 bytes accepts it (`AccountERC7579`'s path), or if `signature` is the EOA's own 65-byte ECDSA
    /// signature of `hash`; `0xffffffff` otherwise.
    /// @param hash The signed hash.
    /// @param signature `module ‖ inner signature`, or the EOA's `r ‖ s ‖ v`.
    /// @return magic `IERC1271.isValidSignature.selector` when valid, `0xffffffff` otherwise.
    function isValidSignature(bytes32 hash, bytes calldata signature) public view override returns (bytes4 magic) {
        magic = super.isValidSignature(hash, signature);
        if (magic != IERC1271.isValidSignature.selector) {
            magic = _rawSignatureValidation(hash, signature) ? IERC1271.isValidSignature.selector : bytes4(0xffffffff);
        }
    }
}
