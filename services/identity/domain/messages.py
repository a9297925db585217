"""The texts an account signs: its registration and its login (EIP-4361 style).

The client SDK (``ehr_client.identity``) builds the same registration text and
signs the login text the service hands out. Signatures are EIP-191
``personal_sign`` signatures by the account's signing key.
"""

from __future__ import annotations

import re
from datetime import datetime

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import is_address, to_checksum_address

from services.identity.domain.errors import BadSignature, InvalidInput

LOGIN_STATEMENT = "Sign in to EHR Ledger."
_HEX_SIGNATURE = re.compile(r"^(0x)?[0-9a-fA-F]{130}\Z")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}\Z")


def checksum_address(value: str) -> str:
    """``value`` checksummed; only ASCII hex is an address (a look-alike digit or letter
    from another script is refused, never normalised)."""
    if not isinstance(value, str) or not _ADDRESS.match(value) or not is_address(value):
        raise InvalidInput(f"not an address: {value!r}", code="invalid_address")
    return str(to_checksum_address(value))


def registration_text(name: str, role: str, address: str, encryption_key: str) -> str:
    return (
        "EHR Ledger account registration\n"
        f"Name: {name}\n"
        f"Role: {role}\n"
        f"Address: {address}\n"
        f"Encryption key: {encryption_key}"
    )


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def login_text(
    *,
    domain: str,
    address: str,
    uri: str,
    chain_id: int,
    nonce: str,
    issued_at: datetime,
    expires_at: datetime,
) -> str:
    """An EIP-4361 message (Sign-In with Ethereum)."""
    return (
        f"{domain} wants you to sign in with your Ethereum account:\n"
        f"{address}\n\n"
        f"{LOGIN_STATEMENT}\n\n"
        f"URI: {uri}\n"
        "Version: 1\n"
        f"Chain ID: {chain_id}\n"
        f"Nonce: {nonce}\n"
        f"Issued At: {_iso(issued_at)}\n"
        f"Expiration Time: {_iso(expires_at)}"
    )


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
