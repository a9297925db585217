"""What proves each stored field an auditor reads, beyond the raw bytes of each event.

Search, reports, accounting and detection read columns, not bytes. Reconciliation
re-derives those columns from the verified bytes and compares (``audit_events``), checks
the consumed positions against the stored events (``audit_positions``), compares the
auditors' findings and reviews with the events that record them (``audit_findings``,
``audit_break_glass_reviews``) and the kept state with the chain (``audit_state``).
Any difference is an ``altered`` discrepancy naming the table and column. What cannot
be proven is listed in ``NOT_PROVEN`` (and in every reconciliation answer).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ehr.audit.v1 import audit_pb2
from ehr_protocol.errors import CheckpointNotFound

from services.platform.events.envelope import decode, event_time, payload
from services.platform.events.errors import EventError

from .model import AuditRecord, Finding, PositionRow, StoredEvent
from .ports import CheckpointReader
from .records import disposition_name

SERVICE_ACCOUNT = "audit-analytics"
"""The account id findings without one carry in their event."""
LAST_REPORT_CHECKPOINT = "last_report_checkpoint"
ACTION_TYPES = frozenset(
    {
        "ehr.audit.anomaly_detected.v1",
        "ehr.audit.anomaly_reviewed.v1",
        "ehr.audit.break_glass_reviewed.v1",
    }
)
"""The events that record an auditor-facing finding or review."""

NOT_PROVEN: dict[str, str] = {
    "audit_events.sequence": (
        "the store's own row number (insertion order): it orders search pages and is not in"
        " the bytes; the bus order within a partition is checked through the offsets"
    ),
    "audit_positions.event_hash of undecodable positions": (
        "the store does not keep bytes it cannot decode, so their hash has nothing to be"
        " compared with"
    ),
    "audit_findings and reviews whose event is not consumed yet": (
        "compared with the event queued in this service's outbox, which is not anchored until"
        " the relay logs it"
    ),
}


@dataclass(frozen=True, slots=True)
class Discrepancy:
    kind: str
    detail: str
    event_id: str = ""
    position: str = ""
    leaf_index: int | None = None


def altered(
    table: str, column: str, detail: str, event_id: str = "", position: str = ""
) -> Discrepancy:
    """An ``altered`` discrepancy naming ``table.column``."""
    return Discrepancy("altered", f"{table}.{column}: {detail}", event_id, position)


def altered_event_columns(event: StoredEvent, derived: Mapping[str, Any]) -> list[str]:
    """The columns of ``audit_events`` whose stored value differs from the bytes'."""
    return [name for name, value in derived.items() if event.columns.get(name) != value]


@dataclass
class ActionEvents:
    """The events recording findings and reviews: consumed (verified bytes) or queued."""

    detected: dict[str, audit_pb2.AnomalyDetected] = field(default_factory=dict)
    detected_at: dict[str, datetime] = field(default_factory=dict)
    anomaly_reviews: dict[str, tuple[datetime, str, str]] = field(default_factory=dict)
    """anomaly id -> (time, disposition, reviewer) of its latest review."""
    break_glass_reviews: dict[str, tuple[datetime, str, str]] = field(default_factory=dict)

    def add(self, raw: bytes) -> None:
        try:
            envelope = decode(raw)
        except EventError:
            return
        at = event_time(envelope)
        if envelope.type == "ehr.audit.anomaly_detected.v1":
            detected = payload(envelope, audit_pb2.AnomalyDetected)
            self.detected[detected.anomaly_id] = detected
            self.detected_at[detected.anomaly_id] = at
        elif envelope.type == "ehr.audit.anomaly_reviewed.v1":
            review = payload(envelope, audit_pb2.AnomalyReviewed)
            _latest(self.anomaly_reviews, review.anomaly_id, review, at)
        elif envelope.type == "ehr.audit.break_glass_reviewed.v1":
            glass = payload(envelope, audit_pb2.BreakGlassReviewed)
            _latest(self.break_glass_reviews, glass.break_glass_id, glass, at)


def _latest(
    into: dict[str, tuple[datetime, str, str]],
    subject: str,
    review: audit_pb2.AnomalyReviewed | audit_pb2.BreakGlassReviewed,
    at: datetime,
) -> None:
    entry = (at, disposition_name(review.disposition), review.reviewer_id)
    if subject not in into or into[subject][0] <= at:
        into[subject] = entry


