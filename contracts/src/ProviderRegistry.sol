// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title ProviderRegistry
/// @notice Registry of healthcare providers verified by an administrator. The
///         record store accepts uploads only from accounts for which
///         `isVerified` is true. Only hashes and addresses are stored: the
///         licence document and the provider's metadata stay off chain.
/// @dev Roles (OpenZeppelin AccessControl): DEFAULT_ADMIN_ROLE grants and
///      revokes every role and holds no other right; REGISTRAR_ROLE registers,
///      suspends and reinstates providers. A caller without the role needed is
///      refused with `AccessControlUnauthorizedAccount(account, neededRole)`.
contract ProviderRegistry is AccessControl {
    /// @notice Lifecycle of a provider entry. `None` means never registered.
    enum Status {
        None,
        Active,
        Suspended
    }

    /// @notice One registered provider.
    /// @param licenceHash Hash of the provider's licence document.
    /// @param metadataHash Hash of the provider's off-chain metadata.
    /// @param status Active or Suspended.
    /// @param registeredAt Block time of registration.
    /// @param updatedAt Block time of the last status change.
    struct Provider {
        bytes32 licenceHash;
        bytes32 metadataHash;
        Status status;
        uint64 registeredAt;
        uint64 updatedAt;
    }

    /// @notice Role allowed to register, suspend and reinstate providers.
    bytes32 public constant REGISTRAR_ROLE = keccak256("REGISTRAR_ROLE");

    /// @notice The zero address was given where an account is required (a
    ///         provider, the first admin, or an account receiving a role).
    error ProviderRegistry__ZeroAddress();
    /// @notice A zero licence hash was given.
    error ProviderRegistry__EmptyLicenceHash();
    /// @notice The provider is already registered (active or suspended).
    error ProviderRegistry__AlreadyRegistered(address provider);
    /// @notice The provider was never registered.
    error ProviderRegistry__NotRegistered(address provider);
    /// @notice The provider is already suspended.
    error ProviderRegistry__AlreadySuspended(address provider);
    /// @notice The provider is active, so it cannot be reinstated.
    error ProviderRegistry__NotSuspended(address provider);

    /// @notice Emitted after a provider is registered (and verified).
    event ProviderRegistered(
        address indexed provider, bytes32 licenceHash, bytes32 metadataHash, address indexed by
    );
    /// @notice Emitted after a provider is suspended.
    event ProviderSuspended(address indexed provider, address indexed by);
    /// @notice Emitted after a suspended provider is reinstated.
    event ProviderReinstated(address indexed provider, address indexed by);

    mapping(address provider => Provider) private _providers;

    /// @param admin The first holder of DEFAULT_ADMIN_ROLE.
    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @dev Refuses a role for the zero address (a role nobody can use, most
    ///      likely a missing argument), then grants as AccessControl does.
    function _grantRole(bytes32 role, address account) internal override returns (bool) {
        if (account == address(0)) revert ProviderRegistry__ZeroAddress();
        return super._grantRole(role, account);
    }

    /// @notice Registers `provider` as verified; only a registrar may call.
    /// @param provider The provider's account.
    /// @param licenceHash Hash of the licence document (must not be zero).
    /// @param metadataHash Hash of the provider's off-chain metadata (may be zero).
    function register(address provider, bytes32 licenceHash, bytes32 metadataHash)
        external
        onlyRole(REGISTRAR_ROLE)
    {
        if (provider == address(0)) revert ProviderRegistry__ZeroAddress();
        if (licenceHash == bytes32(0)) revert ProviderRegistry__EmptyLicenceHash();
        Provider storage entry = _providers[provider];
        if (entry.status != Status.None) revert ProviderRegistry__AlreadyRegistered(provider);
        entry.licenceHash = licenceHash;
        entry.metadataHash = metadataHash;
        entry.status = Status.Active;
        entry.registeredAt = uint64(block.timestamp);
        entry.updatedAt = uint64(block.timestamp);
        emit ProviderRegistered(provider, licenceHash, metadataHash, msg.sender);
    }

    /// @notice Suspends an active provider: `isVerified` becomes false. Only a
    ///         registrar may call.
    /// @param provider The provider's account.
    function suspend(address provider) external onlyRole(REGISTRAR_ROLE) {
        Provider storage entry = _providers[provider];
        if (entry.status == Status.None) revert ProviderRegistry__NotRegistered(provider);
        if (entry.status == Status.Suspended) revert ProviderRegistry__AlreadySuspended(provider);
        entry.status = Status.Suspended;
        entry.updatedAt = uint64(block.timestamp);
        emit ProviderSuspended(provider, msg.sender);
    }

    /// @notice Reinstates a suspended provider: `isVerified` becomes true again.
    ///         Only a registrar may call.
    /// @param provider The provider's account.
    function reinstate(address provider) external onlyRole(REGISTRAR_ROLE) {
        Provider storage entry = _providers[provider];
        if (entry.status == Status.None) revert ProviderRegistry__NotRegistered(provider);
        if (entry.status == Status.Active) revert ProviderRegistry__NotSuspended(provider);
        entry.status = Status.Active;
        entry.updatedAt = uint64(block.timestamp);
        emit ProviderReinstated(provider, msg.sender);
    }

    /// @notice Whether `provider` is registered and not suspended.
    /// @param provider The account to check.
    /// @return True for an active provider.
    function isVerified(address provider) external view returns (bool) {
        return _providers[provider].status == Status.Active;
    }

    /// @notice The registry entry of `provider` (all zero when never registered).
    /// @param provider The account to look up.
    /// @return The stored entry.
    function getProvider(address provider) external view returns (Provider memory) {
        return _providers[provider];
    }
}
