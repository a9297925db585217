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


DomainEvent = VersionStored | RecordWasRead | ReadWasDenied | BreakGlassDeclared
