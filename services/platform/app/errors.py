"""Errors every service raises, and the one mapping from errors to HTTP responses.

Every error body has the same shape::

    {"error": {"code": "not_found", "message": "...", "request_id": "...", "details": ...}}

``code`` is a stable machine-readable string; ``details`` appears only when there are
details to give (e.g. the fields that failed validation). Unexpected exceptions become a
500 with code ``internal_error`` and no internals in the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, ClassVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

REQUEST_ID_HEADER = "X-Request-ID"

log = structlog.get_logger(__name__)


class ServiceError(Exception):
    """Root of every error a service turns into an HTTP error response.

    Subclasses fix ``status`` and a default ``code``; a raise site may give a more
    specific ``code`` (e.g. ``NotFound("no such record", code="record_not_found")``).
    """

    status: int = HTTPStatus.INTERNAL_SERVER_ERROR
    code: str = "internal_error"
    default_message: ClassVar[str] = "internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)
        if code is not None:
            self.code = code
        self.details = details
        self.headers: dict[str, str] = dict(headers or {})


class BadRequest(ServiceError):
    """The request cannot be understood (400)."""

    status = HTTPStatus.BAD_REQUEST
    code = "bad_request"
    default_message = "bad request"


class MalformedBody(BadRequest):
    """The body is not well-formed JSON (400)."""

    code = "malformed_json"
    default_message = "request body is not valid JSON"


class Unauthorized(ServiceError):
    """No valid credentials (401)."""

    status = HTTPStatus.UNAUTHORIZED
    code = "unauthorized"
    default_message = "authentication required"


class Forbidden(ServiceError):
    """Authenticated, but not allowed to do this (403)."""

    status = HTTPStatus.FORBIDDEN
    code = "forbidden"
    default_message = "forbidden"


class NotFound(ServiceError):
    """The resource or route does not exist (404)."""

    status = HTTPStatus.NOT_FOUND
    code = "not_found"
    default_message = "not found"


class MethodNotAllowed(ServiceError):
    """The route exists but not with this method (405)."""

    status = HTTPStatus.METHOD_NOT_ALLOWED
    code = "method_not_allowed"
    default_message = "method not allowed"


class Conflict(ServiceError):
    """The request conflicts with the current state (409)."""

    status = HTTPStatus.CONFLICT
    code = "conflict"
    default_message = "conflict"


class Gone(ServiceError):
    """The resource existed and was destroyed on purpose, e.g. crypto-shredded (410)."""

    status = HTTPStatus.GONE
    code = "gone"
    default_message = "gone"


class RequestTimeout(ServiceError):
    """The request body did not arrive in time (408)."""

    status = HTTPStatus.REQUEST_TIMEOUT
    code = "request_timeout"
    default_message = "request body not received in time"


class PayloadTooLarge(ServiceError):
    """The request body exceeds the service's limit (413)."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"
    default_message = "request body too large"


class UnsupportedMediaType(ServiceError):
    """The body's media type or encoding is not one the route accepts (415)."""

    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"
    default_message = "unsupported media type"


class ValidationFailed(ServiceError):
    """The request is well-formed but its content is invalid (422)."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "validation_failed"
    default_message = "request validation failed"


class ServiceUnavailable(ServiceError):
    """A dependency the request needs is not available right now (503)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "service_unavailable"
    default_message = "service unavailable"


class InternalError(ServiceError):
    """Something unexpected went wrong (500); never carries internals to the client."""


ErrorMap = Mapping[type[Exception], type[ServiceError]]
"""Maps a service's domain exceptions to the HTTP error they become (e.g. ``{RecordMissing:
NotFound}``). The domain exception's ``code`` attribute is used when it is a string, else
the target class's code; its message is ``str(exc)``."""


def request_id_of(request: Request) -> str | None:
    """The request id the request-id middleware gave this request."""
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


def error_body(error: ServiceError, request_id: str | None) -> dict[str, Any]:
    """The JSON body of an error response."""
    payload: dict[str, Any] = {
        "code": error.code,
        "message": error.message,
        "request_id": request_id,
    }
    if error.details is not None:
        payload["details"] = error.details
    return {"error": payload}


def error_response(error: ServiceError, request_id: str | None) -> JSONResponse:
    """The HTTP response for ``error``."""
    headers = dict(error.headers)
    if request_id is not None:
        headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse(error_body(error, request_id), status_code=error.status, headers=headers)


def translate_domain_error(exc: Exception, error_map: ErrorMap) -> ServiceError | None:
    """The ServiceError a domain exception maps to, or None when it is not mapped."""
    for exc_type in type(exc).__mro__:
        target = error_map.get(exc_type)
        if target is not None:
            own_code = getattr(exc, "code", None)
            return target(str(exc) or None, code=own_code if isinstance(own_code, str) else None)
    return None


_HTTP_STATUS_ERRORS: dict[int, type[ServiceError]] = {
    HTTPStatus.BAD_REQUEST: BadRequest,
    HTTPStatus.UNAUTHORIZED: Unauthorized,
    HTTPStatus.FORBIDDEN: Forbidden,
    HTTPStatus.NOT_FOUND: NotFound,
    HTTPStatus.METHOD_NOT_ALLOWED: MethodNotAllowed,
    HTTPStatus.CONFLICT: Conflict,
    HTTPStatus.REQUEST_TIMEOUT: RequestTimeout,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: PayloadTooLarge,
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: UnsupportedMediaType,
    HTTPStatus.UNPROCESSABLE_ENTITY: ValidationFailed,
    HTTPStatus.SERVICE_UNAVAILABLE: ServiceUnavailable,
}


def _from_http_exception(exc: StarletteHTTPException) -> ServiceError:
    known = exc.status_code in HTTPStatus._value2member_map_
    phrase = HTTPStatus(exc.status_code).phrase if known else None
    headers = dict(exc.headers or {})
    # Starlette's own details are its status phrases; the shared messages replace those.
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    error_type = _HTTP_STATUS_ERRORS.get(exc.status_code)
    if error_type is not None:
        return error_type(detail or None, headers=headers)
    error = ServiceError(
        detail or (phrase or "http error").lower(),
        code=f"http_{exc.status_code}",
        headers=headers,
    )
    error.status = exc.status_code
    return error


def _from_validation_error(exc: RequestValidationError) -> ServiceError:
    problems = list(exc.errors())
    if any(problem.get("type") == "json_invalid" for problem in problems):
        return MalformedBody()
    details = [
        {
            "loc": [str(part) for part in problem.get("loc", ())],
            "msg": str(problem.get("msg", "")),
            "type": str(problem.get("type", "")),
        }
        for problem in problems
    ]
    return ValidationFailed(details=details)


def install_error_handlers(app: FastAPI, error_map: ErrorMap | None = None) -> None:
    """Make ``app`` answer every handled error with the shared JSON body.

    Unexpected exceptions are answered by the app factory's middleware, so that the
    response still carries the request id and is counted in the metrics.
    """
    domain_errors = dict(error_map or {})

    async def on_service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        if exc.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            log.warning("service_error", code=exc.code, status=exc.status, message=exc.message)
        return error_response(exc, request_id_of(request))

    async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(_from_http_exception(exc), request_id_of(request))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(_from_validation_error(exc), request_id_of(request))

    async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
        error = translate_domain_error(exc, domain_errors)
        if error is None:  # registered only for mapped types, so this is a bug
            raise exc
        return error_response(error, request_id_of(request))

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    for exc_type in domain_errors:
        app.add_exception_handler(exc_type, on_domain_error)
