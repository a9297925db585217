"""Record categories, purposes of use and roles: the one definition every side reads.

Encodings are the ConsentRegistry contract's (``contracts/README.md``, "Encodings"): a
grant's categories are a ``uint32`` bitmask (``CategoryBits``), its purpose one ``uint8``
id (``Purpose``). Record metadata and API bodies name a category by its wire name
(``Category``: ``"labs"``, ...), the same members in the same order: the ``n``-th is bit
``1 << (n - 1)`` of the mask and vocabulary code ``n`` (``ehr.vocabulary.v1``).
"""

from __future__ import annotations

import enum


class CategoryBits(enum.IntFlag):
    """Record categories, as bits of the contract's mask."""

    LABS = 1
    IMAGING = 2
    MEDICATIONS = 4
    NOTES = 8
    MENTAL_HEALTH = 16


ALL_CATEGORIES = 0x1F
"""The contract's ``ALL_CATEGORIES``: every defined bit."""


class Category(enum.StrEnum):
    """Record categories by wire name; ``bit`` is the contract mask bit, ``code`` the
    vocabulary code (``ehr.vocabulary.v1.RecordCategory``)."""

    LABS = "labs"
    IMAGING = "imaging"
    MEDICATIONS = "medications"
    NOTES = "notes"
    MENTAL_HEALTH = "mental-health"

    @property
    def bit(self) -> int:
        return int(CategoryBits[self.name])

    @property
    def code(self) -> int:
        return int(CategoryBits[self.name]).bit_length()


CATEGORY_NAMES: tuple[str, ...] = tuple(c.value for c in Category)
"""The wire names in bit order."""

CATEGORY_BITS: dict[str, int] = {c.value: c.bit for c in Category}
"""Wire name -> contract mask bit."""


class Purpose(enum.IntEnum):
    """Purpose-of-use ids a grant can name, as the contract numbers them."""

    TREATMENT = 1
    PAYMENT = 2
    OPERATIONS = 3
    RESEARCH = 4
    EMERGENCY = 5


MAX_PURPOSE = max(Purpose)
"""The largest purpose id the contract accepts."""


class AccessPurpose(enum.IntEnum):
    """The purpose of a read: a grantable ``Purpose``, or PATIENT_REQUEST for a patient
    reading their own records (no grant needed; never on chain)."""

    TREATMENT = Purpose.TREATMENT.value
    PAYMENT = Purpose.PAYMENT.value
    OPERATIONS = Purpose.OPERATIONS.value
    RESEARCH = Purpose.RESEARCH.value
    EMERGENCY = Purpose.EMERGENCY.value
    PATIENT_REQUEST = 6


class Role(enum.StrEnum):
    """Role names carried by access tokens (the JWT ``role`` claim identity issues)."""

    PATIENT = "patient"
    PROVIDER = "provider"
    AUDITOR = "auditor"
    ADMIN = "admin"
    SERVICE = "service"
