// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title ConsentEventEmitter (test only)
/// @notice Emits ConsentRegistry's two events with any arguments, unchecked: the
///         logs an older or faulty registry deployment could have left on chain
///         (e.g. an expiry of 2**64 - 1, from before the grant horizon). The
///         consent service's tests point its chain sync at this address to show
///         that a log the projection cannot hold is quarantined, not fatal.
contract ConsentEventEmitter {
    event ConsentGranted(
        address indexed patient,
        address indexed grantee,
        uint8 indexed purpose,
        uint32 categories,
        uint64 expiresAt,
        uint256 nonce
    );
    event ConsentRevoked(
        address indexed patient,
        address indexed grantee,
        uint8 indexed purpose,
        uint32 categories,
        uint32 remaining,
        uint256 nonce
    );

    function emitGranted(
        address patient,
        address grantee,
        uint8 purpose,
        uint32 categories,
        uint64 expiresAt,
        uint256 nonce
    ) external {
        emit ConsentGranted(patient, grantee, purpose, categories, expiresAt, nonce);
    }

    function emitRevoked(
        address patient,
        address grantee,
        uint8 purpose,
        uint32 categories,
        uint32 remaining,
        uint256 nonce
    ) external {
        emit ConsentRevoked(patient, grantee, purpose, categories, remaining, nonce);
    }
}
