"""The OpenAPI document as a contract: every status an operation can answer, documented.

Each service's routes declare the errors of their own use cases with
:func:`error_responses` (``responses=error_responses(NotFound, Conflict)``).
:func:`install_documented_errors` adds what the shared layers answer, derived from each
operation in the generated document, so the document cannot forget them:

- every operation: 400 (the request guard refuses a malformed URL);
- an operation with a body: 400, 408, 413, 415 and 422 (the request guard and the
  body's model);
- an operation with parameters: 422;
- an operation that needs a token: 401, 403 and 503 (signing keys unavailable), and
  the ``bearerAuth`` security scheme (declared by the token dependency itself).

Every error is the shared body of :mod:`services.platform.app.errors`
(:class:`ErrorBody`).
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from services.platform.app.auth import (
    InvalidToken,
    MissingToken,
    RoleNotAllowed,
    SigningKeysUnavailable,
    TokenExpired,
)
from services.platform.app.bounds import INT64_MAX, INT64_MIN, UINT64_MAX
from services.platform.app.errors import (
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    UnsupportedMediaType,
    ValidationFailed,
)


class ErrorDetail(BaseModel):
    """What went wrong: ``code`` is stable and machine-readable."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="stable machine-readable error code")
    message: str = Field(description="what went wrong, for a person")
    request_id: str | None = Field(description="the request's X-Request-ID")
    details: Any = Field(default=None, description="present when there is more to say")


class ErrorBody(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


ResponsesDoc = dict[int | str, dict[str, Any]]


def error_responses(*errors: type[ServiceError]) -> ResponsesDoc:
    """The ``responses`` entry of a route that can answer ``errors`` (merged by status)."""
    by_status: dict[int, list[str]] = {}
    for error in errors:
        by_status.setdefault(int(error.status), []).append(error.code)
    return {
        status: {
            "model": ErrorBody,
            "description": f"{HTTPStatus(status).phrase} ({', '.join(sorted(set(codes)))})",
        }
        for status, codes in sorted(by_status.items())
    }


_BODY_ERRORS: tuple[type[ServiceError], ...] = (
    RequestTimeout,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
_TOKEN_ERRORS: tuple[type[ServiceError], ...] = (
    MissingToken,
    InvalidToken,
    TokenExpired,
    RoleNotAllowed,
    SigningKeysUnavailable,
)
_ERROR_SCHEMA_REF = "#/components/schemas/ErrorBody"


def _shared_errors(operation: dict[str, Any]) -> list[type[ServiceError]]:
    errors: list[type[ServiceError]] = [BadRequest]
    if "requestBody" in operation:
        errors.extend(_BODY_ERRORS)
    if operation.get("parameters"):
        errors.append(ValidationFailed)
    if operation.get("security"):
        errors.extend(_TOKEN_ERRORS)
    return errors


_MORE_CODES: dict[int, tuple[str, ...]] = {
    # what the request guard answers besides the classes' default codes
    400: (
        "invalid_url",
        "url_too_long",
        "bad_content_length",
        "malformed_json",
        "json_too_deep",
        "json_number_too_long",
        "json_duplicate_key",
        "json_nul_character",
        "json_invalid_unicode",
    ),
    413: ("json_too_many_items",),
    415: ("unsupported_content_encoding",),
}


def _error_entry(errors: list[type[ServiceError]], status: int) -> dict[str, Any]:
    codes = sorted(
        {error.code for error in errors if int(error.status) == status}
        | set(_MORE_CODES.get(status, ()))
    )
    return {
        "description": f"{HTTPStatus(status).phrase} ({', '.join(codes)})",
        "content": {"application/json": {"schema": {"$ref": _ERROR_SCHEMA_REF}}},
    }


def add_shared_errors(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the shared layers' errors on every operation (see the module
    docstring), FastAPI's own 422 body replaced by the shared error body, and that body
    in the components. Statuses an operation declared itself are kept as declared."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    body_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, schema in body_schema.pop("$defs", {}).items():
        schemas.setdefault(name, schema)
    schemas.setdefault("ErrorBody", body_schema)
    for path_item in document.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _HTTP_METHODS:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            errors = _shared_errors(operation)
            for status in sorted({int(error.status) for error in errors}):
                entry = responses.get(str(status))
                shared = _error_entry(errors, status)
                if entry is None or _is_fastapi_validation_error(entry):
                    responses[str(status)] = shared
                else:  # declared by the route: its codes and the shared ones
                    entry["description"] = _merged_description(
                        str(entry.get("description", "")), shared["description"]
                    )
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return document


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _is_fastapi_validation_error(entry: dict[str, Any]) -> bool:
    schema = entry.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


_CODES = re.compile(r"^(?P<phrase>[^(]*?)\s*\((?P<codes>[^)]*)\)\s*$")


def _merged_description(declared: str, shared: str) -> str:
    """``"Forbidden (a, b)"`` and ``"Forbidden (c)"`` -> ``"Forbidden (a, b, c)"``."""
    ours, theirs = _CODES.match(declared), _CODES.match(shared)
    if ours is None or theirs is None:
        return declared or shared
    codes = {c.strip() for c in ours["codes"].split(",") + theirs["codes"].split(",")}
    return f"{ours['phrase']} ({', '.join(sorted(c for c in codes if c))})"


_BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_EXACT_BOUNDS = {
    float(b): b for b in (INT64_MAX, INT64_MIN, UINT64_MAX, 2**256 - 1, 2**53 - 1, 2**32 - 1)
}


def exact_integer_bounds(document: Any) -> Any:
    """FastAPI's document models hold ``minimum``/``maximum`` as floats, so a bound such as
    2**63-1 comes out as 9.223372036854776e18, which is 2**63. This puts the integers
    back: small ones exactly, and the large bounds of :mod:`bounds` by their float value
    (the only large bounds the services declare)."""
    pending = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            for key in _BOUND_KEYS:
                value = node.get(key)
                if isinstance(value, float) and value.is_integer():
                    node[key] = _EXACT_BOUNDS.get(value, int(value))
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return document


def install_documented_errors(app: FastAPI) -> None:
    """Makes ``app``'s OpenAPI document carry the shared errors (built once, cached)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = exact_integer_bounds(add_shared_errors(build()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
