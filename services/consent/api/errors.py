"""Domain errors -> HTTP errors of the shared error body, and the OpenAPI entries that
document them per route."""

from __future__ import annotations

from services.consent.domain.errors import (
    BadSignature,
    ChangeQuarantined,
    ConsentError,
    ExpiryTooFar,
    InvalidMessage,
    MessageExpired,
    NonceMismatch,
    NotOwnConsent,
    RegistryUnavailable,
    RejectedByChain,
    UnknownAccount,
)
from services.platform.app.errors import (
    Conflict,
    ErrorMap,
    Forbidden,
    NotFound,
    ServiceError,
    ServiceUnavailable,
    ValidationFailed,
)
from services.platform.app.openapi import ResponsesDoc, error_responses

ERROR_MAP: ErrorMap = {
    BadSignature: ValidationFailed,
    MessageExpired: ValidationFailed,
    ExpiryTooFar: ValidationFailed,
    InvalidMessage: ValidationFailed,
    NonceMismatch: Conflict,
    UnknownAccount: NotFound,
    NotOwnConsent: Forbidden,
    RejectedByChain: Conflict,
    ChangeQuarantined: Conflict,
    RegistryUnavailable: ServiceUnavailable,
}


class _RoleNotAllowed(Forbidden):
    code = "role_not_allowed"


class _SigningKeysUnavailable(ServiceUnavailable):
    code = "signing_keys_unavailable"


# A route that declares 403 or 503 itself replaces the shared entry, so it names the
# token check's codes for those statuses too.
_TOKEN_CODES: tuple[type[ServiceError], ...] = (_RoleNotAllowed, _SigningKeysUnavailable)


def _http_error(error: type[ConsentError] | type[ServiceError]) -> type[ServiceError]:
    """The HTTP error class ``error`` is answered as, carrying its own code."""
    if issubclass(error, ServiceError):
        return error
    for kind in error.__mro__:
        target = ERROR_MAP.get(kind)
        if target is not None:
            return type(error.__name__, (target,), {"code": error.code})
    raise KeyError(f"{error.__name__} is not in the consent error map")


def documented(*errors: type[ConsentError] | type[ServiceError]) -> ResponsesDoc:
    """``responses=`` of a token-protected route that can raise ``errors`` (domain errors
    or HTTP errors), with the token check's codes of the same statuses."""
    http = [_http_error(e) for e in errors]
    statuses = {int(e.status) for e in http}
    shared = [e for e in _TOKEN_CODES if int(e.status) in statuses]
    return error_responses(*http, *shared)


BODY_ERRORS: tuple[type[ServiceError], ...] = (ValidationFailed,)
"""A route with a body that declares 422 itself names the schema's code as well."""
