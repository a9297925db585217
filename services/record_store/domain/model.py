"""Records, versions, wrapped keys and break-glass grants (pure Python).

A record belongs to one patient and one category; each version has its own data key,
ciphertext and author signature (provenance). The service stores only ciphertext, its
hashes and data keys wrapped for named holders; it never sees plaintext.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ehr_protocol.crypto import WRAPPED_KEY_BYTES
from ehr_protocol.records import ESCROW_HOLDER
from ehr_protocol.vocabulary import AccessPurpose as Purpose
from ehr_protocol.vocabulary import Category, Role

__all__ = ["ESCROW_HOLDER", "WRAPPED_KEY_BYTES", "Category", "Purpose", "Role"]


class Basis(enum.IntEnum):
    """What allowed a read (``ehr.access.v1.AccessBasis``)."""

    OWNER = 1
    CONSENT = 2
    BREAK_GLASS = 3


class Denial(enum.IntEnum):
    """Why a read was refused (``ehr.access.v1.DenialReason``)."""

    NO_GRANT = 1
    GRANT_EXPIRED = 2
    GRANT_REVOKED = 3
    PROVIDER_NOT_VERIFIED = 6
    ROLE_NOT_ALLOWED = 8
    KEY_NOT_WRAPPED = 9
    RECORD_SHREDDED = 10


@dataclass(frozen=True, slots=True)
class Account:
    """What the record store knows of an account (from identity's events)."""

    account_id: str
    role: str
    address: str
    encryption_key_sha256: bytes


@dataclass(frozen=True, slots=True)
class ConsentDecision:
    """Consent's answer for one reader, category and purpose now: the authorising grant
    (when ``reason`` is ``granted``), else why not (``no_grant``, ``revoked``,
    ``expired``)."""

    grant_id: str | None
    reason: str = "no_grant"

    @property
    def authorised(self) -> bool:
        return self.grant_id is not None


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """What identity says of an account now (asked when the record store has not yet
    read the account's registration from identity's events)."""

    account_id: str
    role: str
    address: str
    provider_status: str | None


@dataclass(frozen=True, slots=True)
class AuthorisedGrantee:
    """A grant that authorises a category of a patient's records now (from consent)."""

    grantee_id: str
    grant_id: str
    purpose: int


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """An account a new version's data key should be wrapped for, and why."""

    account_id: str
    encryption_key_sha256: bytes
    grant_ids: tuple[str, ...] = ()
    purposes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class WrappedKey:
    holder_id: str
    wrapped: bytes
    expires_at: float | None = None  # set for break-glass copies


@dataclass(frozen=True, slots=True)
class Provenance:
    """Who wrote a version and their signature over its content hash (EIP-191)."""

    author_id: str
    author_address: str
    signed_at: str  # ISO 8601, part of the signed text
    signature: bytes


@dataclass(frozen=True, slots=True)
class VersionUpload:
    """One version as the client sends it: ciphertext, hashes, wrapped keys, provenance."""

    record_id: str
    version: int
    patient_id: str
    category: Category
    resource_type: str
    content_sha256: bytes
    ciphertext: bytes
    ciphertext_sha256: bytes
    plaintext_size: int
    wrapped_keys: tuple[WrappedKey, ...]
    provenance: Provenance


@dataclass(frozen=True, slots=True)
class VersionMeta:
    record_id: str
    version: int
    resource_type: str
    content_sha256: bytes
    ciphertext_sha256: bytes
    ciphertext_size: int
    plaintext_size: int
    provenance: Provenance
    created_at: float
    key_generation: int
    shredded: bool


@dataclass(frozen=True, slots=True)
class RecordMeta:
    record_id: str
    patient_id: str
    category: Category
    resource_type: str
    created_by: str
    created_at: float
    latest_version: int
    shredded_at: float | None


@dataclass(frozen=True, slots=True)
class ReadResult:
    record: RecordMeta
    version: VersionMeta
    ciphertext: bytes
    wrapped_key: bytes
    basis: Basis


@dataclass(frozen=True, slots=True)
class BreakGlass:
    break_glass_id: str
    provider_id: str
    patient_id: str
    justification: str
    categories: tuple[Category, ...]
    created_at: float
    expires_at: float
    keys_released: int
