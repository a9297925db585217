"""Domain errors -> HTTP errors of the shared error body, and the OpenAPI entries that
document them per route."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.platform.app.errors import (
    Conflict,
    ErrorMap,
    Forbidden,
    Gone,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    ServiceUnavailable,
    ValidationFailed,
)
from services.platform.app.openapi import ResponsesDoc, error_responses
from services.record_store.domain import errors


class RetryLater(ServiceUnavailable):
    """503 with ``Retry-After``: the request will succeed once the record store has read
    what identity already published (``ProviderVerificationPending``)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        retry = {"Retry-After": str(errors.ProviderVerificationPending.retry_after_seconds)}
        super().__init__(message, code=code, details=details, headers={**retry, **(headers or {})})


ERROR_MAP: ErrorMap = {
    errors.InvalidUpload: ValidationFailed,
    errors.PayloadTooLarge: PayloadTooLarge,
    errors.UnknownAccount: ValidationFailed,
    errors.RecordNotFound: NotFound,
    errors.RecordExists: Conflict,
    errors.RecordShredded: Gone,
    errors.NotAllowed: Forbidden,
    errors.KeyNotAvailable: Conflict,
    errors.ProviderVerificationPending: RetryLater,
    errors.DependencyUnavailable: ServiceUnavailable,
}

Raised = type[errors.RecordStoreError] | tuple[type[errors.RecordStoreError], str]
"""A domain error a route can raise, or one with the specific ``code`` its raise site
gives."""


class _RoleNotAllowed(Forbidden):
    code = "role_not_allowed"


class _SigningKeysUnavailable(ServiceUnavailable):
    code = "signing_keys_unavailable"


class _BodyInvalid(ValidationFailed):
    code = "validation_failed"


# A route that declares 403, 422 or 503 itself replaces the shared entry, so it names the
# token check's and the schema's codes for those statuses too.
_SHARED_CODES: tuple[type[ServiceError], ...] = (
    _RoleNotAllowed,
    _SigningKeysUnavailable,
    _BodyInvalid,
)


def _http_error(raised: Raised) -> type[ServiceError]:
    """The HTTP error class a domain error is answered as, carrying its code."""
    error, code = raised if isinstance(raised, tuple) else (raised, raised.code)
    for kind in error.__mro__:
        target = ERROR_MAP.get(kind)
        if target is not None:
            return type(error.__name__, (target,), {"code": code})
    raise KeyError(f"{error.__name__} is not in the record store's error map")


def documented(*raised: Raised) -> ResponsesDoc:
    """``responses=`` of a route that can raise ``raised``: each answered as its error
    map entry says, with the shared codes of the same statuses."""
    http = [_http_error(r) for r in raised]
    statuses = {int(e.status) for e in http}
    shared = [e for e in _SHARED_CODES if int(e.status) in statuses]
    responses = error_responses(*http, *shared)
    if errors.ProviderVerificationPending in raised:
        responses[503]["headers"] = {
            "Retry-After": {
                "description": "seconds to wait before retrying (provider_verification_pending)",
                "schema": {"type": "integer"},
            }
        }
    return responses
