"""The ports the consent use cases need; adapters implement them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from services.consent.domain.events import ConsentRejected, DomainEvent
from services.consent.domain.model import Account, ChainPosition, Grant, Signed


@dataclass(frozen=True, slots=True)
class ChainChange:
    """One ``ConsentGranted`` or ``ConsentRevoked`` log of the registry.

    For a grant ``categories``/``expires_at`` are what was granted; for a revocation
    ``categories`` is what was revoked and ``remaining`` what is left.
    """

    kind: Literal["granted", "revoked"]
    patient: str
    grantee: str
    purpose: int
    categories: int
    nonce: int
    position: ChainPosition
    expires_at: int = 0
    remaining: int = 0


@dataclass(frozen=True, slots=True)
class UnreadableLog:
    """A log at the registry's address that could not be decoded into a ``ChainChange``."""

    position: ChainPosition
    reason: str


@dataclass(frozen=True, slots=True)
class QuarantinedLog:
    """A registry log the projection could not apply, kept for an operator."""

    chain_id: int
    contract_address: str
    block_number: int
    tx_hash: str
    log_index: int
    kind: str
    reason: str
    quarantined_at: float


Projector = Callable[[Grant | None], tuple[Grant, list[DomainEvent]]]
"""Given the current row (or None), the new row and the events to publish with it."""


class ConsentRepository(Protocol):
    """The projection of the registry, the accounts it names, and the outbox."""

    def account(self, account_id: str) -> Account | None: ...

    def account_by_address(self, address: str) -> Account | None: ...

    def save_account(self, account: Account) -> None: ...

    def grant(self, patient: str, grantee: str, purpose: int) -> Grant | None: ...

    def grants_of_patient(self, patient: str) -> list[Grant]: ...

    def grants_of_grantee(self, grantee: str) -> list[Grant]: ...

    def apply(
        self, patient: str, grantee: str, purpose: int, position: ChainPosition, project: Projector
    ) -> bool:
        """In one transaction: skip if the log at ``position`` was applied already;
        otherwise record it, and when it is newer than the row's own position, store
        ``project(row)`` and its events in the outbox. Returns whether it was new."""
        ...

    def unexpired_due(self, now: float, limit: int) -> list[Grant]:
        """Rows whose expiry has passed and whose expiry was not yet announced."""
        ...

    def mark_expired(self, grant: Grant, events: Sequence[DomainEvent]) -> bool:
        """Marks the row's expiry announced (if it still is that grant) with its events."""
        ...

    def record_rejection(self, rejection: ConsentRejected) -> None: ...

    def quarantine(self, log: QuarantinedLog) -> bool:
        """Keeps ``log`` out of the projection, listed for an operator; returns whether it
        was new (a log is quarantined once)."""
        ...

    def quarantined(self, limit: int) -> list[QuarantinedLog]:
        """Quarantined logs in chain order (at most ``limit``)."""
        ...

    def quarantine_count(self) -> int: ...

    def get_state(self, name: str) -> str | None: ...

    def set_state(self, name: str, value: str) -> None: ...


class ConsentRegistryClient(Protocol):
    """The ``ConsentRegistry`` contract, reached through the chain port."""

    @property
    def chain_id(self) -> int: ...

    @property
    def address(self) -> str: ...

    def next_nonce(self, patient: str) -> int: ...

    def relay(self, signed: Signed) -> ChainChange:
        """Sends the message with the relay's account and waits for a successful
        receipt; raises ``RejectedByChain`` or ``RegistryUnavailable``."""
        ...

    def is_authorised(self, patient: str, grantee: str, category: int, purpose: int) -> bool: ...

    def latest_block(self) -> int: ...

    def changes(self, from_block: int, to_block: int) -> list[ChainChange | UnreadableLog]:
        """Grant and revoke logs in the block range, in chain order; a log that cannot be
        decoded comes as an ``UnreadableLog``."""
        ...


class SignatureVerifier(Protocol):
    """EIP-712 digest and signer recovery, for the registry's domain."""

    def digest(self, signed: Signed, chain_id: int, contract: str) -> bytes: ...

    def signer(self, signed: Signed, chain_id: int, contract: str) -> str | None:
        """The checksummed address that signed, or None for a malformed signature."""
        ...


Clock = Callable[[], float]
