// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title Probe
/// @notice Test-only contract exercising what the chain port must handle:
///         state changes, events, revert strings and custom errors.
contract Probe {
    /// @notice Raised when a value above the limit is stored.
    error Probe__TooLarge(uint256 value, uint256 limit);

    /// @notice Emitted after a value is stored.
    event Stored(address indexed by, uint256 value);

    uint256 public constant LIMIT = 1000;
    uint256 public value;

    /// @notice Stores `newValue`; reverts with a custom error above LIMIT.
    function store(uint256 newValue) external {
        if (newValue > LIMIT) revert Probe__TooLarge(newValue, LIMIT);
        value = newValue;
        emit Stored(msg.sender, newValue);
    }

    /// @notice Always reverts with a reason string.
    function fail() external pure {
        revert("Probe: always fails");
    }
}
