// SPDX-License-Identifier: MIT
// Vendored from the npm package @rhinestone/erc4337-validation@0.0.5 (MIT, Copyright (c) 2024
// Rhinestone; see LICENSE beside this file). Changes for this project are listed in README.md and
// marked "kms:" in the code.
pragma solidity ^0.8.0;

// ERC-4337 v0.7 imports
import { PackedUserOperation } from "account-abstraction/interfaces/PackedUserOperation.sol";
import { IEntryPoint } from "account-abstraction/interfaces/IEntryPoint.sol";
import { IEntryPointSimulations } from "account-abstraction/interfaces/IEntryPointSimulations.sol";
import { IStakeManager } from "account-abstraction/interfaces/IStakeManager.sol";
import { EntryPointSimulations } from "account-abstraction/core/EntryPointSimulations.sol";
import { SenderCreator } from "account-abstraction/core/EntryPoint.sol";

// kms: the v0.6 imports, etchEntrypointV060 and the v0.6 bytecode are removed (v0.7 only).

struct UserOperationDetails {
    address entryPoint;
    address sender;
    bytes initCode;
    bytes paymasterAndData;
}

import { etch } from "./Vm.sol";

address constant ENTRYPOINT_ADDR = 0x0000000071727De22E5E9d8BAf0edAc6f37da032;

/**
 * Creates a new EntryPointSimulations and etches it to the ENTRYPOINT_ADDR
 */
function etchEntrypoint() returns (IEntryPoint) {
    // Create and etch a new EntryPointSimulations
    address payable entryPoint = payable(address(new EntryPointSimulations()));
    etch(ENTRYPOINT_ADDR, entryPoint.code);

    // Create and etch a new SenderCreator
    SenderCreator senderCreator = new SenderCreator();
    address senderCreatorAddr =
        address(uint160(uint256(keccak256(abi.encodePacked(hex"d694", ENTRYPOINT_ADDR, hex"01")))));
    etch(senderCreatorAddr, address(senderCreator).code);

    return IEntryPoint(ENTRYPOINT_ADDR);
}

/// kms: the SenderCreator address of the etched EntryPoint (first CREATE of ENTRYPOINT_ADDR).
function senderCreatorOf(address entryPoint) pure returns (address) {
    return address(uint160(uint256(keccak256(abi.encodePacked(hex"d694", entryPoint, hex"01")))));
}
