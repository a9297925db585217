"""The consent model: signed messages, grants as the projection holds them, accounts.

Encodings are the contract's (``contracts/src/ConsentRegistry.sol``), defined once in
``ehr_protocol.vocabulary``: categories are a bitmask (LABS=1, IMAGING=2, MEDICATIONS=4,
NOTES=8, MENTAL_HEALTH=16) and a purpose is one id (TREATMENT=1, PAYMENT=2,
OPERATIONS=3, RESEARCH=4, EMERGENCY=5). Addresses are
kept in checksummed ``0x`` form; times are unix seconds (the chain's unit).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from ehr_protocol.vocabulary import ALL_CATEGORIES, MAX_PURPOSE, Purpose, Role
from ehr_protocol.vocabulary import CategoryBits as Category

ZERO_ADDRESS = "0x" + "0" * 40

__all__ = ["ALL_CATEGORIES", "MAX_PURPOSE", "Category", "Purpose", "Role"]


MAX_GRANT_HORIZON_SECONDS = 315_576_000
"""Longest a grant may run: ten years of 365.25 days. The registry holds the same
constant (``ConsentRegistry.MAX_GRANT_HORIZON``) and refuses a grant beyond it, so no
expiry on chain exceeds what the projection and the events can hold."""

UNIX_TIME_MAX = 253_402_300_799
"""9999-12-31T23:59:59Z: the last second Python's ``datetime`` and protobuf's
``Timestamp`` hold; every time at the edge (an expiry, a deadline) is at most this."""

INT64_MAX = 2**63 - 1
"""The largest value the databases' ``BIGINT`` holds (a nonce, a block number)."""

NONCE_MAX = 2**53 - 1
"""The largest nonce a signed message may carry: a patient's nonces count their signed
messages from 0, so this is never reached; it is below ``INT64_MAX`` and the largest
integer every JSON client (and the OpenAPI document's numbers) holds exactly."""


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
    # Categories granted to this grantee for this purpose and taken back since.
    revoked_categories: int = 0

    def authorises(self, category: int, now: float) -> bool:
        """The contract's ``isAuthorised`` rule, evaluated at ``now``."""
        return category != 0 and self.categories & category == category and now < self.expires_at

    def active(self, now: float) -> bool:
        return self.categories != 0 and now < self.expires_at

    def refusal(self, category: int, now: float) -> CheckReason:
        """Why this row does or does not authorise ``category`` at ``now``: a category
        not (or no longer) covered is ``revoked`` when the patient took it back (a
        revocation, or a later grant without it), else ``no_grant``; a covered one is
        ``expired`` once the expiry passed, else ``granted``."""
        if category == 0:
            return "no_grant"
        missing = category & ~self.categories
        if missing:
            return "revoked" if missing & ~self.revoked_categories == 0 else "no_grant"
        return "granted" if now < self.expires_at else "expired"


CheckReason = Literal["granted", "no_grant", "revoked", "expired"]
"""Why a check answered as it did (``CheckView.reason``)."""


def change_problem(
    kind: str, purpose: int, categories: int, nonce: int, expires_at: int, block_number: int
) -> str | None:
    """What keeps a registry log out of the projection, or None when it fits: values
    outside the encodings or beyond what the database and the events can hold."""
    if not 1 <= purpose <= MAX_PURPOSE:
        return f"purpose {purpose} is not a defined purpose id"
    if categories & ~ALL_CATEGORIES or (kind == "granted" and categories == 0):
        return f"categories {categories} is not a mask of defined categories"
    if not 0 <= nonce <= INT64_MAX:
        return f"nonce {nonce} is outside 0..{INT64_MAX}"
    if not 0 <= block_number <= INT64_MAX:
        return f"block number {block_number} is outside 0..{INT64_MAX}"
    if kind == "granted" and not 0 < expires_at <= UNIX_TIME_MAX:
        return f"expiry {expires_at} is outside 1..{UNIX_TIME_MAX}"
    return None


def grant_id_of(patient: str, grantee: str, purpose: int, nonce: int) -> str:
    """A stable id of the grant recorded by the patient's message with ``nonce``."""
    material = f"{patient.lower()}:{grantee.lower()}:{purpose}:{nonce}".encode()
    return "grant-" + hashlib.sha256(material).hexdigest()[:32]
