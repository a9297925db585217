"""Role ids of the contracts' access control (keccak256 of the role name)."""

from __future__ import annotations

from eth_utils.crypto import keccak

DEFAULT_ADMIN_ROLE = b"\x00" * 32
REGISTRAR_ROLE = keccak(text="REGISTRAR_ROLE")
RELAY_ROLE = keccak(text="RELAY_ROLE")
