"""The OpenAPI document as a contract: every status an operation can answer, documented.

Each service's routes declare the errors of their own use cases with
:func:`error_responses` (``responses=error_responses(NotFound, Conflict)``).
:func:`document_shared_errors` adds what the shared layers answer, derived from the
route itself, so the document cannot forget them:

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

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.utils import create_model_field
from pydantic import BaseModel, ConfigDict, Field

from services.platform.app.errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    ServiceUnavailable,
    Unauthorized,
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


def _uses(dependant: Dependant, call: Callable[..., Any]) -> bool:
    pending = [dependant]
    while pending:
        current = pending.pop()
        if current.call is call:
            return True
        pending.extend(current.dependencies)
    return False


def _shared_errors(route: APIRoute, authenticated: bool) -> Iterable[type[ServiceError]]:
    yield BadRequest
    dependant = route.dependant
    if route.body_field is not None:
        yield from (RequestTimeout, PayloadTooLarge, UnsupportedMediaType, ValidationFailed)
    if dependant.path_params or dependant.query_params or dependant.header_params:
        yield ValidationFailed
    if authenticated:
        yield from (Unauthorized, Forbidden, ServiceUnavailable)


def document_shared_errors(app: FastAPI, principal_dependency: Callable[..., Any]) -> None:
    """Adds the shared layers' errors to every API route of ``app`` (see the module
    docstring). Runs once, before the document is first built; routes keep what they
    declared themselves."""
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        authenticated = _uses(route.dependant, principal_dependency)
        shared = error_responses(*_shared_errors(route, authenticated))
        declared = dict(route.responses)
        fields = dict(route.response_fields)
        for status, entry in shared.items():
            if status in declared or str(status) in declared:
                continue
            declared[status] = entry
            fields[status] = create_model_field(
                name=f"Response_{status}_{route.unique_id}", type_=ErrorBody, mode="serialization"
            )
        route.responses = declared
        route.response_fields = fields
