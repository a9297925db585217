"""Client-side EIP-712 signing of consent messages, exactly as the client SDK does it:
``encode_typed_data`` + ``Account.sign_message`` of eth-account."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount

DOMAIN_NAME = "EHR Ledger ConsentRegistry"
DOMAIN_VERSION = "1"

# Category bits and purpose ids (contracts/README.md, "Encodings").
LABS, IMAGING, MEDICATIONS, NOTES, MENTAL_HEALTH = 1, 2, 4, 8, 16
ALL_CATEGORIES = LABS | IMAGING | MEDICATIONS | NOTES | MENTAL_HEALTH
TREATMENT, PAYMENT, OPERATIONS, RESEARCH, EMERGENCY = 1, 2, 3, 4, 5

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
_GRANT_TYPE = [
    {"name": "patient", "type": "address"},
    {"name": "grantee", "type": "address"},
    {"name": "categories", "type": "uint32"},
    {"name": "purpose", "type": "uint8"},
    {"name": "expiresAt", "type": "uint64"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]
_REVOKE_TYPE = [
    {"name": "patient", "type": "address"},
    {"name": "grantee", "type": "address"},
    {"name": "categories", "type": "uint32"},
    {"name": "purpose", "type": "uint8"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]


@dataclass(frozen=True)
class GrantMessage:
    patient: str
    grantee: str
    categories: int
    purpose: int
    expiresAt: int  # EIP-712 field name
    nonce: int
    deadline: int

    def args(self) -> tuple[Any, ...]:
        """Arguments of ``ConsentRegistry.grant`` before the signature."""
        return tuple(asdict(self).values())


@dataclass(frozen=True)
class RevokeMessage:
    patient: str
    grantee: str
    categories: int
    purpose: int
    nonce: int
    deadline: int

    def args(self) -> tuple[Any, ...]:
        """Arguments of ``ConsentRegistry.revoke`` before the signature."""
        return tuple(asdict(self).values())


def signable(
    message: GrantMessage | RevokeMessage, *, chain_id: int, verifying_contract: str
) -> SignableMessage:
    primary, fields = (
        ("Grant", _GRANT_TYPE) if isinstance(message, GrantMessage) else ("Revoke", _REVOKE_TYPE)
    )
    return encode_typed_data(
        full_message={
            "types": {"EIP712Domain": _DOMAIN_TYPE, primary: fields},
            "primaryType": primary,
            "domain": {
                "name": DOMAIN_NAME,
                "version": DOMAIN_VERSION,
                "chainId": chain_id,
                "verifyingContract": verifying_contract,
            },
            "message": asdict(message),
        }
    )


def sign(
    signer: LocalAccount,
    message: GrantMessage | RevokeMessage,
    *,
    chain_id: int,
    verifying_contract: str,
) -> bytes:
    """The 65-byte signature (r || s || v, v in {27, 28}) of ``message``."""
    encoded = signable(message, chain_id=chain_id, verifying_contract=verifying_contract)
    return bytes(Account.sign_message(encoded, private_key=signer.key).signature)
