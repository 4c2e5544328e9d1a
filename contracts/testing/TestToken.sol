// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title TestToken
/// @notice An ERC-20 with free minting, for local chains and tests only (the local stack deploys it so
/// that end-to-end tests and the demo can exercise session token caps). Never deploy it elsewhere.
contract TestToken is ERC20 {
    constructor() ERC20("Test Token", "TEST") {}

    /// @notice Mints `amount` to `to`. Anyone may call it.
    /// @param to The recipient.
    /// @param amount The amount, in the token's units (18 decimals).
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
