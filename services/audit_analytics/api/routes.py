"""The auditor's API and a patient's own access report.

Auditors and administrators see the log, verification, reconciliation, findings and
reports. A patient gets only ``/me/access-report`` about themselves. No route returns
health data: the events carry none.

Every number and time a caller gives has a domain every layer behind can hold (64-bit
cursors, bounded page sizes, ``Instant`` times within the years 1..9999 in UTC), refused
with 422 before anything is computed; every route declares its answer's model
(:mod:`.schemas`) and its own errors in the OpenAPI document.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from services.audit_analytics.api import schemas
from services.audit_analytics.api.errors import answers
from services.audit_analytics.domain import reports
from services.audit_analytics.domain.errors import (
    EventNotFound,
    FindingNotFound,
    InvalidQuery,
    NotYetAnchored,
    ProofsUnavailable,
)
from services.audit_analytics.domain.model import Finding, SearchQuery, StoredEvent
from services.audit_analytics.domain.ports import BusOffsets
from services.audit_analytics.domain.service import DISPOSITIONS, MAX_PAGE, AuditService
from services.platform.app.auth import Principal, require_role
from services.platform.app.bounds import Instant, NonNegativeInt64
from services.platform.chain.errors import ChainError

LOG_ROLES = ("auditor", "admin")

Auditor = Annotated[Principal, Depends(require_role(*LOG_ROLES))]
Patient = Annotated[Principal, Depends(require_role("patient"))]
EventId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Format = Literal["json", "csv", "html"]
Cursor = Annotated[NonNegativeInt64, Query(description="the previous page's next_cursor")]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE)]
ACCESS_REPORT_DAYS = 6 * 366
"""The default period of an access report: the six years HIPAA keeps an accounting."""
REPORT_ERRORS = (InvalidQuery, ProofsUnavailable, ChainError)


class ReviewBody(BaseModel):
    disposition: Literal[DISPOSITIONS]  # type: ignore[valid-type]
    note: str = Field(default="", max_length=500)


def stored_proof(proof: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``proof`` as :class:`schemas.StoredProof` gives it, or None when there is none or
    it is not a proof (a stored proof is data from elsewhere: reconciliation reports a
    malformed one; the API must still answer)."""
    if proof is None:
        return None
    try:
        return schemas.StoredProof.model_validate(proof).model_dump()
    except ValidationError:
        return None


def event_body(event: StoredEvent, *, with_raw: bool = False) -> dict[str, Any]:
    r = event.record
    proof = stored_proof(event.proof)
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
            "leaf_index": proof["leaf_index"] if proof else None,
            "checkpoint": proof["checkpoint"] if proof else None,
        },
    }
    if with_raw:
        body["raw_base64"] = base64.b64encode(event.raw).decode()
        body["proof"] = proof
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


def _render(report: dict[str, Any], fmt: Format) -> dict[str, Any] | Response:
    """The report as JSON (checked against the route's model), CSV or HTML."""
    if fmt == "csv":
        return PlainTextResponse(reports.to_csv(report), media_type="text/csv")
    if fmt == "html":
        return HTMLResponse(reports.to_html(report))
    return report


