"""Use cases of audit-analytics: search, verification, reconciliation, detection, review, reports.

Findings, reviews and reports are events themselves (``ehr.audit.anomaly_detected.v1``,
``ehr.audit.anomaly_reviewed.v1``, ``ehr.audit.break_glass_reviewed.v1``,
``ehr.audit.report_generated.v1``), queued in the outbox with the state change.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ehr.audit.v1 import audit_pb2
from ehr.vocabulary.v1 import vocabulary_pb2
from ehr_protocol.errors import CheckpointNotFound, ProofInvalid
from ehr_protocol.verify import verify_event

from services.platform.events.envelope import Actor, encode, new_envelope, partition_key, topic_of
from services.platform.events.vocabulary import ROLE_CODES

from . import reports
from .anomalies import Candidate, Detector
from .errors import EventNotFound, FindingNotFound, InvalidQuery
from .integrity import (
    IntegrityService,
    Offsets,
    Reconciliation,
    Verification,
    verify_consistency_of,
)
from .model import AuditRepository, Finding, Page, SearchQuery, StoredEvent
from .ports import CachedCheckpointReader
from .provenance import LAST_REPORT_CHECKPOINT, SERVICE_ACCOUNT

SOURCE = SERVICE_ACCOUNT
DISPOSITIONS = ("justified", "false_positive", "violation_confirmed", "escalated", "needs_training")
MAX_PAGE = 500
SEVERITY = {
    "low": audit_pb2.SEVERITY_LOW,
    "medium": audit_pb2.SEVERITY_MEDIUM,
    "high": audit_pb2.SEVERITY_HIGH,
}
DISPOSITION_CODES = {
    "justified": audit_pb2.DISPOSITION_JUSTIFIED,
    "false_positive": audit_pb2.DISPOSITION_FALSE_POSITIVE,
    "violation_confirmed": audit_pb2.DISPOSITION_VIOLATION_CONFIRMED,
    "escalated": audit_pb2.DISPOSITION_ESCALATED,
    "needs_training": audit_pb2.DISPOSITION_NEEDS_TRAINING,
}

Outgoing = tuple[str, str, bytes]


def _outgoing(payload: Any, actor_id: str, role: str, at: datetime | None = None) -> Outgoing:
    """The event of a state change; ``at`` is the instant the store keeps with that change,
    so reconciliation can compare the two."""
    envelope = new_envelope(
        payload,
        source=SOURCE,
        actor=Actor(id=actor_id, role=ROLE_CODES.get(role, vocabulary_pb2.ROLE_SERVICE)),
        time=at,
    )
    return topic_of(envelope).name, partition_key(envelope), encode(envelope)


class AuditService:
    def __init__(
        self,
        repository: AuditRepository,
        integrity: IntegrityService,
        detector: Detector,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.repository = repository
        self.integrity = integrity
        self.detector = detector
        self.clock = clock

    # -- the log --------------------------------------------------------------------

    def search(self, query: SearchQuery) -> Page:
        if not 1 <= query.limit <= MAX_PAGE:
            raise InvalidQuery(f"limit must be in 1..{MAX_PAGE}")
        if query.since and query.until and query.since >= query.until:
            raise InvalidQuery("since must be before until")
        if query.after_sequence < 0:
            raise InvalidQuery("the cursor must be >= 0")
        return self.repository.search(query)

    def event(self, event_id: str) -> StoredEvent:
        found = self.repository.get(event_id)
        if found is None:
            raise EventNotFound(f"no event {event_id} in the audit store")
        return found

    def verify(self, event_id: str) -> Verification:
        return self.integrity.verify(event_id)

    def reconcile(
        self,
        actor_id: str = SOURCE,
        end_offsets: Offsets | None = None,
        logged_offsets: Offsets | None = None,
        consumed_offsets: Offsets | None = None,
    ) -> Reconciliation:
        """Reconciles, and records every discrepancy as an ``integrity_failure`` finding.

        ``end_offsets`` (the bus's high watermarks) tell what is not consumed yet from
        what is missing; ``logged_offsets`` (the relay's committed offsets) tell what the
        relay has not logged yet from what was inserted; ``consumed_offsets`` (the store's
        own committed offsets) tell a deleted tail from lag.
        """
        result = self.integrity.reconcile(
            end_offsets, logged_offsets=logged_offsets, consumed_offsets=consumed_offsets
        )
        candidates = [
            Candidate(
                "integrity_failure",
                "high",
                "",
                "",
                (d.event_id,) if d.event_id else (),
                1.0,
                f"{d.kind}: {d.detail} {d.position}"
                + (f" leaf {d.leaf_index}" if d.leaf_index is not None else ""),
            )
            for d in result.discrepancies
        ]
        self._record(candidates)
        return result

    # -- anomalies -----------------------------------------------------------------

    def detect(self) -> list[Finding]:
        """Runs every rule over the store; returns (and emits) only new findings."""
        records = [e.record for e in self.repository.all_events()]
        reviewed = set(self.repository.break_glass_reviews())
        return self._record(self.detector.detect(records, self.clock(), reviewed))

    def _record(self, candidates: list[Candidate]) -> list[Finding]:
        known = {f.finding_id for f in self.repository.findings()}
        now = self.clock()
        new: dict[str, Finding] = {}
        outgoing: list[Outgoing] = []
        for c in candidates:
            if c.finding_id in known or c.finding_id in new:
                continue
            new[c.finding_id] = Finding(
                c.finding_id,
                c.rule,
                c.severity,
                c.patient_id,
                c.account_id,
                c.event_ids,
                c.score,
                c.explanation,
                now,
            )
            payload = audit_pb2.AnomalyDetected(
                anomaly_id=c.finding_id,
                rule=c.rule,
                severity=SEVERITY[c.severity],
                patient_id=c.patient_id,
                account_id=c.account_id or SOURCE,
                event_ids=list(c.event_ids),
                score=c.score,
                explanation=c.explanation,
            )
            outgoing.append(_outgoing(payload, SOURCE, "service", now))
        if new:
            self.repository.add_findings(list(new.values()), outgoing)
        return list(new.values())

    def findings(self, rule: str | None = None, reviewed: bool | None = None) -> list[Finding]:
        return self.repository.findings(rule, reviewed)

    def finding(self, finding_id: str) -> Finding:
        found = self.repository.finding(finding_id)
        if found is None:
            raise FindingNotFound(f"no finding {finding_id}")
        return found

    def review(
        self, finding_id: str, disposition: str, reviewer: str, role: str = "auditor"
    ) -> Finding:
        """Records the disposition; the review is an ``ehr.audit.anomaly_reviewed.v1`` event
        queued in the same transaction."""
        if disposition not in DISPOSITIONS:
            raise InvalidQuery(f"disposition must be one of {', '.join(DISPOSITIONS)}")
        finding = self.finding(finding_id)
        payload = audit_pb2.AnomalyReviewed(
            anomaly_id=finding.finding_id,
            rule=finding.rule,
            patient_id=finding.patient_id,
            account_id=finding.account_id or SOURCE,
            disposition=DISPOSITION_CODES[disposition],
            reviewer_id=reviewer,
        )
        at = self.clock()
        return self.repository.review(
            finding_id, disposition, reviewer, at, [_outgoing(payload, reviewer, role, at)]
        )

    def review_break_glass(
        self, event_id: str, disposition: str, reviewer: str, role: str = "auditor"
    ) -> None:
        """Records the review of a break-glass access; the review is an
        ``ehr.audit.break_glass_reviewed.v1`` event queued in the same transaction."""
        if disposition not in DISPOSITIONS:
            raise InvalidQuery(f"disposition must be one of {', '.join(DISPOSITIONS)}")
        stored = self.event(event_id)
        if stored.record.subtype != "break_glass_used":
            raise InvalidQuery(f"event {event_id} is not a break-glass access")
        bg = str(stored.record.extra.get("break_glass_id") or event_id)
        payload = audit_pb2.BreakGlassReviewed(
            break_glass_id=bg,
            event_id=event_id,
            patient_id=stored.record.patient_id,
            reader_id=stored.record.actor_id,
            disposition=DISPOSITION_CODES[disposition],
            reviewer_id=reviewer,
        )
        at = self.clock()
        self.repository.review_break_glass(
            bg, disposition, reviewer, at, [_outgoing(payload, reviewer, role, at)]
        )

    def review_events(self) -> dict[tuple[str, str], str]:
        """(``anomaly`` | ``break_glass``, id) -> the id of the latest review event the store
        consumed for it: the review as it is on the log (and anchored)."""
        found: dict[tuple[str, str], str] = {}
        for event_type, kind, key in (
            ("ehr.audit.anomaly_reviewed.v1", "anomaly", None),
            ("ehr.audit.break_glass_reviewed.v1", "break_glass", "break_glass_id"),
        ):
            after = 0
            while True:
                page = self.repository.search(
                    SearchQuery(type=event_type, limit=MAX_PAGE, after_sequence=after)
                )
                for e in page.items:
                    subject = str(e.record.extra.get(key)) if key else e.record.entities[0].id
                    found[(kind, subject)] = e.record.event_id
                if page.next_cursor is None:
                    break
                after = page.next_cursor
        return found

    # -- reports -------------------------------------------------------------------

    def _attestation(self, events: list[StoredEvent]) -> dict[str, Any]:
        """The checkpoint used, its anchor transaction, and whether every event verified."""
        checkpoint = self.integrity.proofs.latest_checkpoint()
        reader = CachedCheckpointReader(self.integrity.reader)
        verified = failed = pending = 0
        for event in events:
            if event.position.topic not in self.integrity.anchored_topics:
                continue
            proof = event.proof
            if proof is None:
                try:
                    proof = self.integrity.proofs.inclusion(event.record.event_id)
                except Exception:  # not yet anchored, or relay unreachable: pending
                    proof = None
            if proof is None:
                pending += 1
                continue
            try:
                verify_event(event.raw, proof, reader)
                verified += 1
            except (ProofInvalid, KeyError, ValueError):
                failed += 1
        chain_ok = False
        previous_size: int | None = None
        consistent: bool | None = None
        if checkpoint is not None:
            try:
                on_chain = reader.checkpoint_at(int(checkpoint["index"]))
            except CheckpointNotFound:  # the relay's checkpoint is not on this chain
                on_chain = None
            chain_ok = on_chain is not None and on_chain.root.hex() == checkpoint["root"]
            stored = self.repository.get_state(LAST_REPORT_CHECKPOINT)
            if stored is not None:
                previous = json.loads(stored)
                previous_size = int(previous["tree_size"])
                if previous_size <= int(checkpoint["tree_size"]):
                    consistent = verify_consistency_of(
                        self.integrity.proofs, reader, previous, checkpoint
                    )
                else:
                    consistent = False
            if chain_ok:
                self.repository.set_state(LAST_REPORT_CHECKPOINT, json.dumps(checkpoint))
        return {
            "previous_report_tree_size": previous_size,
            "consistent_with_previous_report": consistent,
            "checkpoint_index": checkpoint["index"] if checkpoint else None,
            "checkpoint_tree_size": checkpoint["tree_size"] if checkpoint else 0,
            "checkpoint_root": checkpoint["root"] if checkpoint else "",
            "anchor_transaction": checkpoint["tx_hash"] if checkpoint else "",
            "anchor_block": checkpoint["block_number"] if checkpoint else None,
            "checkpoint_matches_chain": chain_ok,
            "events_verified": verified,
            "events_failed": failed,
            "events_pending": pending,
            "verification_result": "verified"
            if chain_ok and failed == 0 and pending == 0 and consistent is not False
            else (
                "failed"
                if failed or consistent is False or (checkpoint and not chain_ok)
                else "partial"
            ),
        }

    def _emit_report(
        self,
        report: dict[str, Any],
        kind: int,
        period: tuple[datetime, datetime],
        actor_id: str,
        role: str,
        patient_id: str = "",
    ) -> None:
        attestation = report["attestation"]
        document = json.dumps(report, sort_keys=True).encode()
        payload = audit_pb2.ReportGenerated(
            report_id=report["report_id"],
            kind=kind,  # type: ignore[arg-type]
            patient_id=patient_id,
            auditor_id=actor_id,
            report_sha256=hashlib.sha256(document).digest(),
            checkpoint_tree_size=int(attestation["checkpoint_tree_size"] or 0),
            checkpoint_root_hash=bytes.fromhex(attestation["checkpoint_root"] or ""),
            anchor_transaction_hash=attestation["anchor_transaction"] or "",
            verified=attestation["verification_result"] == "verified",
        )
        payload.period_start.FromDatetime(period[0])
        payload.period_end.FromDatetime(period[1])
        self.repository.queue([_outgoing(payload, actor_id, role)])

    @staticmethod
    def _period(since: datetime, until: datetime) -> tuple[datetime, datetime]:
        if since.tzinfo is None or until.tzinfo is None:
            raise InvalidQuery("period bounds must carry a time zone")
        if since >= until:
            raise InvalidQuery("the period must start before it ends")
        return since.astimezone(UTC), until.astimezone(UTC)

    def compliance_report(
        self, since: datetime, until: datetime, auditor_id: str, role: str = "auditor"
    ) -> dict[str, Any]:
        period = self._period(since, until)
        events = self.repository.events_between(*period)
        records = [e.record for e in events]
        findings = [f for f in self.repository.findings() if period[0] <= f.detected_at < period[1]]
        report = reports.compliance_report(
            report_id=str(uuid.uuid4()),
            period=period,
            generated_at=self.clock(),
            generated_by=auditor_id,
            records=records,
            findings=findings,
            reviews=self.repository.break_glass_reviews(),
            review_events=self.review_events(),
            attestation=self._attestation(events),
        )
        self._emit_report(report, audit_pb2.REPORT_KIND_AUDIT_CONTROLS, period, auditor_id, role)
        return report

    def patient_access_report(
        self, patient_id: str, since: datetime, until: datetime, requester_id: str, role: str
    ) -> dict[str, Any]:
        period = self._period(since, until)
        events = [
            e
            for e in self.repository.events_of_patient(patient_id, *period)
            if e.record.subtype in reports.ACCESS_SUBTYPES
        ]
        report = reports.patient_access_report(
            report_id=str(uuid.uuid4()),
            patient_id=patient_id,
            period=period,
            generated_at=self.clock(),
            records=[e.record for e in events],
            attestation=self._attestation(events),
        )
        self._emit_report(
            report, audit_pb2.REPORT_KIND_ACCESS_REPORT, period, requester_id, role, patient_id
        )
        return report
