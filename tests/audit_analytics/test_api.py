"""The auditor's API and the patient's own report, through the composition root on the
embedded default (one process: embedded log, in-process EVM, SQLite, the ledger relay
runtime beside it), with ES256 tokens made at run time.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from audit_analytics import events as ev
from audit_analytics.conftest import until
from ledger_relay.tokens import TokenKey
from starlette.testclient import TestClient

from services.audit_analytics.adapters.proofs import DirectEventProofs, HttpEventProofs
from services.audit_analytics.domain.integrity import IntegrityService
from services.audit_analytics.main import AuditAnalyticsRuntime, AuditAnalyticsSettings
from services.ledger_relay.main import LedgerRelayRuntime, LedgerRelaySettings
from services.ledger_relay.relay import DOMAIN_TOPICS
from services.platform.bus.port import Message, TopicSpec
from services.platform.events.envelope import decode

AUDIENCE = "audit-analytics"


class Api:
    def __init__(
        self,
        audit: AuditAnalyticsRuntime,
        relay: LedgerRelayRuntime,
        keys: TokenKey,
        raws: list[bytes],
    ) -> None:
        self.audit, self.relay, self.keys, self.raws = audit, relay, keys, raws
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=audit.app), base_url="http://audit"
        )

    def headers(self, role: str, sub: str | None = None) -> dict[str, str]:
        claims: dict[str, Any] = {"aud": AUDIENCE}
        if sub:
            claims["sub"] = sub
        headers: dict[str, str] = self.keys.headers(role, **claims)
        return headers

    async def get(
        self, path: str, role: str = "auditor", sub: str | None = None, **params: Any
    ) -> httpx.Response:
        return await self.client.get(path, params=params, headers=self.headers(role, sub))

    async def post(self, path: str, role: str = "auditor", body: Any = None) -> httpx.Response:
        return await self.client.post(path, json=body, headers=self.headers(role))


@pytest.fixture(scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    async for harness in served_api(tmp_path_factory.mktemp("audit-api")):
        yield harness


async def served_api(base: Path) -> AsyncIterator[Api]:
    """The relay and audit runtimes on ``base`` with a workflow's events stored and
    proven, and a client of the audit API."""
    keys = TokenKey()
    relay = LedgerRelayRuntime(
        LedgerRelaySettings(
            jwt=keys.jwt_settings(),
            data_dir=base / "relay",
            checkpoint_events=20,
            checkpoint_interval_ms=100,
        )
    )
    await relay.start()
    audit = AuditAnalyticsRuntime(
        AuditAnalyticsSettings(
            jwt={**keys.jwt_settings(), "audience": AUDIENCE},
            data_dir=base / "audit",
            proof_interval_seconds=0.1,
            detect_interval_seconds=3600,
        ),
        proofs=DirectEventProofs(relay.proofs),
        reader=relay.anchor,
        bus=relay.bus,
    )
    await audit.start()
    raws = ev.workflow(6)
    await relay.bus.create_topics([TopicSpec(t, 3) for t in DOMAIN_TOPICS])
    await relay.bus.publish_many([Message(ev.route(r)[0], ev.route(r)[1], r) for r in raws])
    repo = audit.repository
    await until(
        lambda: len(repo.all_events()) >= len(raws) and not repo.without_proof(1, DOMAIN_TOPICS),
        60,
        "events stored and proven",
    )
    state = Api(audit, relay, keys, raws)
    yield state
    await state.client.aclose()
    await audit.stop()
    audit.close()
    await relay.stop()
    relay.close()


async def test_roles_and_authentication(api: Api) -> None:
    assert (await api.client.get("/events")).status_code == 401
    for role in ("patient", "provider", "service"):
        response = await api.get("/events", role=role)
        assert response.status_code == 403, role
        assert response.json()["error"]["code"] == "role_not_allowed"
    assert (await api.get("/events", role="admin")).status_code == 200
    assert (await api.post("/reconciliation", role="patient")).status_code == 403
    assert (await api.get("/reports/access/pat-1", role="patient", sub="pat-0")).status_code == 403
    assert (await api.get("/me/access-report", role="auditor")).status_code == 403


async def test_search_with_pagination_and_bad_input(api: Api) -> None:
    seen: list[str] = []
    cursor = 0
    while True:
        response = await api.get("/events", patient_id="pat-0", limit=2, cursor=cursor)
        assert response.status_code == 200
        body = response.json()
        seen += [item["id"] for item in body["items"]]
        assert all(item["patient_id"] == "pat-0" for item in body["items"])
        assert all(item["resourceType"] == "AuditEvent" for item in body["items"])
        if body["next_cursor"] is None:
            break
        cursor = body["next_cursor"]
    expected = {decode(r).id for r in api.raws if decode(r).subject == "pat-0"}
    assert set(seen) == expected and len(seen) == len(expected)
    denied = (await api.get("/events", outcome="minor_failure", limit=500)).json()["items"]
    assert {d["subtype"] for d in denied} >= {"read_denied"}
    for params, status in (
        ({"limit": 0}, 422),
        ({"limit": 501}, 422),
        ({"cursor": -1}, 422),
        ({"since": "not-a-date"}, 422),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, 400),
    ):
        response = await api.get("/events", **params)
        assert response.status_code == status, params
        assert "error" in response.json()
    assert (await api.get("/events/01a00000-0000-7000-8000-000000000000")).status_code == 404
    assert (await api.get("/events/bad id!")).status_code == 422


async def test_event_detail_verification_and_reconciliation(api: Api) -> None:
    event_id = decode(api.raws[3]).id
    body = (await api.get(f"/events/{event_id}")).json()
    assert body["integrity"]["leaf_index"] is not None
    assert body["proof"]["event_id"] == event_id
    assert "ciphertext" not in str(body).lower()
    verified = (await api.get(f"/events/{event_id}/verification")).json()
    assert verified["verified"] is True and verified["tx_hash"].startswith("0x")
    result = (await api.post("/reconciliation")).json()
    assert result["ok"] is True, result["discrepancies"]
    assert result["anchored"] >= len(api.raws)
    # The runtime gives reconciliation the bus's end offsets: lag is pending, not missing.
    assert result["bus_offsets_known"] is True
    assert result["positions_not_consumed"] == sum(result["not_consumed"].values())
    # ... and the relay's committed offsets: what its log lacks yet is not_logged, not
    # inserted. They are the relay's own group's, which has consumed every event.
    relay_group = api.relay.settings.consumer_group
    assert api.audit.settings.ledger_consumer_group == relay_group
    deadline = time.monotonic() + 30
    while sum((await api.audit.logged_offsets()).values()) != len(api.raws):
        assert time.monotonic() < deadline, await api.audit.logged_offsets()
        await asyncio.sleep(0.05)
    assert result["not_logged"] == 0
    # ... and the store's own group's committed offsets, which reach the bus's end.
    while await api.audit.consumed_offsets() != await api.audit.end_offsets():
        assert time.monotonic() < deadline, await api.audit.consumed_offsets()
        await asyncio.sleep(0.05)

    # The same verification through the relay's HTTP API (the other EventProofs adapter).
    token = api.keys.token("service")
    # No context manager: that would run the relay app's lifespan (a second start and a stop).
    client = TestClient(api.relay.app, base_url="http://ledger")
    http = HttpEventProofs("http://ledger", lambda: token, client=client)
    integrity = IntegrityService(
        api.audit.repository, http, api.relay.anchor, frozenset(DOMAIN_TOPICS)
    )
    assert integrity.verify(event_id).verified
    assert http.inclusion("01a00000-0000-7000-8000-000000000000") is None
    assert http.latest_checkpoint() is not None
    http.close()


async def test_anomalies_are_events_with_evidence_and_can_be_reviewed(api: Api) -> None:
    new = (await api.post("/anomalies/detection")).json()["new_findings"]
    rules = {f["rule"] for f in new}
    assert {"break_glass_without_justification", "access_without_consent"} <= rules
    again = (await api.post("/anomalies/detection")).json()["new_findings"]
    assert again == []
    bg = next(f for f in new if f["rule"] == "break_glass_without_justification")
    detail = (await api.get(f"/anomalies/{bg['finding_id']}")).json()
    assert detail["evidence"][0]["proof"]["leaf_index"] >= 0
    bad = await api.post(f"/anomalies/{bg['finding_id']}/review", body={"disposition": "meh"})
    assert bad.status_code == 422
    reviewed = await api.post(
        f"/anomalies/{bg['finding_id']}/review", body={"disposition": "justified"}
    )
    assert reviewed.status_code == 200 and reviewed.json()["disposition"] == "justified"
    assert (
        await api.post("/anomalies/nope/review", body={"disposition": "justified"})
    ).status_code == 404
    bg_event = bg["event_ids"][0]
    ok = await api.post(f"/break-glass/{bg_event}/review", body={"disposition": "justified"})
    assert ok.status_code == 200
    not_bg = decode(api.raws[0]).id
    assert (
        await api.post(f"/break-glass/{not_bg}/review", body={"disposition": "justified"})
    ).status_code == 400
    # Each finding went out as an ehr.audit.anomaly_detected.v1 event and came back.
    repo = api.audit.repository
    await until(
        lambda: len(repo.search(_query("ehr.audit.anomaly_detected.v1")).items) >= len(new),
        30,
        "anomaly events consumed",
    )
    # So did each review, through the runtime's outbox, the bus and the store's consumer,
    # with the reviewer as its agent; a refused review (404, 400, 422) emitted nothing.
    for event_type in ("ehr.audit.anomaly_reviewed.v1", "ehr.audit.break_glass_reviewed.v1"):
        await until(lambda t=event_type: bool(repo.search(_query(t)).items), 30, event_type)
        (review,) = repo.search(_query(event_type)).items
        assert review.record.extra["disposition"] == "justified"
        assert review.record.actor_role == "auditor" and review.record.actor_id
    (finding_review,) = repo.search(_query("ehr.audit.anomaly_reviewed.v1")).items
    assert finding_review.record.entities[0].id == bg["finding_id"]
    report = (
        await api.get(
            "/reports/compliance", since="2000-01-01T00:00:00Z", until="2100-01-01T00:00:00Z"
        )
    ).json()
    (episode,) = [b for b in report["break_glass"] if b["event_id"] == bg_event]
    assert episode["review_status"] == "reviewed" and episode["review_event_id"]
    assert {r["kind"] for r in report["reviews"]} == {"anomaly", "break_glass"}


def _query(event_type: str) -> Any:
    from services.audit_analytics.domain.model import SearchQuery

    return SearchQuery(type=event_type, limit=500)


async def test_reports_in_three_formats_and_the_patients_own(api: Api) -> None:
    window = {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"}
    report = (await api.get("/reports/compliance", **window)).json()
    assert set(report["disclosures"]) == {f"pat-{i}" for i in range(6)}
    first = report["disclosures"]["pat-0"][0]
    assert {"first_date", "recipient", "description", "purpose", "count"} <= set(first)
    assert report["break_glass"][0]["review_status"] in ("reviewed", "pending")
    assert report["consent_changes"][0]["change"] == "granted"
    assert report["attestation"]["checkpoint_matches_chain"] is True
    assert report["attestation"]["anchor_transaction"].startswith("0x")
    assert report["attestation"]["consistent_with_previous_report"] in (True, None)
    text = (await api.get("/reports/compliance", format="csv", **window)).text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["section", "field", "value"] and len(rows) > 20
    page = await api.get("/reports/compliance", format="html", **window)
    assert page.headers["content-type"].startswith("text/html")
    assert "<svg" in page.text and "Attestation" in page.text
    again = (await api.get("/reports/compliance", **window)).json()["attestation"]
    assert again["consistent_with_previous_report"] is True
    assert again["previous_report_tree_size"] <= again["checkpoint_tree_size"]
    assert (await api.get("/reports/compliance", since="2026-01-01T00:00:00Z")).status_code == 422

    mine = (await api.get("/me/access-report", role="patient", sub="pat-0")).json()
    assert mine["patient_id"] == "pat-0"
    actions = {a["action"] for a in mine["accesses"]}
    assert {"read", "denied", "break_glass"} <= actions
    ids = {a["event_id"] for a in mine["accesses"]}
    others = {decode(r).id for r in api.raws if decode(r).subject != "pat-0"}
    assert not ids & others
    html_page = await api.get("/me/access-report", role="patient", sub="pat-0", format="html")
    assert "<svg" in html_page.text and "pat-1" not in html_page.text
    repo = api.audit.repository
    await until(
        lambda: len(repo.search(_query("ehr.audit.report_generated.v1")).items) >= 4,
        30,
        "report events consumed",
    )
