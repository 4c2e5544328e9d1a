// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {PackedUserOperation} from "../../interfaces/IERC4337.sol";

/// @dev A call target that records calls and can revert with a custom error.
contract Recorder {
    error Nope(uint256 code);

    uint256 public calls;
    uint256 public received;

    function hit(uint256 code) external payable {
        if (code == 13) revert Nope(code);
        calls += 1;
        received += msg.value;
    }

    function other() external pure returns (uint256) {
        return 7;
    }

    receive() external payable {
        received += msg.value;
    }
}

/// @dev Something that looks like an account to the validator's grant check: it reports an
/// EntryPoint through `entryPoint()`.
contract EntryPointReporter {
    address public entryPoint;

    constructor(address entryPoint_) {
        entryPoint = entryPoint_;
    }
}

/// @dev A paymaster (EntryPoint v0.7/v0.8 interface) that sponsors every operation: empty context,
/// no postOp, validation data 0. It pays from its EntryPoint deposit.
contract SponsorPaymaster {
    uint256 public sponsored;

    function validatePaymasterUserOp(PackedUserOperation calldata, bytes32, uint256)
        external
        pure
        returns (bytes memory context, uint256 validationData)
    {
        return ("", 0);
    }

    function postOp(uint8, bytes calldata, uint256, uint256) external pure {}
}
