"""A service held to its own OpenAPI document: typed routes, and answers that conform.

Shared by the ledger relay's and audit analytics' API tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import jsonschema
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel

OPERATIONAL = {"/healthz", "/readyz"}

INT64_MAX = 2**63 - 1
BAD_INTEGERS = (
    "-1",
    str(-(2**63) - 1),
    str(2**63),
    str(2**64),
    "1" + "0" * 40,
    "1e3",
    "1.5",
    "x",
)
"""Query values no 64-bit non-negative integer parameter may take (each refused with 422)."""
BAD_TIMES = (
    "0001-01-01T00:00:00+01:00",  # the year 0 in UTC
    "9999-12-31T23:59:59-01:00",  # the year 10000 in UTC
    "0000-01-01T00:00:00Z",
    "10000-01-01T00:00:00Z",
    "2020-13-01T00:00:00Z",
    "2020-02-30T00:00:00Z",
    "garbage",
    "9" * 40,
)
"""Query values no time parameter may take (each refused with 422)."""


def _walk(routes: Iterable[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # FastAPI includes routers lazily
        if included is not None:
            yield from _walk(included.routes)


def api_routes(app: FastAPI) -> list[APIRoute]:
    """The service's own routes (not the operational ones the factory adds), walked
    through the routers the app includes."""
    return [
        route
        for route in _walk(app.routes)
        if route.include_in_schema and route.path not in OPERATIONAL
    ]


def assert_typed_routes(app: FastAPI) -> list[APIRoute]:
    """Every route answers a declared pydantic model (not a free-form dict) whose fields
    are all declared."""
    routes = api_routes(app)
    assert routes
    for route in routes:
        model = route.response_model
        where = f"{sorted(route.methods)} {route.path}"
        assert isinstance(model, type) and issubclass(model, BaseModel), where
        assert model.model_fields, where
    return routes


class Contract:
    """Checks answers against an OpenAPI document: the status is declared for the
    operation, the content type too, and a JSON body matches the declared schema."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def check(self, method: str, path: str, response: httpx.Response) -> None:
        operation = self.document["paths"][path][method.lower()]
        declared = operation["responses"]
        status = str(response.status_code)
        assert status in declared, f"{method} {path}: {status} not declared: {response.text}"
        media = response.headers["content-type"].split(";")[0].strip()
        content = declared[status].get("content", {})
        assert media in content, f"{method} {path}: {media} not declared for {status}"
        if media != "application/json":
            return
        schema = {**content[media]["schema"], "components": self.document["components"]}
        jsonschema.validate(response.json(), schema, cls=jsonschema.Draft202012Validator)
