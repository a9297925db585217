"""Clients of the auditor's API (audit-analytics) and the ledger relay's proofs API.

Both speak JSON over HTTP with an identity-issued bearer token: ``audit`` audience for
audit-analytics, ``ledger`` for the relay. Errors come back as ``ApiError`` with the
service's machine-readable code.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx

from ehr_client.errors import ApiClient, ApiError
from ehr_client.results import (
    AccessReport,
    AuditEvent,
    AuditEventDetail,
    BreakGlassReview,
    Checkpoints,
    Finding,
    InclusionProof,
    Reconciliation,
    Verification,
)

__all__ = ["ApiError", "AuditClient", "LedgerClient"]


class _JsonClient:
    """One bearer token for every request; errors as ``ApiError`` (an ``EhrError``)."""

    def __init__(self, base_url: str, token: str, timeout: float, http: httpx.Client | None):
        self.api = ApiClient(base_url, timeout=timeout, http=http, token=token, family=ApiError)
        self.http = self.api.http

    @property
    def token(self) -> str:
        return str(self.api.token)

    @token.setter
    def token(self, value: str) -> None:
        self.api.token = value

    def close(self) -> None:
        self.api.close()

    def request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        """The successful response as received (for non-JSON answers such as CSV)."""
        return self.api.send(method, path, json=json, params=params)

    def call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        return self.api.call(method, path, json=json, params=params)


class AuditClient(_JsonClient):
    """The auditor's view: search, verification, reconciliation, anomalies, reports."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        timeout: float = 120.0,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, token, timeout, http)

    def search(self, **filters: Any) -> Iterator[AuditEvent]:
        """Every event matching ``filters`` (patient_id, actor_id, type, outcome, since,
        until), following the pages."""
        params = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in filters.items()}
        cursor = 0
        while True:
            page = self.call("GET", "/events", params={**params, "cursor": cursor, "limit": 500})
            yield from page["items"]
            if page["next_cursor"] is None:
                return
            cursor = int(page["next_cursor"])

    def event(self, event_id: str) -> AuditEventDetail:
        """One event with its stored proof and its exact bus bytes (``raw``)."""
        body: AuditEventDetail = self.call("GET", f"/events/{event_id}")
        body["raw"] = base64.b64decode(body["raw_base64"])
        return body

    def verify(self, event_id: str) -> Verification:
        result: Verification = self.call("GET", f"/events/{event_id}/verification")
        return result

    def reconcile(self) -> Reconciliation:
        result: Reconciliation = self.call("POST", "/reconciliation")
        return result

    def detect(self) -> list[Finding]:
        return list(self.call("POST", "/anomalies/detection")["new_findings"])

    def anomalies(self, rule: str | None = None) -> list[Finding]:
        params = {"rule": rule} if rule else None
        return list(self.call("GET", "/anomalies", params=params)["items"])

    def review(self, finding_id: str, disposition: str, note: str = "") -> Finding:
        """Marks a finding reviewed. ``disposition``: justified, false_positive,
        violation_confirmed, escalated or needs_training."""
        result: Finding = self.call(
            "POST",
            f"/anomalies/{finding_id}/review",
            json={"disposition": disposition, "note": note},
        )
        return result

    def review_break_glass(
        self, event_id: str, disposition: str, note: str = ""
    ) -> BreakGlassReview:
        """Records the review of a break-glass episode (dispositions as for ``review``)."""
        result: BreakGlassReview = self.call(
            "POST",
            f"/break-glass/{event_id}/review",
            json={"disposition": disposition, "note": note},
        )
        return result

    def compliance_report(
        self, since: datetime, until: datetime, report_format: str = "json"
    ) -> httpx.Response:
        """The compliance report for ``[since, until)`` as JSON, CSV or HTML."""
        return self.request(
            "GET",
            "/reports/compliance",
            params={
                "since": since.isoformat(),
                "until": until.isoformat(),
                "format": report_format,
            },
        )

    def my_access_report(self) -> AccessReport:
        """A patient's own access report (a patient's ``audit`` token)."""
        result: AccessReport = self.call("GET", "/me/access-report")
        return result


class LedgerClient(_JsonClient):
    """The relay's proofs API: inclusion proofs and anchored checkpoints."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, token, timeout, http)

    def inclusion_proof(self, event_id: str) -> InclusionProof | None:
        """The event's proof to an anchored checkpoint; None while not yet anchored."""
        try:
            result: InclusionProof = self.call("GET", f"/proofs/events/{event_id}")
        except ApiError as error:
            if error.code in ("not_yet_anchored", "event_not_found"):
                return None
            raise
        return result

    def checkpoints(self) -> Checkpoints:
        result: Checkpoints = self.call("GET", "/checkpoints")
        return result
