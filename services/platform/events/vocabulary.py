"""The vocabulary's codes against the ConsentRegistry contract's encodings: one mapping.

The contract scopes a grant by a ``uint32`` bitmask of record categories and one
``uint8`` purpose id (``contracts/README.md``). ``ehr.vocabulary.v1`` is numbered so
that both read the same everywhere:

- ``RecordCategory`` code ``n`` is bit ``1 << (n - 1)`` of the mask: LABORATORY = 1 is
  bit 1, IMAGING = 2 is bit 2, MEDICATION = 3 is bit 4, NOTES = 4 is bit 8,
  MENTAL_HEALTH = 5 is bit 16.
- ``PurposeOfUse`` codes 1 to 5 are the contract's purpose ids (TREATMENT = 1,
  PAYMENT = 2, OPERATIONS = 3, RESEARCH = 4, EMERGENCY = 5). PATIENT_REQUEST = 6 is
  for access events only: a patient reading their own records needs no grant.

Roles are the names in the access token's ``role`` claim (identity issues them):
``ROLE_CODES`` maps each to its ``Role`` code, ``ROLE_NAMES`` back.

The categories, purposes and roles themselves are ``ehr_protocol.vocabulary``; every
service that turns a mask, a purpose id or a role name into vocabulary codes
(or back) uses what is here; ``tests/platform/events/test_vocabulary.py`` holds the
table to the contract's constants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TypeAlias

from ehr.vocabulary.v1 import vocabulary_pb2
from ehr_protocol.vocabulary import ALL_CATEGORIES, CategoryBits

Category: TypeAlias = vocabulary_pb2.RecordCategory.ValueType
Purpose: TypeAlias = vocabulary_pb2.PurposeOfUse.ValueType
RoleCode: TypeAlias = vocabulary_pb2.Role.ValueType

ROLE_CODES: Mapping[str, RoleCode] = MappingProxyType(
    {
        "patient": vocabulary_pb2.ROLE_PATIENT,
        "provider": vocabulary_pb2.ROLE_PROVIDER,
        "auditor": vocabulary_pb2.ROLE_AUDITOR,
        "admin": vocabulary_pb2.ROLE_ADMINISTRATOR,
        "service": vocabulary_pb2.ROLE_SERVICE,
    }
)
"""Role name (the access token's ``role`` claim) -> its code in events."""

ROLE_NAMES: Mapping[RoleCode, str] = MappingProxyType({c: n for n, c in ROLE_CODES.items()})
"""Role code in events -> the role name."""

CATEGORY_BITS: Mapping[Category, int] = MappingProxyType(
    {
        vocabulary_pb2.RECORD_CATEGORY_LABORATORY: int(CategoryBits.LABS),
        vocabulary_pb2.RECORD_CATEGORY_IMAGING: int(CategoryBits.IMAGING),
        vocabulary_pb2.RECORD_CATEGORY_MEDICATION: int(CategoryBits.MEDICATIONS),
        vocabulary_pb2.RECORD_CATEGORY_NOTES: int(CategoryBits.NOTES),
        vocabulary_pb2.RECORD_CATEGORY_MENTAL_HEALTH: int(CategoryBits.MENTAL_HEALTH),
    }
)
"""Record category code -> its bit in the contract's ``categories`` mask."""

ALL_CATEGORY_BITS = ALL_CATEGORIES
"""The contract's ``ALL_CATEGORIES``: every defined bit."""

CHAIN_PURPOSES: frozenset[Purpose] = frozenset(
    {
        vocabulary_pb2.PURPOSE_OF_USE_TREATMENT,
        vocabulary_pb2.PURPOSE_OF_USE_PAYMENT,
        vocabulary_pb2.PURPOSE_OF_USE_OPERATIONS,
        vocabulary_pb2.PURPOSE_OF_USE_RESEARCH,
        vocabulary_pb2.PURPOSE_OF_USE_EMERGENCY,
    }
)
"""The purposes a grant can name; their codes are the contract's purpose ids."""


def categories_of(mask: int) -> list[Category]:
    """The category codes of a contract mask, lowest bit first.

    Raises ``ValueError`` for bits the contract does not define (0 gives ``[]``).
    """
    if mask < 0 or mask & ~ALL_CATEGORY_BITS:
        raise ValueError(f"categories mask {mask:#x} has bits outside {ALL_CATEGORY_BITS:#x}")
    return [code for code, bit in sorted(CATEGORY_BITS.items()) if mask & bit]


def mask_of(categories: Iterable[Category]) -> int:
    """The contract mask of a set of category codes (``ValueError`` for UNSPECIFIED)."""
    mask = 0
    for code in categories:
        try:
            mask |= CATEGORY_BITS[code]
        except KeyError:
            raise ValueError(f"record category {code} has no bit in the contract") from None
    return mask


def purpose_of(purpose_id: int) -> Purpose:
    """The vocabulary code of a contract purpose id (the same number)."""
    if purpose_id not in CHAIN_PURPOSES:
        raise ValueError(f"purpose id {purpose_id} is not one the contract defines")
    return vocabulary_pb2.PurposeOfUse.ValueType(purpose_id)


def purpose_id(purpose: Purpose) -> int:
    """The contract purpose id of a vocabulary code (the same number)."""
    if purpose not in CHAIN_PURPOSES:
        raise ValueError(f"purpose {purpose} cannot be granted on chain")
    return int(purpose)
