"""The shared errors in every service's OpenAPI document, derived from each operation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from services.platform.app.auth import Principal, current_principal
from services.platform.app.bounds import INT64_MAX, NonNegativeInt64, PositiveInt64
from services.platform.app.errors import Conflict, NotFound
from services.platform.app.factory import create_app
from services.platform.app.openapi import error_responses
from services.platform.app.settings import ServiceSettings

Authenticated = Annotated[Principal, Depends(current_principal)]


class Body(BaseModel):
    value: int


class SizedBody(BaseModel):
    size: NonNegativeInt64
    count: PositiveInt64


class Answer(BaseModel):
    value: int


def _document(settings_factory: Callable[..., ServiceSettings]) -> dict[str, Any]:
    router = APIRouter()

    @router.post("/things/{name}", response_model=Answer, responses=error_responses(Conflict))
    async def put_thing(name: str, body: Body, principal: Authenticated) -> Answer:
        return Answer(value=body.value)

    @router.get("/public", response_model=Answer, responses=error_responses(NotFound))
    async def public() -> Answer:
        return Answer(value=1)

    document: dict[str, Any] = create_app(settings_factory(jwks={"keys": []}), [router]).openapi()
    return document


def test_each_operation_lists_what_the_shared_layers_answer(
    settings_factory: Callable[..., ServiceSettings],
) -> None:
    document = _document(settings_factory)
    protected = document["paths"]["/things/{name}"]["post"]
    assert protected["security"] == [{"bearerAuth": []}]
    assert set(protected["responses"]) == {
        "200",
        "400",
        "401",
        "403",
        "408",
        "409",
        "413",
        "415",
        "422",
        "503",
    }
    public = document["paths"]["/public"]["get"]
    assert "security" not in public
    assert set(public["responses"]) == {"200", "400", "404"}
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")


def test_every_error_is_the_shared_body(settings_factory: Callable[..., ServiceSettings]) -> None:
    document = _document(settings_factory)
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["ErrorBody"]["properties"]) == {"error"}
    for path_item in document["paths"].values():
        for operation in path_item.values():
            for status, entry in operation["responses"].items():
                if status.startswith(("4", "5")):
                    schema = entry["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, status
    guard_400 = document["paths"]["/things/{name}"]["post"]["responses"]["400"]
    assert "json_too_deep" in guard_400["description"]


async def test_servers_name_the_prefix_a_gateway_stripped(
    settings_factory: Callable[..., ServiceSettings],
) -> None:
    import httpx

    router = APIRouter()

    @router.get("/things", response_model=Answer)
    async def things() -> Answer:
        return Answer(value=1)

    stripped = create_app(settings_factory(jwks={"keys": []}), [router])
    kept = create_app(settings_factory(jwks={"keys": []}), [router], servers_from_root_path=False)

    async def servers(app: Any, headers: dict[str, str], root_path: str = "") -> Any:
        transport = httpx.ASGITransport(app=app, root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return (await client.get("/openapi.json", headers=headers)).json().get("servers")

    assert await servers(stripped, {}) is None  # fetched directly: paths are at the root
    assert await servers(stripped, {"X-Forwarded-Prefix": "/identity"}) == [{"url": "/identity"}]
    assert await servers(stripped, {}, root_path="/ledger") == [{"url": "/ledger"}]
    assert await servers(stripped, {"X-Forwarded-Prefix": "https://evil.example"}) is None
    # a service whose paths carry the prefix never adds it again
    assert await servers(kept, {"X-Forwarded-Prefix": "/consent"}) is None
    assert await servers(kept, {}, root_path="/consent") is None


def test_a_status_the_route_declares_keeps_the_shared_codes_too(
    settings_factory: Callable[..., ServiceSettings],
) -> None:
    from services.platform.app.errors import Forbidden as PlainForbidden

    class NotOwn(PlainForbidden):
        code = "not_own_data"

    router = APIRouter()

    @router.get("/mine", response_model=Answer, responses=error_responses(NotOwn))
    async def mine(principal: Authenticated) -> Answer:
        return Answer(value=1)

    app = create_app(settings_factory(jwks={"keys": []}), [router])
    forbidden = app.openapi()["paths"]["/mine"]["get"]["responses"]["403"]["description"]
    assert forbidden == "Forbidden (not_own_data, role_not_allowed)"


def test_integer_bounds_are_exact(settings_factory: Callable[..., ServiceSettings]) -> None:
    router = APIRouter()

    @router.post("/sized", response_model=Answer)
    async def sized(body: SizedBody) -> Answer:
        return Answer(value=1)

    document = create_app(settings_factory(jwks={"keys": []}), [router]).openapi()
    properties = document["components"]["schemas"]["SizedBody"]["properties"]
    assert properties["size"]["maximum"] == INT64_MAX
    assert type(properties["size"]["maximum"]) is int
    assert (properties["size"]["minimum"], properties["count"]["minimum"]) == (0, 1)
    assert type(properties["count"]["minimum"]) is int
