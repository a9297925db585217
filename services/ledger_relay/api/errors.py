"""Domain errors of the ledger relay mapped to HTTP errors (the only place that does so)."""

from __future__ import annotations

from services.ledger_relay.domain.errors import (
    CheckpointNotFound,
    EventNotFound,
    InvalidRange,
    NotYetAnchored,
)
from services.platform.app.errors import Conflict, NotFound, ServiceError, ValidationFailed
from services.platform.app.openapi import ResponsesDoc, error_responses

ERROR_MAP: dict[type[Exception], type[ServiceError]] = {
    EventNotFound: NotFound,
    CheckpointNotFound: NotFound,
    NotYetAnchored: Conflict,
    InvalidRange: ValidationFailed,
}


def answers(*errors: type[Exception]) -> ResponsesDoc:
    """The ``responses`` entry of a route whose use case raises ``errors``: each as the
    HTTP error ``ERROR_MAP`` makes of it, with the domain error's own code (the shared
    layers' codes of the same status are merged in by the app factory)."""
    documented: list[type[ServiceError]] = []
    for error in errors:
        target = ERROR_MAP[error]
        code: str = getattr(error, "code", target.code)
        documented.append(type(error.__name__, (target,), {"code": code}))
    return error_responses(*documented)