def check_positions(
    rows: Iterable[PositionRow],
    stored_at: Mapping[tuple[str, int, int], tuple[bytes, str]],
    inserted: set[str],
) -> list[Discrepancy]:
    """Each stored event has its own position row (kind ``event``, same hash); a position
    that says its bytes could not be decoded does not carry a stored event's hash."""
    found: list[Discrepancy] = []
    kinds: dict[tuple[str, int, int], tuple[bytes, str]] = {}
    hashes = {digest for digest, _ in stored_at.values()}
    for row in rows:
        p = row.position
        kinds[(p.topic, p.partition, p.offset)] = (row.event_hash, row.kind)
        if row.kind not in ("event", "duplicate", "undecodable"):
            found.append(altered("audit_positions", "kind", f"unknown kind {row.kind!r}"))
        elif row.kind == "undecodable" and row.event_hash in hashes:
            found.append(
                altered(
                    "audit_positions",
                    "kind",
                    "a position said undecodable carries a stored event's hash",
                    position=f"{p.topic}/{p.partition}@{p.offset}",
                )
            )
    for (topic, partition, offset), (digest, event_id) in stored_at.items():
        where = f"{topic}/{partition}@{offset}"
        held = kinds.get((topic, partition, offset))
        if held is None:
            if event_id not in inserted:
                found.append(
                    altered(
                        "audit_positions",
                        "topic/partition/offset",
                        "no consumed position holds the stored event",
                        event_id,
                        where,
                    )
                )
        elif held[0] != digest:
            found.append(
                altered(
                    "audit_positions",
                    "event_hash",
                    "the position's hash is not its event's",
                    event_id,
                    where,
                )
            )
        elif held[1] != "event":
            found.append(
                altered(
                    "audit_positions",
                    "kind",
                    f"the stored event's position says {held[1]!r}",
                    event_id,
                    where,
                )
            )
    return found


def check_findings(findings: Iterable[Finding], actions: ActionEvents) -> list[Discrepancy]:
    """Each finding is its ``anomaly_detected`` event, its review its latest
    ``anomaly_reviewed`` event; no such event lacks its finding."""
    found: list[Discrepancy] = []
    t = "audit_findings"
    seen: set[str] = set()
    for f in findings:
        seen.add(f.finding_id)
        event = actions.detected.get(f.finding_id)
        if event is None:
            found.append(altered(t, "finding_id", f"no event records finding {f.finding_id}"))
            continue
        expected: dict[str, Any] = {
            "rule": event.rule,
            "severity": audit_pb2.Severity.Name(event.severity).removeprefix("SEVERITY_").lower(),
            "patient_id": event.patient_id,
            "account_id": event.account_id,
            "event_ids": tuple(event.event_ids),
            "score": event.score,
            "explanation": event.explanation,
            "detected_us": actions.detected_at[f.finding_id],
        }
        actual: dict[str, Any] = {
            "rule": f.rule,
            "severity": f.severity,
            "patient_id": f.patient_id,
            "account_id": f.account_id or SERVICE_ACCOUNT,
            "event_ids": f.event_ids,
            "score": f.score,
            "explanation": f.explanation,
            "detected_us": f.detected_at,
        }
        review = actions.anomaly_reviews.get(f.finding_id)
        expected |= {
            "disposition": review[1] if review else "",
            "reviewed_by": review[2] if review else "",
            "reviewed_us": review[0] if review else None,
        }
        actual |= {
            "disposition": f.disposition,
            "reviewed_by": f.reviewed_by,
            "reviewed_us": f.reviewed_at,
        }
        for name, value in expected.items():
            if actual[name] != value:
                found.append(altered(t, name, f"finding {f.finding_id} differs from its event"))
    for anomaly_id in sorted(set(actions.detected) - seen):
        found.append(altered(t, "finding_id", f"finding {anomaly_id} of an event is not stored"))
    return found


def check_break_glass_reviews(
    reviews: Mapping[str, tuple[str, str, datetime]], actions: ActionEvents
) -> list[Discrepancy]:
    """Each break-glass review is the latest ``break_glass_reviewed`` event of its episode."""
    found: list[Discrepancy] = []
    t = "audit_break_glass_reviews"
    for glass_id, (disposition, reviewer, at) in sorted(reviews.items()):
        event = actions.break_glass_reviews.get(glass_id)
        if event is None:
            found.append(altered(t, "break_glass_id", f"no event records review of {glass_id}"))
            continue
        for name, actual, expected in (
            ("disposition", disposition, event[1]),
            ("reviewed_by", reviewer, event[2]),
            ("reviewed_us", at, event[0]),
        ):
            if actual != expected:
                found.append(altered(t, name, f"review of {glass_id} differs from its event"))
    for glass_id in sorted(set(actions.break_glass_reviews) - set(reviews)):
        found.append(altered(t, "break_glass_id", f"review of {glass_id} is not stored"))
    return found


def check_state(state: Mapping[str, str], reader: CheckpointReader) -> list[Discrepancy]:
    """The only kept value, the last report's checkpoint, is a checkpoint on chain."""
    found: list[Discrepancy] = []
    for key, value in sorted(state.items()):
        if key != LAST_REPORT_CHECKPOINT:
            found.append(altered("audit_state", "key", f"unknown key {key!r}"))
            continue
        try:
            document = json.loads(value)
            on_chain = reader.checkpoint_at(int(document["index"]))
            matches = on_chain.root.hex() == document["root"] and on_chain.tree_size == int(
                document["tree_size"]
            )
        except (ValueError, TypeError, KeyError, CheckpointNotFound):
            matches = False
        if not matches:
            found.append(
                altered("audit_state", "value", "the last report's checkpoint is not the chain's")
            )
    return found


def is_action(record: AuditRecord) -> bool:
    return record.type in ACTION_TYPES
