"""The texts an account signs: its registration and its login (EIP-4361 style).

Both texts are ``ehr_protocol.identity`` (the client SDK builds the same registration
text and signs the login text the service hands out). Signatures are EIP-191
``personal_sign`` signatures by the account's signing key.
"""

from __future__ import annotations

import re

from ehr_protocol.identity import LOGIN_STATEMENT, login_text, registration_text
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import is_address, to_checksum_address

from services.identity.domain.errors import BadSignature, InvalidInput

_HEX_SIGNATURE = re.compile(r"^(0x)?[0-9a-fA-F]{130}\Z")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}\Z")

__all__ = [
    "LOGIN_STATEMENT",
    "checksum_address",
    "login_text",
    "parse_signature",
    "registration_text",
    "signer_of",
]


def checksum_address(value: str) -> str:
    """``value`` checksummed; only ASCII hex is an address (a look-alike digit or letter
    from another script is refused, never normalised)."""
    if not isinstance(value, str) or not _ADDRESS.match(value) or not is_address(value):
        raise InvalidInput(f"not an address: {value!r}", code="invalid_address")
    return str(to_checksum_address(value))


def parse_signature(value: str) -> bytes:
    if not isinstance(value, str) or not _HEX_SIGNATURE.match(value):
        raise InvalidInput("signature must be 65 bytes of hex", code="malformed_signature")
    return bytes.fromhex(value.removeprefix("0x"))


def signer_of(text: str, signature: bytes) -> str:
    """The checksummed address whose key signed ``text``; BadSignature if none."""
    try:
        return str(Account.recover_message(encode_defunct(text=text), signature=signature))
    except Exception as exc:  # eth-keys raises several types for invalid signatures
        raise BadSignature("signature does not recover") from exc
