"""The audit record (shaped like a FHIR R4 AuditEvent) and the audit store port.

An audit record is derived from one event's exact bus bytes. The bytes, their
SHA-256 and the bus position are kept with it; the inclusion proof is added
once the relay has anchored a checkpoint covering the event.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Agent:
    """A participant: who, in which role, whether they asked for it, from where, allowed by what."""

    who: str
    role: str
    requestor: bool
    network_address: str = ""
    authorisation: str = ""
    """The token id, grant id or break-glass id that allowed the action."""


@dataclass(frozen=True, slots=True)
class Entity:
    """What the event is about: a record (and version), a grant, a checkpoint, ..."""

    kind: str
    id: str
    version: int = 0
    category: str = ""


@dataclass(frozen=True, slots=True)
class BusPosition:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One event as an AuditEvent: type/subtype, action, outcome, purpose, agents, entities."""

    event_id: str
    type: str
    """The envelope type, e.g. ``ehr.access.record_read.v1``."""
    subtype: str
    """The short name, e.g. ``record_read``."""
    action: str
    """C, R, U, D or E (execute)."""
    outcome: str
    """success, minor_failure, serious_failure, major_failure."""
    recorded_at: datetime
    source: str
    agents: tuple[Agent, ...]
    patient_id: str = ""
    entities: tuple[Entity, ...] = ()
    purpose_of_use: str = ""
    justification: str = ""
    reason: str = ""
    """Why it failed (denial or login failure reason), when it did."""
    correlation_id: str = ""
    event_hash: bytes = b""
    position: BusPosition | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Non-clinical details of the payload (e.g. grant scope, anomaly rule)."""

    @property
    def actor_id(self) -> str:
        return self.agents[0].who if self.agents else ""

    @property
    def actor_role(self) -> str:
        return self.agents[0].role if self.agents else ""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An audit record with the exact bytes it came from and, once anchored, its proof."""

    sequence: int
    """The store's own row number (insertion order)."""
    record: AuditRecord
    raw: bytes
    event_hash: bytes
    position: BusPosition
    proof: dict[str, Any] | None = None
    columns: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """The stored columns derived from ``raw`` (as the store reads them), which
    reconciliation compares with ``AuditRepository.derived_columns`` of the bytes."""


@dataclass(frozen=True, slots=True)
class SearchQuery:
    patient_id: str | None = None
    actor_id: str | None = None
    type: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_sequence: int = 0
    """Pagination cursor: the last sequence of the previous page."""
    limit: int = 50


@dataclass(frozen=True, slots=True)
class Page:
    items: list[StoredEvent]
    next_cursor: int | None


@dataclass(frozen=True, slots=True)
class PositionRow:
    """One consumed bus position and the event hash it carried (duplicates included)."""

    position: BusPosition
    event_hash: bytes
    kind: str
    """``event`` (first copy), ``duplicate`` (same bytes again) or ``undecodable``."""


@dataclass(frozen=True, slots=True)
class Finding:
    """An anomaly finding with its evidence and, once reviewed, its disposition."""

    finding_id: str
    rule: str
    severity: str
    patient_id: str
    account_id: str
    event_ids: tuple[str, ...]
    score: float
    explanation: str
    detected_at: datetime
    disposition: str = ""
    reviewed_by: str = ""
    reviewed_at: datetime | None = None


class AuditRepository(ABC):
    """The audit store: events with bytes, hash, position and proof; positions; findings."""

    @abstractmethod
    def create_schema(self) -> None: ...

    @abstractmethod
    def ping(self) -> None: ...

    @abstractmethod
    def get(self, event_id: str) -> StoredEvent | None: ...

    @abstractmethod
    def search(self, query: SearchQuery) -> Page: ...

    @abstractmethod
    def all_events(self) -> list[StoredEvent]:
        """Every stored event in store order."""

    def iter_events(self, batch: int = 5000) -> Iterator[StoredEvent]:
        """Every stored event in store order; adapters read it in batches (bounded memory)."""
        return iter(self.all_events())

    @abstractmethod
    def derived_columns(self, record: AuditRecord, raw: bytes) -> dict[str, Any]:
        """The columns the store writes for ``record`` decoded from ``raw`` (as it reads them)."""

    @abstractmethod
    def queued_events(self) -> list[bytes]:
        """The bytes of every event this service queued in its outbox (published or not)."""

    @abstractmethod
    def state(self) -> dict[str, str]:
        """Every value kept between runs, by key."""

    @abstractmethod
    def positions(self) -> list[PositionRow]:
        """Every consumed bus position."""

    @abstractmethod
    def without_proof(self, limit: int, topics: Collection[str] | None = None) -> list[StoredEvent]:
        """Events (on ``topics``, when given) whose proof is not stored yet."""

    @abstractmethod
    def set_proof(self, event_id: str, proof: dict[str, Any]) -> None: ...

    @abstractmethod
    def set_proofs(self, proofs: Mapping[str, dict[str, Any]]) -> None:
        """Stores many proofs (event id -> proof) in one transaction."""

    @abstractmethod
    def events_between(self, since: datetime, until: datetime) -> list[StoredEvent]:
        """Events recorded in ``[since, until)`` in time order."""

    @abstractmethod
    def events_of_patient(
        self, patient_id: str, since: datetime, until: datetime
    ) -> list[StoredEvent]:
        """One patient's events recorded in ``[since, until)`` in time order."""

    @abstractmethod
    def add_findings(
        self, findings: Sequence[Finding], outgoing: Sequence[tuple[str, str, bytes]]
    ) -> None:
        """Stores new findings and queues their events (topic, key, bytes) in one transaction."""

    @abstractmethod
    def findings(self, rule: str | None = None, reviewed: bool | None = None) -> list[Finding]: ...

    @abstractmethod
    def finding(self, finding_id: str) -> Finding | None: ...

    @abstractmethod
    def review(
        self,
        finding_id: str,
        disposition: str,
        reviewer: str,
        at: datetime,
        outgoing: Sequence[tuple[str, str, bytes]] = (),
    ) -> Finding:
        """Records a finding's review and queues its events in one transaction."""

    @abstractmethod
    def queue(self, outgoing: Sequence[tuple[str, str, bytes]]) -> None:
        """Queues events in the outbox (e.g. a report generated)."""

    @abstractmethod
    def review_break_glass(
        self,
        break_glass_id: str,
        disposition: str,
        reviewer: str,
        at: datetime,
        outgoing: Sequence[tuple[str, str, bytes]] = (),
    ) -> None:
        """Records a break-glass review and queues its events in one transaction."""

    @abstractmethod
    def break_glass_reviews(self) -> dict[str, tuple[str, str, datetime]]:
        """Break-glass id -> (disposition, reviewer, when)."""

    @abstractmethod
    def get_state(self, key: str) -> str | None:
        """A value kept between runs (e.g. the checkpoint of the last report)."""

    @abstractmethod
    def set_state(self, key: str, value: str) -> None: ...
