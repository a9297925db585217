"""The consent model: signed messages, grants as the projection holds them, accounts.

Encodings are the contract's (``contracts/src/ConsentRegistry.sol``): categories are a
bitmask (LABS=1, IMAGING=2, MEDICATIONS=4, NOTES=8, MENTAL_HEALTH=16) and a purpose is
one id (TREATMENT=1, PAYMENT=2, OPERATIONS=3, RESEARCH=4, EMERGENCY=5). Addresses are
kept in checksummed ``0x`` form; times are unix seconds (the chain's unit).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum, IntFlag

ZERO_ADDRESS = "0x" + "0" * 40


class Category(IntFlag):
    """Record categories, as bits of the contract's mask."""

    LABS = 1
    IMAGING = 2
    MEDICATIONS = 4
    NOTES = 8
    MENTAL_HEALTH = 16


ALL_CATEGORIES = 0x1F


class Purpose(IntEnum):
    """Purpose-of-use ids, as the contract numbers them."""

    TREATMENT = 1
    PAYMENT = 2
    OPERATIONS = 3
    RESEARCH = 4
    EMERGENCY = 5


class Role:
    """Role names carried by access tokens (the JWT ``role`` claim)."""

    PATIENT = "patient"
    PROVIDER = "provider"
    AUDITOR = "auditor"
    ADMIN = "admin"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class Account:
    """An account known from identity's ``account_registered`` events."""

    account_id: str
    role: str
    address: str


@dataclass(frozen=True, slots=True)
class GrantMessage:
    """The EIP-712 ``Grant`` message a patient signs."""

    patient: str
    grantee: str
    categories: int
    purpose: int
    expires_at: int
    nonce: int
    deadline: int


@dataclass(frozen=True, slots=True)
class RevokeMessage:
    """The EIP-712 ``Revoke`` message a patient signs."""

    patient: str
    grantee: str
    categories: int
    purpose: int
    nonce: int
    deadline: int


ConsentMessage = GrantMessage | RevokeMessage


@dataclass(frozen=True, slots=True)
class Signed:
    """A message with the patient's 65-byte signature (r || s || v)."""

    message: ConsentMessage
    signature: bytes


@dataclass(frozen=True, slots=True)
class ChainPosition:
    """Where a change was recorded on chain: the transaction and the log of its event."""

    chain_id: int
    contract_address: str
    tx_hash: str
    block_number: int
    log_index: int
    gas_used: int = 0

    def after(self, other: ChainPosition | None) -> bool:
        """Whether this log comes after ``other`` in chain order."""
        if other is None:
            return True
        return (self.block_number, self.log_index) > (other.block_number, other.log_index)


@dataclass(frozen=True, slots=True)
class Grant:
    """The projection's row for one (patient, grantee, purpose): what the chain holds.

    ``categories`` is 0 once everything was revoked; ``expires_at`` is unix seconds.
    """

    grant_id: str
    patient: str
    grantee: str
    purpose: int
    categories: int
    expires_at: int
    nonce: int
    position: ChainPosition
    patient_id: str
    grantee_id: str
    updated_at: float

    def authorises(self, category: int, now: float) -> bool:
        """The contract's ``isAuthorised`` rule, evaluated at ``now``."""
        return category != 0 and self.categories & category == category and now < self.expires_at

    def active(self, now: float) -> bool:
        return self.categories != 0 and now < self.expires_at


def grant_id_of(patient: str, grantee: str, purpose: int, nonce: int) -> str:
    """A stable id of the grant recorded by the patient's message with ``nonce``."""
    material = f"{patient.lower()}:{grantee.lower()}:{purpose}:{nonce}".encode()
    return "grant-" + hashlib.sha256(material).hexdigest()[:32]
