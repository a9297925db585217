"""Domain errors of audit-analytics mapped to HTTP errors (the only place that does so)."""

from __future__ import annotations

from services.audit_analytics.domain.errors import (
    EventNotFound,
    FindingNotFound,
    InvalidQuery,
    NotYetAnchored,
    ProofsUnavailable,
)
from services.platform.app.errors import (
    BadRequest,
    Conflict,
    NotFound,
    ServiceError,
    ServiceUnavailable,
)

ERROR_MAP: dict[type[Exception], type[ServiceError]] = {
    EventNotFound: NotFound,
    FindingNotFound: NotFound,
    NotYetAnchored: Conflict,
    InvalidQuery: BadRequest,
    ProofsUnavailable: ServiceUnavailable,
}
