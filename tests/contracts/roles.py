"""Role ids of the contracts' access control (OpenZeppelin AccessControl: keccak256
of the role name) and the errors it refuses with."""

from __future__ import annotations

from eth_utils.crypto import keccak

DEFAULT_ADMIN_ROLE = b"\x00" * 32
REGISTRAR_ROLE = keccak(text="REGISTRAR_ROLE")
RELAY_ROLE = keccak(text="RELAY_ROLE")

# AccessControlUnauthorizedAccount(address account, bytes32 neededRole): the caller
# lacks the role a function needs (DEFAULT_ADMIN_ROLE for grantRole and revokeRole).
UNAUTHORISED = "AccessControlUnauthorizedAccount"
# AccessControlBadConfirmation(): renounceRole for an account other than the caller.
BAD_CONFIRMATION = "AccessControlBadConfirmation"
