"""Checks shared by the record store's and identity's OpenAPI contract tests: every route
answers a declared, closed model (never a free-form object), and every error status
it documents is the shared error body."""

from __future__ import annotations

from typing import Any, get_args, get_origin

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel

SUCCESS = {"200", "201"}


def _walk(routes: list[Any]) -> list[APIRoute]:
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):  # an included router (expanded lazily)
            found += _walk(list(route.original_router.routes))
    return found


def api_routes(app: FastAPI) -> list[APIRoute]:
    """The service's own documented routes, walked through the included routers (the
    operational ones are not in the document)."""
    return [r for r in _walk(list(app.routes)) if r.include_in_schema]


def is_closed_model(annotation: Any) -> bool:
    """A pydantic model, or a list of them (a dict or ``Any`` is free-form)."""
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        return is_closed_model(item)
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def closed_schema_problems(document: dict[str, Any], schema: dict[str, Any], at: str) -> list[str]:
    """Where ``schema`` (followed through references, arrays and nullable unions) lets an
    object have properties it does not name."""
    schema = resolve(document, schema)
    if schema.get("type") == "array":
        return closed_schema_problems(document, schema["items"], f"{at}[]")
    if "anyOf" in schema:
        return [
            problem
            for option in schema["anyOf"]
            for problem in closed_schema_problems(document, option, at)
        ]
    if schema.get("type") != "object" and "properties" not in schema:
        return []
    problems = []
    if schema.get("additionalProperties", True) is not False and "properties" in schema:
        problems.append(f"{at}: open object")
    if "properties" not in schema:
        extra = schema.get("additionalProperties")
        if not isinstance(extra, dict) or "$ref" not in extra:
            problems.append(f"{at}: free-form object")
        else:
            problems += closed_schema_problems(document, extra, f"{at}{{}}")
    for name, prop in schema.get("properties", {}).items():
        problems += closed_schema_problems(document, prop, f"{at}.{name}")
    return problems


def contract_problems(app: FastAPI) -> list[str]:
    """Every way ``app``'s routes and document break the contract (empty when kept)."""
    problems: list[str] = []
    document = app.openapi()
    for route in api_routes(app):
        for method in route.methods:
            name = f"{method} {route.path}"
            if not is_closed_model(route.response_model):
                problems.append(f"{name}: response model {route.response_model!r}")
                continue
            operation = document["paths"].get(route.path, {}).get(method.lower())
            if operation is None:
                problems.append(f"{name}: not in the document")
                continue
            responses = operation["responses"]
            success = [s for s in responses if s in SUCCESS]
            if len(success) != 1:
                problems.append(f"{name}: success statuses {sorted(responses)}")
                continue
            schema = responses[success[0]]["content"]["application/json"]["schema"]
            problems += closed_schema_problems(document, schema, name)
            for status, entry in responses.items():
                if status in SUCCESS:
                    continue
                ref = entry["content"]["application/json"]["schema"].get("$ref", "")
                if not ref.endswith("/ErrorBody"):
                    problems.append(f"{name}: {status} is not the shared error body")
    return problems
