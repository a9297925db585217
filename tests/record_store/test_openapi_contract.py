"""The record store's OpenAPI document is a contract: each route answers a closed model,
declares its own errors (404, 409, 410, 503 ...) with the shared error body, and its
fields that may be null say so."""

from __future__ import annotations

from record_store.conftest import Deployment
from record_store.openapi_contract import api_routes, contract_problems, resolve


def test_every_route_declares_a_closed_response_model(deployment: Deployment) -> None:
    app = deployment.records_runtime.app
    assert len(api_routes(app)) == 13
    assert contract_problems(app) == []


def test_each_route_documents_its_own_errors(deployment: Deployment) -> None:
    paths = deployment.records_runtime.app.openapi()["paths"]
    read = paths["/records/{record_id}"]["get"]["responses"]
    assert {"403", "404", "409", "410", "503"} <= set(read)
    for code in ("no_grant", "grant_revoked", "grant_expired", "provider_not_verified"):
        assert code in read["403"]["description"]
    assert "provider_verification_pending" in read["503"]["description"]
    assert "Retry-After" in read["503"]["headers"]
    upload = paths["/records"]["post"]["responses"]
    assert {"409", "413", "422", "503"} <= set(upload)
    assert "record_exists" in upload["409"]["description"]
    assert "validation_failed" in upload["422"]["description"]
    amend = paths["/records/{record_id}/versions"]["post"]["responses"]
    assert "record_shredded" in amend["410"]["description"]


def test_nullable_fields_are_declared_nullable(deployment: Deployment) -> None:
    document = deployment.records_runtime.app.openapi()
    record = resolve(document, {"$ref": "#/components/schemas/RecordView"})
    shredded_at = record["properties"]["shredded_at"]
    assert {"type": "null"} in shredded_at["anyOf"]
    assert "shredded_at" in record["required"]


def test_bounds_are_stated_in_the_document(deployment: Deployment) -> None:
    document = deployment.records_runtime.app.openapi()
    upload = resolve(document, {"$ref": "#/components/schemas/VersionIn"})
    # the document states the 64-bit bound (FastAPI writes it as a float: 2**63)
    assert upload["properties"]["plaintext_size"]["maximum"] in (2**63 - 1, float(2**63))
    assert upload["properties"]["version"]["maximum"] == 1_000_000
    assert upload["properties"]["ciphertext"]["maxLength"] > 0
    read = document["paths"]["/records/{record_id}"]["get"]
    parameters = {p["name"]: p["schema"] for p in read["parameters"]}
    assert parameters["record_id"]["pattern"].startswith("^[0-9a-f]{8}")
    assert (parameters["purpose"]["minimum"], parameters["purpose"]["maximum"]) == (1, 6)
