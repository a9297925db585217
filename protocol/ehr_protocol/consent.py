"""EIP-712 consent messages of ``ConsentRegistry`` (contracts/src/ConsentRegistry.sol).

The typed data here matches the contract exactly: domain ``EHR Ledger
ConsentRegistry`` version ``1`` with ``chainId`` and ``verifyingContract``, and
the ``Grant`` / ``Revoke`` struct types of ``GRANT_TYPEHASH`` / ``REVOKE_TYPEHASH``.
The patient signs on the client with a local key (:func:`sign_message`); a
server may pre-check a signature with :func:`recover_signer` before relaying it.

Usage::

    message = build_grant(patient, grantee, categories=LABS | IMAGING,
                          purpose=TREATMENT, expires_at=t + 3600, nonce=n,
                          deadline=t + 600)
    signature = sign_message(patient_account, message,
                             chain_id=chain_id, verifying_contract=registry)
    assert recover_signer(message, signature, chain_id=chain_id,
                          verifying_contract=registry) == patient
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.address import is_address, to_checksum_address

from ehr_protocol.vocabulary import ALL_CATEGORIES, Purpose
from ehr_protocol.vocabulary import CategoryBits as Category

DOMAIN_NAME = "EHR Ledger ConsentRegistry"
DOMAIN_VERSION = "1"

#: Upper bound of a canonical ``s`` (EIP-2); the contract refuses larger values.
SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
UINT256_MAX = 2**256 - 1


LABS, IMAGING, MEDICATIONS, NOTES, MENTAL_HEALTH = (int(c) for c in Category)
TREATMENT, PAYMENT, OPERATIONS, RESEARCH, EMERGENCY = (int(p) for p in Purpose)

EIP712_DOMAIN_TYPE: list[dict[str, str]] = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
GRANT_TYPE: list[dict[str, str]] = [
    {"name": "patient", "type": "address"},
    {"name": "grantee", "type": "address"},
    {"name": "categories", "type": "uint32"},
    {"name": "purpose", "type": "uint8"},
    {"name": "expiresAt", "type": "uint64"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]
REVOKE_TYPE: list[dict[str, str]] = [
    {"name": "patient", "type": "address"},
    {"name": "grantee", "type": "address"},
    {"name": "categories", "type": "uint32"},
    {"name": "purpose", "type": "uint8"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]


class ConsentMessageError(ValueError):
    """A consent message or signature is malformed (bad address, range, length)."""


@dataclass(frozen=True)
class GrantMessage:
    """``Grant(address patient,address grantee,uint32 categories,uint8 purpose,
    uint64 expiresAt,uint256 nonce,uint256 deadline)``."""

    patient: str
    grantee: str
    categories: int
    purpose: int
    expires_at: int
    nonce: int
    deadline: int

    primary_type = "Grant"

    def typed_message(self) -> dict[str, Any]:
        """The EIP-712 ``message`` object (field names as in the contract)."""
        return {
            "patient": self.patient,
            "grantee": self.grantee,
            "categories": self.categories,
            "purpose": self.purpose,
            "expiresAt": self.expires_at,
            "nonce": self.nonce,
            "deadline": self.deadline,
        }

    def args(self) -> tuple[Any, ...]:
        """Arguments of ``ConsentRegistry.grant`` before the signature."""
        return tuple(self.typed_message().values())


@dataclass(frozen=True)
class RevokeMessage:
    """``Revoke(address patient,address grantee,uint32 categories,uint8 purpose,
    uint256 nonce,uint256 deadline)``."""

    patient: str
    grantee: str
    categories: int
    purpose: int
    nonce: int
    deadline: int

    primary_type = "Revoke"

    def typed_message(self) -> dict[str, Any]:
        """The EIP-712 ``message`` object (field names as in the contract)."""
        return {
            "patient": self.patient,
            "grantee": self.grantee,
            "categories": self.categories,
            "purpose": self.purpose,
            "nonce": self.nonce,
            "deadline": self.deadline,
        }

    def args(self) -> tuple[Any, ...]:
        """Arguments of ``ConsentRegistry.revoke`` before the signature."""
        return tuple(self.typed_message().values())


ConsentMessage = GrantMessage | RevokeMessage


def _address(value: str, field: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise ConsentMessageError(f"{field} is not an address: {value!r}")
    checksummed = to_checksum_address(value)
    if checksummed == to_checksum_address("0x" + "00" * 20):
        raise ConsentMessageError(f"{field} is the zero address")
    return str(checksummed)


def _uint(value: int, field: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ConsentMessageError(f"{field} is out of range: {value!r}")
    return value


def _scope(categories: int, purpose: int) -> tuple[int, int]:
    _uint(categories, "categories", UINT32_MAX)
    if categories == 0 or categories & ~ALL_CATEGORIES:
        raise ConsentMessageError(f"categories must be a non-empty mask of 0x1F: {categories}")
    _uint(purpose, "purpose", 255)
    if not 1 <= purpose <= max(Purpose):
        raise ConsentMessageError(f"purpose must be 1..{int(max(Purpose))}: {purpose}")
    return int(categories), int(purpose)


def build_grant(
    patient: str,
    grantee: str,
    *,
    categories: int,
    purpose: int,
    expires_at: int,
    nonce: int,
    deadline: int,
) -> GrantMessage:
    """A validated grant message (addresses checksummed, ranges checked as the contract does)."""
    cats, purp = _scope(categories, purpose)
    return GrantMessage(
        patient=_address(patient, "patient"),
        grantee=_address(grantee, "grantee"),
        categories=cats,
        purpose=purp,
        expires_at=_uint(expires_at, "expires_at", UINT64_MAX),
        nonce=_uint(nonce, "nonce", UINT256_MAX),
        deadline=_uint(deadline, "deadline", UINT256_MAX),
    )


def build_revoke(
    patient: str,
    grantee: str,
    *,
    categories: int,
    purpose: int,
    nonce: int,
    deadline: int,
) -> RevokeMessage:
    """A validated revocation message."""
    cats, purp = _scope(categories, purpose)
    return RevokeMessage(
        patient=_address(patient, "patient"),
        grantee=_address(grantee, "grantee"),
        categories=cats,
        purpose=purp,
        nonce=_uint(nonce, "nonce", UINT256_MAX),
        deadline=_uint(deadline, "deadline", UINT256_MAX),
    )


def typed_data(
    message: ConsentMessage, *, chain_id: int, verifying_contract: str
) -> dict[str, Any]:
    """The full EIP-712 typed-data document (what a wallet would display)."""
    fields = GRANT_TYPE if isinstance(message, GrantMessage) else REVOKE_TYPE
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, message.primary_type: fields},
        "primaryType": message.primary_type,
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": chain_id,
            "verifyingContract": _address(verifying_contract, "verifying_contract"),
        },
        "message": message.typed_message(),
    }


def signable(message: ConsentMessage, *, chain_id: int, verifying_contract: str) -> SignableMessage:
    """The EIP-712 encoding of ``message`` for ``ConsentRegistry`` at ``verifying_contract``."""
    return encode_typed_data(
        full_message=typed_data(message, chain_id=chain_id, verifying_contract=verifying_contract)
    )


def sign_message(
    signer: LocalAccount | bytes,
    message: ConsentMessage,
    *,
    chain_id: int,
    verifying_contract: str,
) -> bytes:
    """The patient's 65-byte signature (r || s || v, v in {27, 28}, canonical s).

    ``signer`` is the patient's local account (or its raw private key); it must
    be the message's ``patient``. The key never leaves this process.
    """
    account = signer if isinstance(signer, LocalAccount) else Account.from_key(signer)
    if to_checksum_address(account.address) != to_checksum_address(message.patient):
        raise ConsentMessageError("the signing key is not the message's patient")
    encoded = signable(message, chain_id=chain_id, verifying_contract=verifying_contract)
    return bytes(Account.sign_message(encoded, private_key=account.key).signature)


def check_signature_shape(signature: bytes) -> None:
    """Refuse what the contract refuses before ``ecrecover``: length, ``v``, high ``s``."""
    if len(signature) != 65:
        raise ConsentMessageError(f"signature must be 65 bytes, got {len(signature)}")
    s = int.from_bytes(signature[32:64], "big")
    if s > SECP256K1_HALF_N or signature[64] not in (27, 28):
        raise ConsentMessageError("signature has a non-canonical s or v")


def recover_signer(
    message: ConsentMessage,
    signature: bytes,
    *,
    chain_id: int,
    verifying_contract: str,
) -> str:
    """The checksummed address that signed ``message`` (server-side pre-check).

    Raises :class:`ConsentMessageError` for a signature the contract would call
    malformed. Compare the result with ``message.patient``.
    """
    check_signature_shape(signature)
    encoded = signable(message, chain_id=chain_id, verifying_contract=verifying_contract)
    try:
        return str(Account.recover_message(encoded, signature=signature))
    except Exception as exc:  # eth-keys raises several types for invalid points
        raise ConsentMessageError(f"signature does not recover: {exc}") from exc


def is_signed_by_patient(
    message: ConsentMessage,
    signature: bytes,
    *,
    chain_id: int,
    verifying_contract: str,
) -> bool:
    """Whether ``signature`` is the patient's valid signature of ``message``."""
    try:
        signer = recover_signer(
            message, signature, chain_id=chain_id, verifying_contract=verifying_contract
        )
    except ConsentMessageError:
        return False
    return signer == to_checksum_address(message.patient)
