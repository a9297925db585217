"""The proofs API against its own OpenAPI document: every number a caller gives has a
64-bit domain (refused with 422 beyond it, never a 500), valid extremes answer what the
document declares, every route declares a typed model and its own errors.

Runs on the anchored log of ``test_api``'s fixture (the embedded default).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from ledger_relay.openapi_contract import (
    BAD_INTEGERS,
    INT64_MAX,
    Contract,
    assert_typed_routes,
)
from ledger_relay.test_api import Api, anchored_api

from services.platform.events.envelope import decode

ROLES = ("auditor", "admin", "service")


@pytest.fixture(scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    async for harness in anchored_api(tmp_path_factory.mktemp("ledger-contract")):
        yield harness


async def _contract(api: Api) -> Contract:
    return Contract((await api.client.get("/openapi.json")).json())


BAD_PARAMETERS = [
    *[("/checkpoints", {"from_index": value}) for value in BAD_INTEGERS],
    *[("/checkpoints", {"limit": value}) for value in (*BAD_INTEGERS, "0", "1001")],
    *[("/proofs/consistency", {"from_size": value, "to_size": 5}) for value in BAD_INTEGERS],
    *[("/proofs/consistency", {"from_size": 1, "to_size": value}) for value in BAD_INTEGERS],
    ("/proofs/consistency", {"from_size": 0, "to_size": 5}),
    ("/proofs/consistency", {"from_size": 1, "to_size": 0}),
]


@pytest.mark.parametrize(("path", "params"), BAD_PARAMETERS)
async def test_numbers_outside_their_domain_are_refused_with_422(
    api: Api, path: str, params: dict[str, Any]
) -> None:
    response = await api.get(path, **params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert error["details"][0]["loc"][0] == "query" and error["details"][0]["type"]
    (await _contract(api)).check("GET", path, response)


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/checkpoints", {"from_index": INT64_MAX}, 200),
        ("/checkpoints", {"from_index": INT64_MAX, "limit": 1000}, 200),
        ("/checkpoints", {"from_index": 0, "limit": 1}, 200),
        ("/proofs/consistency", {"from_size": 1, "to_size": INT64_MAX}, 404),
        ("/proofs/consistency", {"from_size": INT64_MAX, "to_size": INT64_MAX}, 404),
        ("/proofs/consistency", {"from_size": INT64_MAX, "to_size": 1}, 422),
    ],
)
async def test_valid_extremes_answer_as_documented(
    api: Api, path: str, params: dict[str, Any], status: int
) -> None:
    contract = await _contract(api)
    for role in ROLES:
        response = await api.get(path, role=role, **params)
        assert response.status_code == status, response.text
        contract.check("GET", path, response)
    if status == 200:  # nothing at the last index; one checkpoint from the first
        expected = 0 if params["from_index"] == INT64_MAX else 1
        assert len(response.json()["checkpoints"]) == expected


async def test_every_answer_matches_the_declared_model(api: Api) -> None:
    contract = await _contract(api)
    listed = (await api.get("/checkpoints", limit=1000)).json()["checkpoints"]
    last = listed[-1]
    event_id = decode(api.events[0]).id
    for role in ROLES:
        for path, concrete, params in (
            ("/checkpoints", "/checkpoints", {"limit": 1000}),
            ("/checkpoints/latest", "/checkpoints/latest", {}),
            ("/proofs/events/{event_id}", f"/proofs/events/{event_id}", {}),
            ("/proofs/events/{event_id}", "/proofs/events/no-such-event", {}),
            (
                "/proofs/consistency",
                "/proofs/consistency",
                {"from_size": 1, "to_size": last["tree_size"]},
            ),
            ("/proofs/consistency", "/proofs/consistency", {"from_size": 2, "to_size": 1}),
        ):
            response = await api.get(concrete, role=role, **params)
            assert response.status_code < 500, response.text
            contract.check("GET", path, response)
    for role in ("patient", "provider"):
        refused = await api.get("/checkpoints/latest", role=role)
        assert refused.status_code == 403
        contract.check("GET", "/checkpoints/latest", refused)


async def test_every_route_declares_a_typed_model_and_its_own_errors(api: Api) -> None:
    assert len(assert_typed_routes(api.runtime.app)) == 4
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    own = {
        "/proofs/events/{event_id}": {"404": "event_not_found", "409": "not_yet_anchored"},
        "/proofs/consistency": {"404": "checkpoint_not_found", "422": "invalid_range"},
        "/checkpoints/latest": {"404": "checkpoint_not_found"},
    }
    for path, errors in own.items():
        responses = paths[path]["get"]["responses"]
        for status, code in errors.items():
            assert code in responses[status]["description"], (path, status)
    # The parameters' own 422 stays documented beside the use case's.
    assert (
        "validation_failed"
        in paths["/proofs/consistency"]["get"]["responses"]["422"]["description"]
    )
    sizes = paths["/proofs/consistency"]["get"]["parameters"]
    assert {p["schema"]["maximum"] for p in sizes} == {INT64_MAX}
