"""The auditor's API and a patient's own access report.

Auditors and administrators see the log, verification, reconciliation, findings and
reports. A patient gets only ``/me/access-report`` about themselves. No route returns
health data: the events carry none.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from services.audit_analytics.domain import reports
from services.audit_analytics.domain.model import Finding, SearchQuery, StoredEvent
from services.audit_analytics.domain.ports import BusOffsets
from services.audit_analytics.domain.service import DISPOSITIONS, AuditService
from services.platform.app.auth import Principal, require_role

LOG_ROLES = ("auditor", "admin")

Auditor = Annotated[Principal, Depends(require_role(*LOG_ROLES))]
Patient = Annotated[Principal, Depends(require_role("patient"))]
EventId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Format = Literal["json", "csv", "html"]


class ReviewBody(BaseModel):
    disposition: Literal[DISPOSITIONS]  # type: ignore[valid-type]
    note: str = Field(default="", max_length=500)


def event_body(event: StoredEvent, *, with_raw: bool = False) -> dict[str, Any]:
    r = event.record
    body: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": r.event_id,
        "type": r.type,
        "subtype": r.subtype,
        "action": r.action,
        "recorded": r.recorded_at.isoformat(),
        "outcome": r.outcome,
        "reason": r.reason,
        "purpose_of_use": r.purpose_of_use,
        "justification": r.justification,
        "agents": [asdict(a) for a in r.agents],
        "source": r.source,
        "patient_id": r.patient_id,
        "entities": [asdict(e) for e in r.entities],
        "correlation_id": r.correlation_id,
        "details": r.extra,
        "integrity": {
            "sequence": event.sequence,
            "topic": event.position.topic,
            "partition": event.position.partition,
            "offset": event.position.offset,
            "event_hash": event.event_hash.hex(),
            "leaf_index": event.proof["leaf_index"] if event.proof else None,
            "checkpoint": event.proof["checkpoint"] if event.proof else None,
        },
    }
    if with_raw:
        body["raw_base64"] = base64.b64encode(event.raw).decode()
        body["proof"] = event.proof
    return body


def finding_body(f: Finding) -> dict[str, Any]:
    return {
        "finding_id": f.finding_id,
        "rule": f.rule,
        "severity": f.severity,
        "patient_id": f.patient_id,
        "account_id": f.account_id,
        "event_ids": list(f.event_ids),
        "score": f.score,
        "explanation": f.explanation,
        "detected_at": f.detected_at.isoformat(),
        "disposition": f.disposition,
        "reviewed_by": f.reviewed_by,
        "reviewed_at": f.reviewed_at.isoformat() if f.reviewed_at else None,
    }


def _render(report: dict[str, Any], fmt: Format) -> Response:
    if fmt == "csv":
        return PlainTextResponse(reports.to_csv(report), media_type="text/csv")
    if fmt == "html":
        return HTMLResponse(reports.to_html(report))
    return JSONResponse(report)


def _aware(value: datetime | None, default: datetime) -> datetime:
    if value is None:
        return default
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _blocking(
    read: BusOffsets | None,
) -> Callable[[], Mapping[tuple[str, int], int]] | None:
    """``read`` made callable from reconciliation's worker thread (on the app's loop)."""
    if read is None:
        return None
    found = read

    async def read_on_loop() -> Mapping[tuple[str, int], int]:
        return await found()

    def call() -> Mapping[tuple[str, int], int]:
        return anyio.from_thread.run(read_on_loop)

    return call


def audit_router(
    service: AuditService,
    end_offsets: BusOffsets | None = None,
    logged_offsets: BusOffsets | None = None,
    consumed_offsets: BusOffsets | None = None,
) -> APIRouter:
    """``end_offsets`` reads the bus's end offsets, ``logged_offsets`` the relay's
    committed offsets and ``consumed_offsets`` the store's own: with them, reconciliation
    tells lag (of the store, of the relay) from loss and insertion."""
    router = APIRouter(tags=["audit"])

    @router.get("/events")
    def search(
        _: Auditor,
        patient_id: Annotated[str | None, Query(max_length=200)] = None,
        actor_id: Annotated[str | None, Query(max_length=200)] = None,
        type: Annotated[str | None, Query(max_length=120)] = None,
        outcome: Annotated[str | None, Query(max_length=40)] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        """Search the log; ``next_cursor`` (when not null) gives the next page."""
        page = service.search(
            SearchQuery(
                patient_id=patient_id,
                actor_id=actor_id,
                type=type,
                outcome=outcome,
                since=_aware(since, datetime.min.replace(tzinfo=UTC)) if since else None,
                until=_aware(until, datetime.max.replace(tzinfo=UTC)) if until else None,
                after_sequence=cursor,
                limit=limit,
            )
        )
        return {"items": [event_body(e) for e in page.items], "next_cursor": page.next_cursor}

    @router.get("/events/{event_id}")
    def event(_: Auditor, event_id: EventId) -> dict[str, Any]:
        """One event with its exact bytes (base64) and stored proof."""
        return event_body(service.event(event_id), with_raw=True)

    @router.get("/events/{event_id}/verification")
    def verify(_: Auditor, event_id: EventId) -> dict[str, Any]:
        """Verifies the stored bytes against the root anchored on chain."""
        return asdict(service.verify(event_id))

    @router.post("/reconciliation")
    async def reconcile(principal: Auditor) -> dict[str, Any]:
        """Every stored event anchored with a matching hash, every bus offset accounted for;
        what the store has not consumed yet (the bus's end offsets) is pending, not missing,
        and so is what the relay has not logged yet (its committed offsets), not inserted."""
        result = await run_in_threadpool(
            service.reconcile,
            principal.account_id,
            _blocking(end_offsets),
            _blocking(logged_offsets),
            _blocking(consumed_offsets),
        )
        return result.as_dict()

    @router.post("/anomalies/detection")
    def detect(_: Auditor) -> dict[str, Any]:
        found = service.detect()
        return {"new_findings": [finding_body(f) for f in found]}

    @router.get("/anomalies")
    def anomalies(
        _: Auditor,
        rule: Annotated[str | None, Query(max_length=80)] = None,
        reviewed: bool | None = None,
    ) -> dict[str, Any]:
        return {"items": [finding_body(f) for f in service.findings(rule, reviewed)]}

    @router.get("/anomalies/{finding_id}")
    def anomaly(_: Auditor, finding_id: EventId) -> dict[str, Any]:
        """A finding with its evidence: each event and its proof."""
        f = service.finding(finding_id)
        evidence = []
        for event_id in f.event_ids:
            stored = service.repository.get(event_id)
            if stored is not None:
                evidence.append({"event": event_body(stored), "proof": stored.proof})
        return {**finding_body(f), "evidence": evidence}

    @router.post("/anomalies/{finding_id}/review")
    def review(principal: Auditor, finding_id: EventId, body: ReviewBody) -> dict[str, Any]:
        return finding_body(
            service.review(finding_id, body.disposition, principal.account_id, principal.role)
        )

    @router.post("/break-glass/{event_id}/review")
    def review_break_glass(
        principal: Auditor, event_id: EventId, body: ReviewBody
    ) -> dict[str, str]:
        service.review_break_glass(event_id, body.disposition, principal.account_id, principal.role)
        return {"event_id": event_id, "disposition": body.disposition}

    @router.get("/reports/compliance")
    def compliance(
        principal: Auditor,
        since: datetime,
        until: datetime,
        format: Format = "json",
    ) -> Response:
        """Compliance report for ``[since, until)``; generating it is itself an event."""
        report = service.compliance_report(
            _aware(since, since), _aware(until, until), principal.account_id, principal.role
        )
        return _render(report, format)

    @router.get("/reports/access/{patient_id}")
    def access_report(
        principal: Auditor,
        patient_id: EventId,
        since: datetime | None = None,
        until: datetime | None = None,
        format: Format = "json",
    ) -> Response:
        now = datetime.now(UTC)
        report = service.patient_access_report(
            patient_id,
            _aware(since, now - timedelta(days=6 * 366)),
            _aware(until, now + timedelta(seconds=1)),
            principal.account_id,
            principal.role,
        )
        return _render(report, format)

    @router.get("/me/access-report")
    def my_access_report(
        principal: Patient,
        since: datetime | None = None,
        until: datetime | None = None,
        format: Format = "json",
    ) -> Response:
        """The caller's own access report (patients only; about nobody else)."""
        now = datetime.now(UTC)
        report = service.patient_access_report(
            principal.account_id,
            _aware(since, now - timedelta(days=6 * 366)),
            _aware(until, now + timedelta(seconds=1)),
            principal.account_id,
            "patient",
        )
        return _render(report, format)

    return router
