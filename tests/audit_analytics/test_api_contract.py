"""The audit API against its own OpenAPI document: every number and time a caller gives
has a domain (refused with 422 beyond it, never a 500), valid extremes answer what the
document declares, every answer to every role matches it, and every route declares a
typed model and its own errors.

Runs on the stored, proven workflow of ``test_api``'s harness (the embedded default).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from audit_analytics.test_api import Api, served_api
from ledger_relay.openapi_contract import (
    BAD_INTEGERS,
    BAD_TIMES,
    INT64_MAX,
    Contract,
    assert_typed_routes,
)

from services.platform.events.envelope import decode

ROLES = ("auditor", "admin", "patient", "provider", "service")
FIRST = "0001-01-01T00:00:00Z"
LAST = "9999-12-31T23:59:59.999999Z"
PERIOD = {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"}


@pytest.fixture(scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    async for harness in served_api(tmp_path_factory.mktemp("audit-contract")):
        yield harness


@pytest.fixture(scope="module")
async def contract(api: Api) -> Contract:
    return Contract((await api.client.get("/openapi.json")).json())


def _times(path: str, role: str, name: str, other: dict[str, str]) -> list[Any]:
    return [(path, role, {**other, name: value}) for value in BAD_TIMES]


BAD_PARAMETERS = [
    *[("/events", "auditor", {"cursor": value}) for value in BAD_INTEGERS],
    *[("/events", "auditor", {"limit": value}) for value in (*BAD_INTEGERS, "0", "501")],
    *_times("/events", "auditor", "since", {}),
    *_times("/events", "auditor", "until", {}),
    *_times("/reports/compliance", "auditor", "since", {"until": PERIOD["until"]}),
    *_times("/reports/compliance", "auditor", "until", {"since": PERIOD["since"]}),
    ("/reports/compliance", "auditor", {"since": PERIOD["since"]}),
    ("/reports/compliance", "auditor", {**PERIOD, "format": "pdf"}),
    *_times("/reports/access/pat-0", "auditor", "since", {}),
    *_times("/reports/access/pat-0", "auditor", "until", {}),
    *_times("/me/access-report", "patient", "since", {}),
    *_times("/me/access-report", "patient", "until", {}),
    ("/anomalies", "auditor", {"reviewed": "maybe"}),
    ("/anomalies", "auditor", {"rule": "r" * 81}),
]


def _template(path: str) -> str:
    return "/reports/access/{patient_id}" if path.startswith("/reports/access/") else path


@pytest.mark.parametrize(("path", "role", "params"), BAD_PARAMETERS)
async def test_values_outside_their_domain_are_refused_with_422(
    api: Api, contract: Contract, path: str, role: str, params: dict[str, Any]
) -> None:
    response = await api.get(path, role=role, sub="pat-0", **params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert error["details"][0]["loc"][0] == "query" and error["details"][0]["type"]
    contract.check("GET", _template(path), response)


@pytest.mark.parametrize(
    ("params", "count"),
    [
        ({"cursor": INT64_MAX}, 0),
        ({"cursor": INT64_MAX, "limit": 500}, 0),
        ({"since": FIRST, "until": LAST, "limit": 500}, None),
        ({"since": "0001-01-01T01:00:00+01:00", "limit": 500}, None),  # the year 1 in UTC
        ({"until": "9999-12-31T22:59:59-01:00", "limit": 500}, None),  # the end of 9999
        ({"since": "2000-01-01T00:00:00", "limit": 500}, None),  # naive: UTC
        ({"until": FIRST}, 0),
        ({"since": LAST}, 0),
    ],
)
async def test_valid_extremes_of_the_search_answer_200(
    api: Api, contract: Contract, params: dict[str, Any], count: int | None
) -> None:
    response = await api.get("/events", **params)
    assert response.status_code == 200, response.text
    contract.check("GET", "/events", response)
    body = response.json()
    ids = {item["id"] for item in body["items"]}
    if count is None:  # the whole workflow (and what the services emitted about it)
        assert ids >= {decode(raw).id for raw in api.raws}
    else:
        assert len(ids) == count
    assert body["next_cursor"] is None


@pytest.mark.parametrize(
    ("path", "role", "params"),
    [
        ("/reports/compliance", "auditor", {"since": FIRST, "until": LAST}),
        ("/reports/access/pat-0", "auditor", {"since": FIRST, "until": LAST}),
        ("/reports/access/pat-0", "admin", {"since": FIRST}),
        ("/reports/access/pat-0", "auditor", {"until": LAST}),
        ("/me/access-report", "patient", {"since": FIRST, "until": LAST}),
        ("/me/access-report", "patient", {"until": "9999-12-31T23:59:59"}),
    ],
)
async def test_reports_over_the_whole_of_time_in_every_format(
    api: Api, contract: Contract, path: str, role: str, params: dict[str, Any]
) -> None:
    for fmt in ("json", "csv", "html"):
        response = await api.get(path, role=role, sub="pat-0", format=fmt, **params)
        assert response.status_code == 200, response.text
        contract.check("GET", _template(path), response)
    report = (await api.get(path, role=role, sub="pat-0", **params)).json()
    if "accesses" in report:
        assert report["accesses"] and {a["event_id"] for a in report["accesses"]} <= {
            decode(r).id for r in api.raws if decode(r).subject == "pat-0"
        }
    else:
        assert report["events_covered"] >= len(api.raws)


@pytest.mark.parametrize(
    ("path", "role", "params"),
    [
        ("/events", "auditor", {"since": LAST, "until": FIRST}),
        ("/reports/compliance", "auditor", {"since": LAST, "until": LAST}),
        ("/reports/access/pat-0", "auditor", {"since": LAST}),  # after the default end
        ("/me/access-report", "patient", {"until": FIRST}),  # before the default start
    ],
)
async def test_an_empty_period_is_400_invalid_query(
    api: Api, contract: Contract, path: str, role: str, params: dict[str, Any]
) -> None:
    response = await api.get(path, role=role, sub="pat-0", **params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_query"
    contract.check("GET", _template(path), response)


async def test_every_answer_to_every_role_matches_the_document(
    api: Api, contract: Contract
) -> None:
    event_id = decode(api.raws[3]).id
    break_glass = next(
        decode(r).id for r in api.raws if decode(r).type.endswith("break_glass_used.v1")
    )
    new = (await api.post("/anomalies/detection")).json()["new_findings"]
    finding = new[0]["finding_id"]
    review = {"disposition": "justified"}
    requests: list[tuple[str, str, str, dict[str, Any], Any]] = [
        ("GET", "/events", "/events", {"limit": 3}, None),
        ("GET", "/events/{event_id}", f"/events/{event_id}", {}, None),
        ("GET", "/events/{event_id}", "/events/no-such-event", {}, None),
        ("GET", "/events/{event_id}/verification", f"/events/{event_id}/verification", {}, None),
        ("GET", "/events/{event_id}/verification", "/events/nope/verification", {}, None),
        ("POST", "/reconciliation", "/reconciliation", {}, None),
        ("POST", "/anomalies/detection", "/anomalies/detection", {}, None),
        ("GET", "/anomalies", "/anomalies", {}, None),
        ("GET", "/anomalies", "/anomalies", {"reviewed": "true"}, None),
        ("GET", "/anomalies/{finding_id}", f"/anomalies/{finding}", {}, None),
        ("GET", "/anomalies/{finding_id}", "/anomalies/nope", {}, None),
        (
            "POST",
            "/anomalies/{finding_id}/review",
            f"/anomalies/{finding}/review",
            {},
            review,
        ),
        ("POST", "/anomalies/{finding_id}/review", "/anomalies/nope/review", {}, review),
        (
            "POST",
            "/break-glass/{event_id}/review",
            f"/break-glass/{break_glass}/review",
            {},
            review,
        ),
        ("POST", "/break-glass/{event_id}/review", f"/break-glass/{event_id}/review", {}, review),
        ("GET", "/reports/compliance", "/reports/compliance", PERIOD, None),
        ("GET", "/reports/access/{patient_id}", "/reports/access/pat-1", {}, None),
        ("GET", "/me/access-report", "/me/access-report", {}, None),
    ]
    statuses: set[int] = set()
    for role in ROLES:
        for method, template, path, params, body in requests:
            response = await api.client.request(
                method,
                path,
                params=params,
                json=body,
                headers=api.headers(role, "pat-0" if role == "patient" else None),
            )
            assert response.status_code < 500, (role, path, response.text)
            contract.check(method, template, response)
            statuses.add(response.status_code)
    assert {200, 400, 403, 404} <= statuses


async def test_every_route_declares_a_typed_model_and_its_own_errors(api: Api) -> None:
    assert len(assert_typed_routes(api.audit.app)) == 12
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    own = {
        ("get", "/events"): {"400": "invalid_query"},
        ("get", "/events/{event_id}"): {"404": "event_not_found"},
        ("get", "/events/{event_id}/verification"): {
            "404": "event_not_found",
            "409": "not_yet_anchored",
            "503": "proofs_unavailable",
        },
        ("post", "/reconciliation"): {"503": "chain_unavailable"},
        ("get", "/anomalies/{finding_id}"): {"404": "finding_not_found"},
        ("post", "/anomalies/{finding_id}/review"): {"404": "finding_not_found"},
        ("post", "/break-glass/{event_id}/review"): {
            "400": "invalid_query",
            "404": "event_not_found",
        },
        ("get", "/reports/compliance"): {"400": "invalid_query", "503": "chain_unavailable"},
        ("get", "/me/access-report"): {"503": "proofs_unavailable"},
    }
    for (method, path), errors in own.items():
        responses = paths[path][method]["responses"]
        for status, code in errors.items():
            assert code in responses[status]["description"], (path, status)
    for path in ("/reports/compliance", "/reports/access/{patient_id}", "/me/access-report"):
        content = paths[path]["get"]["responses"]["200"]["content"]
        assert {"application/json", "text/csv", "text/html"} <= set(content)
    cursor = next(p for p in paths["/events"]["get"]["parameters"] if p["name"] == "cursor")
    assert (cursor["schema"]["minimum"], cursor["schema"]["maximum"]) == (0, INT64_MAX)
