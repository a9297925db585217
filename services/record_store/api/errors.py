"""Domain errors -> HTTP errors of the shared error body."""

from __future__ import annotations

from services.platform.app.errors import (
    Conflict,
    ErrorMap,
    Forbidden,
    Gone,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationFailed,
)
from services.record_store.domain import errors

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
