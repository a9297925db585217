"""The texts an account signs at identity: its registration and its login (EIP-4361 style).

Signatures are EIP-191 ``personal_sign`` signatures by the account's signing key; the
client builds the registration text, identity hands out the login text.
"""

from __future__ import annotations

from datetime import datetime

LOGIN_STATEMENT = "Sign in to EHR Ledger."


def registration_text(name: str, role: str, address: str, encryption_key: str) -> str:
    """The text an account signs to register (identity checks the same text)."""
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
