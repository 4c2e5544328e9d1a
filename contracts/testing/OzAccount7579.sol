// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {AccountERC7579} from "@openzeppelin/contracts/account/extensions/draft-AccountERC7579.sol";
import {IEntryPoint} from "@openzeppelin/contracts/interfaces/draft-IERC4337.sol";
import {SignerECDSA} from "@openzeppelin/contracts/utils/cryptography/signers/SignerECDSA.sol";

/// @notice A third-party ERC-7579 account for the module tests: OpenZeppelin 5.4.0's `AccountERC7579`
/// as it comes, with an owner signer of its own kind (`SignerECDSA`: raw ECDSA over the userOpHash on
/// the account's default nonce lanes, whose key names no module) and a chosen EntryPoint (v0.7 or v0.8).
contract OzAccount7579 is AccountERC7579, SignerECDSA {
    IEntryPoint private immutable _entryPoint;

    /// @param entryPoint_ The EntryPoint.
    /// @param owner_ The owner EOA (the account's ECDSA signer).
    constructor(address entryPoint_, address owner_) SignerECDSA(owner_) {
        _entryPoint = IEntryPoint(entryPoint_);
    }

    /// @notice The EntryPoint this account trusts.
    function entryPoint() public view override returns (IEntryPoint) {
        return _entryPoint;
    }

    /// @dev The owner's signature, for operations whose nonce key names no installed validator module.
    function _rawSignatureValidation(bytes32 hash, bytes calldata signature)
        internal
        view
        override(AccountERC7579, SignerECDSA)
        returns (bool)
    {
        return SignerECDSA._rawSignatureValidation(hash, signature);
    }
}
