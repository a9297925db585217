"""Domain errors -> HTTP errors of the shared error body."""

from __future__ import annotations

from services.consent.domain.errors import (
    BadSignature,
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
    ServiceUnavailable,
    ValidationFailed,
)

ERROR_MAP: ErrorMap = {
    BadSignature: ValidationFailed,
    MessageExpired: ValidationFailed,
    InvalidMessage: ValidationFailed,
    NonceMismatch: Conflict,
    UnknownAccount: NotFound,
    NotOwnConsent: Forbidden,
    RejectedByChain: Conflict,
    RegistryUnavailable: ServiceUnavailable,
}
