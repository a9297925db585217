"""Domain events of the record store (adapters turn them into bus messages)."""

from __future__ import annotations

from dataclasses import dataclass

from services.record_store.domain.model import Basis, Category, Denial


@dataclass(frozen=True, slots=True)
class Actor:
    account_id: str
    role: str
    token_id: str = ""
    correlation_id: str = ""


@dataclass(frozen=True, slots=True)
class VersionStored:
    """A record was created (version 1) or amended (version > 1)."""

    actor: Actor
    record_id: str
    version: int
    patient_id: str
    provider_id: str
    provider_address: str
    category: Category
    ciphertext_sha256: bytes
    ciphertext_size: int
    key_holder_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RecordWasRead:
    actor: Actor
    record_id: str
    version: int
    patient_id: str
    category: Category
    purpose: int
    basis: Basis
    break_glass_id: str = ""
    grant_id: str = ""


@dataclass(frozen=True, slots=True)
class ReadWasDenied:
    actor: Actor
    record_id: str
    patient_id: str
    category: Category | None
    purpose: int
    reason: Denial


@dataclass(frozen=True, slots=True)
class BreakGlassDeclared:
    actor: Actor
    break_glass_id: str
    patient_id: str
    categories: tuple[Category, ...]
    justification: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class KeysShared:
    """The patient wrapped existing data keys for ``holder_id`` (after a grant)."""

    actor: Actor
    patient_id: str
    holder_id: str
    record_ids: tuple[str, ...]
    key_count: int


@dataclass(frozen=True, slots=True)
class KeysRemoved:
    """The patient removed ``holder_id``'s keys in ``categories`` (after a revocation)."""

    actor: Actor
    patient_id: str
    holder_id: str
    categories: tuple[Category, ...]
    key_count: int


@dataclass(frozen=True, slots=True)
class VersionRotated:
    """A version re-encrypted under a new data key (generation ``key_generation``)."""

    actor: Actor
    record_id: str
    version: int
    patient_id: str
    key_generation: int
    ciphertext_sha256: bytes
    ciphertext_size: int
    key_holder_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RecordWasShredded:
    """Every ciphertext and wrapped key of a record destroyed."""

    actor: Actor
    record_id: str
    patient_id: str
    category: Category
    versions: int
    key_count: int


DomainEvent = (
    VersionStored
    | RecordWasRead
    | ReadWasDenied
    | BreakGlassDeclared
    | KeysShared
    | KeysRemoved
    | VersionRotated
    | RecordWasShredded
)