def _access_period(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """An access report's period: by default the last ``ACCESS_REPORT_DAYS`` days up to
    now (a given bound is an ``Instant``: already aware and in range)."""
    now = datetime.now(UTC)
    return (
        since if since is not None else now - timedelta(days=ACCESS_REPORT_DAYS),
        until if until is not None else now + timedelta(seconds=1),
    )


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

    @router.get("/events", response_model=schemas.EventPage, responses=answers(InvalidQuery))
    def search(
        _: Auditor,
        patient_id: Annotated[str | None, Query(max_length=200)] = None,
        actor_id: Annotated[str | None, Query(max_length=200)] = None,
        type: Annotated[str | None, Query(max_length=120)] = None,
        outcome: Annotated[str | None, Query(max_length=40)] = None,
        since: Instant | None = None,
        until: Instant | None = None,
        cursor: Cursor = 0,
        limit: PageSize = 50,
    ) -> dict[str, Any]:
        """Search the log; ``next_cursor`` (when not null) gives the next page
        (400 ``invalid_query`` unless ``since`` is before ``until``)."""
        page = service.search(
            SearchQuery(
                patient_id=patient_id,
                actor_id=actor_id,
                type=type,
                outcome=outcome,
                since=since,
                until=until,
                after_sequence=cursor,
                limit=limit,
            )
        )
        return {"items": [event_body(e) for e in page.items], "next_cursor": page.next_cursor}

    @router.get(
        "/events/{event_id}",
        response_model=schemas.AuditEventDetail,
        responses=answers(EventNotFound),
    )
    def event(_: Auditor, event_id: EventId) -> dict[str, Any]:
        """One event with its exact bytes (base64) and stored proof."""
        return event_body(service.event(event_id), with_raw=True)

    @router.get(
        "/events/{event_id}/verification",
        response_model=schemas.Verification,
        responses=answers(EventNotFound, NotYetAnchored, ProofsUnavailable, ChainError),
    )
    def verify(_: Auditor, event_id: EventId) -> dict[str, Any]:
        """Verifies the stored bytes against the root anchored on chain (409
        ``not_yet_anchored`` while no anchored checkpoint covers the event)."""
        result = asdict(service.verify(event_id))
        result["proof"] = stored_proof(result["proof"])
        return result

    @router.post(
        "/reconciliation",
        response_model=schemas.Reconciliation,
        responses=answers(ProofsUnavailable, ChainError),
    )
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

    @router.post("/anomalies/detection", response_model=schemas.NewFindings)
    def detect(_: Auditor) -> dict[str, Any]:
        """Runs every rule over the store; answers (and emits) only new findings."""
        found = service.detect()
        return {"new_findings": [finding_body(f) for f in found]}

    @router.get("/anomalies", response_model=schemas.FindingList)
    def anomalies(
        _: Auditor,
        rule: Annotated[str | None, Query(max_length=80)] = None,
        reviewed: bool | None = None,
    ) -> dict[str, Any]:
        return {"items": [finding_body(f) for f in service.findings(rule, reviewed)]}

    @router.get(
        "/anomalies/{finding_id}",
        response_model=schemas.FindingDetail,
        responses=answers(FindingNotFound),
    )
    def anomaly(_: Auditor, finding_id: EventId) -> dict[str, Any]:
        """A finding with its evidence: each event and its proof."""
        f = service.finding(finding_id)
        evidence = []
        for event_id in f.event_ids:
            stored = service.repository.get(event_id)
            if stored is not None:
                evidence.append({"event": event_body(stored), "proof": stored_proof(stored.proof)})
        return {**finding_body(f), "evidence": evidence}

    @router.post(
        "/anomalies/{finding_id}/review",
        response_model=schemas.Finding,
        responses=answers(FindingNotFound),
    )
    def review(principal: Auditor, finding_id: EventId, body: ReviewBody) -> dict[str, Any]:
        return finding_body(
            service.review(finding_id, body.disposition, principal.account_id, principal.role)
        )

    @router.post(
        "/break-glass/{event_id}/review",
        response_model=schemas.BreakGlassReview,
        responses=answers(EventNotFound, InvalidQuery),
    )
    def review_break_glass(
        principal: Auditor, event_id: EventId, body: ReviewBody
    ) -> dict[str, str]:
        """Records the review of a break-glass access (400 ``invalid_query`` when the
        event is not one)."""
        service.review_break_glass(event_id, body.disposition, principal.account_id, principal.role)
        return {"event_id": event_id, "disposition": body.disposition}

    @router.get(
        "/reports/compliance",
        response_model=schemas.ComplianceReport,
        responses={**schemas.REPORT_MEDIA_TYPES, **answers(*REPORT_ERRORS)},
    )
    def compliance(
        principal: Auditor,
        since: Instant,
        until: Instant,
        format: Format = "json",
    ) -> Any:
        """Compliance report for ``[since, until)``; generating it is itself an event
        (400 ``invalid_query`` unless ``since`` is before ``until``)."""
        report = service.compliance_report(since, until, principal.account_id, principal.role)
        return _render(report, format)

    @router.get(
        "/reports/access/{patient_id}",
        response_model=schemas.AccessReport,
        responses={**schemas.REPORT_MEDIA_TYPES, **answers(*REPORT_ERRORS)},
    )
    def access_report(
        principal: Auditor,
        patient_id: EventId,
        since: Instant | None = None,
        until: Instant | None = None,
        format: Format = "json",
    ) -> Any:
        """A patient's access report for ``[since, until)`` (by default the last
        ``ACCESS_REPORT_DAYS`` days)."""
        report = service.patient_access_report(
            patient_id,
            *_access_period(since, until),
            principal.account_id,
            principal.role,
        )
        return _render(report, format)

    @router.get(
        "/me/access-report",
        response_model=schemas.AccessReport,
        responses={**schemas.REPORT_MEDIA_TYPES, **answers(*REPORT_ERRORS)},
    )
    def my_access_report(
        principal: Patient,
        since: Instant | None = None,
        until: Instant | None = None,
        format: Format = "json",
    ) -> Any:
        """The caller's own access report (patients only; about nobody else)."""
        report = service.patient_access_report(
            principal.account_id,
            *_access_period(since, until),
            principal.account_id,
            "patient",
        )
        return _render(report, format)

    return router
