"""The one way every client of this SDK talks HTTP and reports failure.

Every service answers an error with the same body, ``{"error": {"code", "message",
"request_id", "details"?}}``. ``ApiClient`` sends the requests of every client (identity,
consent, records, audit, ledger) and turns such an answer into an ``EhrError``: one root
to catch, a subclass chosen by the HTTP status (``NotFound``, ``Conflict``, …) and the
service's machine-readable ``code`` to branch on::

    try:
        records.read(record_id, purpose=TREATMENT)
    except PermissionDenied as refused:       # 403
        print(refused.code)                   # e.g. "consent_denied"
    except EhrError as error:                 # anything else the services answered
        print(error.status, error.code, error.message, error.request_id)

A connection that fails before any answer arrives is a ``TransportError`` (also an
``httpx.TransportError``, so code written against httpx keeps catching it).

Each client also raises its own family class (``IdentityClientError``,
``ConsentClientError``, ``RecordsClientError``, ``ApiError`` for audit and ledger), so
code that catches one client's errors only keeps doing so: an identity 404 is both a
``NotFound`` and an ``IdentityClientError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx


class EhrError(Exception):
    """An error answer of an EHR service (or no answer at all: ``TransportError``).

    ``status`` is the HTTP status (0 when no answer arrived), ``code`` the service's
    machine-readable code (``"http_error"`` when the body was not the shared error body),
    ``message`` its human-readable text, ``request_id`` the id to quote to an operator,
    ``details`` the optional structured details, ``body`` the decoded body as received
    (the text when it was not JSON).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        body: Any = None,
        *,
        request_id: str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        self.request_id = request_id
        self.details = details


class AuthenticationError(EhrError):
    """401: no token, an expired or invalid one, or a failed login."""


class PermissionDenied(EhrError):
    """403: the caller is known but may not do this (role, consent, suspension)."""


class NotFound(EhrError):
    """404: no such account, record, grant, event, …"""


class Conflict(EhrError):
    """409: the state does not allow it (already exists, stale nonce, …)."""


class Gone(EhrError):
    """410: it existed and was destroyed (a shredded record)."""


class ValidationError(EhrError):
    """422 (and 400, as ``BadRequest``): the request is not acceptable as sent."""


class BadRequest(ValidationError):
    """400: the request could not be read (malformed JSON, a hostile URL, …)."""


class RequestRejected(EhrError):
    """408, 413, 415: the request guard refused the body before any route ran."""


