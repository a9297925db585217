"""Domain errors -> HTTP errors of the shared error body."""

from __future__ import annotations

from http import HTTPStatus

from services.platform.app.errors import (
    Conflict,
    ErrorMap,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    ServiceUnavailable,
    ValidationFailed,
)
from services.record_store.domain import errors


class Gone(ServiceError):
    """The resource existed and was destroyed (410)."""

    status = HTTPStatus.GONE
    code = "gone"


ERROR_MAP: ErrorMap = {
    errors.InvalidUpload: ValidationFailed,
    errors.PayloadTooLarge: PayloadTooLarge,
    errors.UnknownAccount: ValidationFailed,
    errors.RecordNotFound: NotFound,
    errors.RecordExists: Conflict,
    errors.RecordShredded: Gone,
    errors.NotAllowed: Forbidden,
    errors.KeyNotAvailable: Conflict,
    errors.DependencyUnavailable: ServiceUnavailable,
}
