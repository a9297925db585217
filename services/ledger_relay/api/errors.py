"""Domain errors of the ledger relay mapped to HTTP errors (the only place that does so)."""

from __future__ import annotations

from services.ledger_relay.domain.errors import (
    CheckpointNotFound,
    EventNotFound,
    InvalidRange,
    NotYetAnchored,
)
from services.platform.app.errors import Conflict, NotFound, ServiceError, ValidationFailed

ERROR_MAP: dict[type[Exception], type[ServiceError]] = {
    EventNotFound: NotFound,
    CheckpointNotFound: NotFound,
    NotYetAnchored: Conflict,
    InvalidRange: ValidationFailed,
}
