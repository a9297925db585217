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
from services.platform.app.openapi import ResponsesDoc, error_responses
from services.platform.chain.errors import ChainError


class ChainUnreadable(ServiceUnavailable):
    """The chain cannot be read (verification needs the anchored roots)."""

    code = "chain_unavailable"
    default_message = "the chain cannot be read"


ERROR_MAP: dict[type[Exception], type[ServiceError]] = {
    EventNotFound: NotFound,
    FindingNotFound: NotFound,
    NotYetAnchored: Conflict,
    InvalidQuery: BadRequest,
    ProofsUnavailable: ServiceUnavailable,
    ChainError: ChainUnreadable,
}


def answers(*errors: type[Exception]) -> ResponsesDoc:
    """The ``responses`` entry of a route whose use case raises ``errors``: each as the
    HTTP error ``ERROR_MAP`` makes of it, with the domain error's own code."""
    documented: list[type[ServiceError]] = []
    for error in errors:
        target = ERROR_MAP[error]
        code: str = getattr(error, "code", target.code)
        documented.append(type(error.__name__, (target,), {"code": code}))
    return error_responses(*documented)
