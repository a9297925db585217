"""The ports the record store's use cases need; adapters implement them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from services.record_store.domain.events import DomainEvent
from services.record_store.domain.model import (
    Account,
    AuthorisedGrantee,
    BreakGlass,
    Category,
    ConsentDecision,
    DirectoryEntry,
    RecordMeta,
    VersionMeta,
    VersionUpload,
    WrappedKey,
)


class RecordRepository(Protocol):
    """Records, versions, wrapped keys, break-glass grants and the outbox, in one store.

    Every write method stores its events in the outbox in the same transaction."""

    def account(self, account_id: str) -> Account | None: ...

    def save_account(self, account: Account) -> None: ...

    def record(self, record_id: str) -> RecordMeta | None: ...

    def records_of_patient(self, patient_id: str) -> list[RecordMeta]: ...

    def versions(self, record_id: str) -> list[VersionMeta]: ...

    def version(self, record_id: str, version: int) -> VersionMeta | None: ...

    def ciphertext(self, record_id: str, version: int) -> bytes | None: ...

    def wrapped_key(
        self, record_id: str, version: int, holder_id: str, now: float
    ) -> WrappedKey | None:
        """The holder's unexpired wrapped key of a version, if any."""
        ...

    def add_version(self, upload: VersionUpload, now: float, events: Sequence[DomainEvent]) -> None:
        """Stores a new record (version 1) or the next version; raises ``RecordExists``
        when the record (or that version) exists already."""
        ...

    def put_keys(
        self, keys: Sequence[tuple[str, int, WrappedKey]], events: Sequence[DomainEvent]
    ) -> int:
        """Adds or replaces wrapped keys ``(record_id, version, key)``; returns the count."""
        ...

    def delete_keys(
        self,
        patient_id: str,
        holder_id: str,
        categories: int,
        announce: Callable[[int], Sequence[DomainEvent]],
    ) -> int:
        """Drops every key of ``holder_id`` on the patient's records in ``categories``;
        stores ``announce(deleted)`` in the same transaction."""
        ...

    def rotate(
        self,
        record_id: str,
        version: int,
        ciphertext: bytes,
        ciphertext_sha256: bytes,
        keys: Sequence[WrappedKey],
        announce: Callable[[int], Sequence[DomainEvent]],
    ) -> int:
        """Replaces a version's ciphertext and every wrapped key; returns the generation;
        stores ``announce(generation)`` in the same transaction."""
        ...

    def shred(
        self, record_id: str, now: float, announce: Callable[[int, int], Sequence[DomainEvent]]
    ) -> None:
        """Destroys every ciphertext and wrapped key of the record; metadata stays; stores
        ``announce(versions, keys deleted)`` in the same transaction."""
        ...

    def escrow_keys(
        self, patient_id: str, categories: Sequence[Category]
    ) -> list[tuple[str, int, bytes]]:
        """``(record_id, version, escrow-wrapped key)`` of the patient's live versions."""
        ...

    def open_break_glass(
        self,
        grant: BreakGlass,
        keys: Sequence[tuple[str, int, WrappedKey]],
        events: Sequence[DomainEvent],
    ) -> None: ...

    def active_break_glass(
        self, provider_id: str, patient_id: str, now: float
    ) -> BreakGlass | None: ...

    def record_events(self, events: Sequence[DomainEvent]) -> None:
        """Only events (read and denied-read events)."""
        ...


class ConsentCheck(Protocol):
    """The consent service's answers (asked on every call, never cached)."""

    def decision(
        self, patient_id: str, grantee_id: str, category_bit: int, purpose: int
    ) -> ConsentDecision:
        """Whether ``grantee`` may read now: the authorising grant, else why not."""
        ...

    def authorised_grantees(self, patient_id: str, category_bit: int) -> list[AuthorisedGrantee]:
        """Every grant that authorises ``category_bit`` of the patient's records now."""
        ...


class ProviderVerification(Protocol):
    """``ProviderRegistry.isVerified`` on the chain."""

    def is_verified(self, address: str) -> bool: ...


class AccountDirectory(Protocol):
    """Identity's own answer about an account (``GET /accounts/{id}``), asked only when
    the account is missing from the record store's projection of identity's events."""

    def entry(self, account_id: str) -> DirectoryEntry | None:
        """The account as identity knows it now, or None when identity has no such
        account; raises ``DependencyUnavailable`` when identity cannot answer."""
        ...


class ProvenanceVerifier(Protocol):
    """Who signed a version's provenance statement (EIP-191)."""

    def signer(self, upload: VersionUpload) -> str | None:
        """The checksummed signing address, or None for a malformed signature."""
        ...


class EscrowKey(Protocol):
    """The service's break-glass escrow key (X25519)."""

    @property
    def public_key_hex(self) -> str: ...

    def opens(self, wrapped: bytes, record_id: str, version: int) -> bool:
        """Whether ``wrapped`` is a data key wrapped for the escrow key and this version."""
        ...

    def rewrap(self, wrapped: bytes, record_id: str, version: int, recipient_hex: str) -> bytes:
        """Unwraps the escrow copy and wraps the data key for ``recipient_hex``."""
        ...


Clock = Callable[[], float]
