"""Identity's OpenAPI document is a contract: each route answers a closed model,
declares its own errors with the shared error body, and states each field's domain."""

from __future__ import annotations

from identity.conftest import Served
from record_store.openapi_contract import api_routes, contract_problems, resolve


def test_every_route_declares_a_closed_response_model(served: Served) -> None:
    app = served.runtime.app
    assert len(api_routes(app)) == 12
    assert contract_problems(app) == []


def test_each_route_documents_its_own_errors(served: Served) -> None:
    paths = served.runtime.app.openapi()["paths"]
    challenge = paths["/auth/challenge"]["post"]["responses"]
    assert "account_not_found" in challenge["404"]["description"]
    login = paths["/auth/login"]["post"]["responses"]
    for code in ("unknown_challenge", "expired_challenge", "replayed_challenge"):
        assert code in login["401"]["description"]
    verify = paths["/providers/{account_id}/verify"]["post"]["responses"]
    assert {"404", "409", "503"} <= set(verify)
    assert "registry_unavailable" in verify["503"]["description"]


def test_fields_state_their_domain(served: Served) -> None:
    document = served.runtime.app.openapi()
    challenge = resolve(document, {"$ref": "#/components/schemas/ChallengeRequest"})
    assert challenge["properties"]["signing_address"]["pattern"] == "^0x[0-9a-fA-F]{40}$"
    account = resolve(document, {"$ref": "#/components/schemas/AccountBody"})
    status = account["properties"]["provider_status"]
    assert {"type": "null"} in status["anyOf"]