class ServiceUnavailable(EhrError):
    """503: a dependency is not available right now; ``retry_after`` seconds from the
    ``Retry-After`` header when the service gave one."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        body: Any = None,
        *,
        request_id: str | None = None,
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, message, body, request_id=request_id, details=details)
        self.retry_after = retry_after


class ServerError(EhrError):
    """Any other 5xx: the service failed; ``request_id`` finds it in its logs."""


class InvalidResponse(EhrError):
    """A success status whose body is not the JSON the client expects."""


class TransportError(EhrError, httpx.TransportError):
    """No answer: connection refused or reset, timeout, a network failure."""

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        EhrError.__init__(self, 0, "transport_error", message)
        if request is not None:
            self.request = request


# The old per-client error classes: each client raises its own family too, so code that
# catches one client's errors keeps catching exactly those.


class IdentityClientError(EhrError):
    """An error answer of the identity service (via ``IdentityClient``)."""


class ConsentClientError(EhrError):
    """An error answer of the consent service (via ``ConsentClient``)."""


class RecordsClientError(EhrError):
    """An error answer of the record store (via ``RecordsClient``)."""


class ApiError(EhrError):
    """An error answer of audit-analytics or the ledger relay (``AuditClient``,
    ``LedgerClient``)."""


_BY_STATUS: Mapping[int, type[EhrError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    408: RequestRejected,
    409: Conflict,
    410: Gone,
    413: RequestRejected,
    415: RequestRejected,
    422: ValidationError,
    503: ServiceUnavailable,
}


def error_kind(status: int) -> type[EhrError]:
    """The subclass an error answer with ``status`` becomes."""
    kind = _BY_STATUS.get(status)
    if kind is not None:
        return kind
    return ServerError if status >= 500 else EhrError


_FAMILY_KINDS: dict[tuple[type[EhrError], type[EhrError]], type[EhrError]] = {}


def _in_family(kind: type[EhrError], family: type[EhrError]) -> type[EhrError]:
    """``kind`` that is also a ``family`` error (e.g. a NotFound of the identity client),
    made once per pair so ``type(error)`` is stable."""
    if family is EhrError or issubclass(kind, family):
        return kind
    combined = _FAMILY_KINDS.get((kind, family))
    if combined is None:
        combined = type(kind.__name__, (kind, family), {"__module__": __name__})
        _FAMILY_KINDS[(kind, family)] = combined
    return combined


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


def error_from_response(response: httpx.Response, family: type[EhrError] = EhrError) -> EhrError:
    """The exception for an error answer (status >= 400), parsed from the shared error
    body; a body that is not that shape keeps the status with code ``http_error``."""
    body: Any
    request_id: str | None = response.headers.get("x-request-id")
    details: Any = None
    try:
        body = response.json()
        error = body["error"]
        code, message = str(error["code"]), str(error["message"])
        request_id = error.get("request_id") or request_id
        details = error.get("details")
    except (ValueError, KeyError, TypeError, AttributeError):
        body, code, message = response.text, "http_error", response.text[:200]
    kind = _in_family(error_kind(response.status_code), family)
    extra: dict[str, Any] = {}
    if issubclass(kind, ServiceUnavailable):
        extra["retry_after"] = _retry_after(response)
    return kind(
        response.status_code,
        code,
        message,
        body,
        request_id=request_id,
        details=details,
        **extra,
    )


class ApiClient:
    """Sends one client's requests: base URL, timeout, bearer token, error answers turned
    into ``EhrError`` subclasses (of ``family`` too), transport failures into
    ``TransportError``. ``http`` is the underlying ``httpx.Client`` (pass one to share a
    connection pool or a custom transport)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        http: httpx.Client | None = None,
        token: str | None = None,
        family: type[EhrError] = EhrError,
    ) -> None:
        self.http = http or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)
        self.token = token
        self.family = family

    def close(self) -> None:
        self.http.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """The successful response; raises ``EhrError`` (a subclass) otherwise. ``token``
        overrides the client's own bearer token for this request."""
        bearer = token if token is not None else self.token
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        try:
            response = self.http.request(method, path, json=json, params=params, headers=headers)
        except httpx.RequestError as exc:
            raise TransportError(f"{method} {path}: {exc}", request=_request_of(exc)) from exc
        if response.status_code >= 400:
            raise error_from_response(response, self.family)
        return response

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """The decoded JSON of the successful response (None when it has no body)."""
        response = self.send(method, path, token=token, json=json, params=params)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            kind = _in_family(InvalidResponse, self.family)
            raise kind(
                response.status_code,
                "invalid_response",
                f"{method} {path}: the answer is not JSON",
                response.text,
                request_id=response.headers.get("x-request-id"),
            ) from exc


def _request_of(exc: httpx.RequestError) -> httpx.Request | None:
    try:
        return exc.request
    except RuntimeError:
        return None


__all__ = [
    "ApiClient",
    "ApiError",
    "AuthenticationError",
    "BadRequest",
    "Conflict",
    "ConsentClientError",
    "EhrError",
    "Gone",
    "IdentityClientError",
    "InvalidResponse",
    "NotFound",
    "PermissionDenied",
    "RecordsClientError",
    "RequestRejected",
    "ServerError",
    "ServiceUnavailable",
    "TransportError",
    "ValidationError",
    "error_from_response",
    "error_kind",
]
