// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title AccessRoles
/// @notice Minimal role-based access control shared by the EHR Ledger contracts.
/// @dev Holders of DEFAULT_ADMIN_ROLE grant and revoke every role. The contract
///      that inherits this one supplies its own prefixed custom errors through
///      `_revertUnauthorised` and `_revertZeroAddress`, so a failed check always
///      names the contract that refused it (e.g. `ProviderRegistry__Unauthorised`).
abstract contract AccessRoles {
    /// @notice Role that grants and revokes every role.
    bytes32 public constant DEFAULT_ADMIN_ROLE = 0x00;

    /// @notice Emitted after `role` is granted to `account` by `sender`.
    event RoleGranted(bytes32 indexed role, address indexed account, address indexed sender);

    /// @notice Emitted after `role` is revoked from `account` by `sender`.
    event RoleRevoked(bytes32 indexed role, address indexed account, address indexed sender);

    mapping(bytes32 role => mapping(address account => bool)) private _members;

    /// @dev Reverts with the inheriting contract's `<Name>__Unauthorised(account, role)`.
    function _revertUnauthorised(address account, bytes32 role) internal pure virtual;

    /// @dev Reverts with the inheriting contract's `<Name>__ZeroAddress()`.
    function _revertZeroAddress() internal pure virtual;

    modifier onlyRole(bytes32 role) {
        if (!_members[role][msg.sender]) _revertUnauthorised(msg.sender, role);
        _;
    }

    /// @notice Whether `account` holds `role`.
    /// @param role The role id (keccak256 of its name; 0x00 for the admin role).
    /// @param account The account to check.
    /// @return True when the account holds the role.
    function hasRole(bytes32 role, address account) external view returns (bool) {
        return _members[role][account];
    }

    /// @notice Grants `role` to `account`; only an admin may call. Granting a role
    ///         the account already holds changes nothing and emits nothing.
    /// @param role The role id.
    /// @param account The account receiving the role.
    function grantRole(bytes32 role, address account) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _grantRole(role, account);
    }

    /// @notice Revokes `role` from `account`; only an admin may call. Revoking a
    ///         role the account does not hold changes nothing and emits nothing.
    /// @param role The role id.
    /// @param account The account losing the role.
    function revokeRole(bytes32 role, address account) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (_members[role][account]) {
            _members[role][account] = false;
            emit RoleRevoked(role, account, msg.sender);
        }
    }

    function _grantRole(bytes32 role, address account) internal {
        if (account == address(0)) _revertZeroAddress();
        if (!_members[role][account]) {
            _members[role][account] = true;
            emit RoleGranted(role, account, msg.sender);
        }
    }
}
