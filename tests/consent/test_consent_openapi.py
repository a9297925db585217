"""Consent's OpenAPI document as a contract: served through the embedded gateway's
routing, its paths (joined to its ``servers`` entry, if any) reach consent's operations;
every route declares the errors of its own use case; the check's reason and the
quarantine listing are typed."""

from __future__ import annotations

import re
from typing import Any

import httpx
from consent.harness import Harness

from services.embedded.gateway import PathGateway, Route

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


async def _document_through_gateway(h: Harness) -> tuple[httpx.AsyncClient, dict[str, Any]]:
    # The embedded gateway's own rule for consent: the /consent prefix is kept.
    gateway = PathGateway([Route("/consent", h.runtime.app, strip=False)])
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gw")
    response = await client.get("/consent/openapi.json")
    assert response.status_code == 200, response.text
    return client, response.json()


async def test_the_documents_paths_reach_consent_through_the_gateway(consent: Harness) -> None:
    client, document = await _document_through_gateway(consent)
    try:
        servers = document.get("servers") or [{"url": ""}]
        base = servers[0]["url"].rstrip("/")
        assert not base.endswith("/consent"), "the prefix is doubled"
        reached = 0
        for path, item in document["paths"].items():
            assert path.startswith("/consent/"), path
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            for method in HTTP_METHODS:
                if method not in item:
                    continue
                # No token: a route that exists answers 401; an unknown path is a 404.
                response = await client.request(method.upper(), base + concrete)
                assert response.status_code == 401, (method, path, response.text)
                reached += 1
        assert reached == sum(1 for i in document["paths"].values() for m in i if m in HTTP_METHODS)
        assert reached >= 9
    finally:
        await client.aclose()


def _codes(operation: dict[str, Any], status: int) -> set[str]:
    description = operation["responses"][str(status)]["description"]
    found = re.search(r"\(([^)]*)\)", description)
    assert found is not None, description
    return {code.strip() for code in found.group(1).split(",")}


def test_each_route_declares_its_own_errors(consent: Harness) -> None:
    paths = consent.runtime.app.openapi()["paths"]
    for route in ("/consent/grants", "/consent/revocations"):
        relay = paths[route]["post"]
        assert {"validation_failed", "message_expired", "bad_signature", "invalid_message"} <= (
            _codes(relay, 422)
        )
        assert {"nonce_mismatch", "rejected_by_chain", "change_quarantined"} <= _codes(relay, 409)
        assert _codes(relay, 404) == {"unknown_account"}
        assert _codes(relay, 403) == {"not_own_consent", "role_not_allowed"}
        assert _codes(relay, 503) == {"registry_unavailable", "signing_keys_unavailable"}
    assert "expiry_too_far" in _codes(paths["/consent/grants"]["post"], 422)
    nonce = paths["/consent/patients/{patient_id}/nonce"]["get"]
    assert {"not_own_consent", "unknown_account", "registry_unavailable"} <= (
        _codes(nonce, 403) | _codes(nonce, 404) | _codes(nonce, 503)
    )
    for route in (
        "/consent/check",
        "/consent/patients/{patient_id}/grants",
        "/consent/grantees/{grantee_id}/grants",
    ):
        assert _codes(paths[route]["get"], 404) == {"unknown_account"}
        assert "not_own_consent" in _codes(paths[route]["get"], 403)
    assert _codes(paths["/consent/patients/{patient_id}/grantees"]["get"], 404) == {
        "unknown_account"
    }


def test_the_check_reason_and_the_quarantine_are_typed(consent: Harness) -> None:
    document = consent.runtime.app.openapi()
    schemas = document["components"]["schemas"]
    reason = schemas["CheckView"]["properties"]["reason"]
    assert reason["enum"] == ["granted", "no_grant", "revoked", "expired"]
    assert "reason" in schemas["CheckView"]["required"]
    listing = document["paths"]["/consent/quarantine"]["get"]
    schema = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["items"]["$ref"].endswith("/QuarantinedLogView")
    assert set(schemas["QuarantinedLogView"]["required"]) >= {
        "block_number",
        "transaction_hash",
        "log_index",
        "reason",
        "quarantined_at",
    }
