"""``/proofs`` and ``/checkpoints``: for auditors, administrators and services.

Every number a caller gives is a 64-bit signed integer at most (what the log's storage
holds), refused with 422 before the log is asked; every route declares its answer's
model and its own errors in the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from services.ledger_relay.api.errors import answers
from services.ledger_relay.api.schemas import (
    AnchorContract,
    CheckpointBody,
    CheckpointList,
    ConsistencyProofBody,
    InclusionProofBody,
)
from services.ledger_relay.domain.errors import (
    CheckpointNotFound,
    EventNotFound,
    InvalidRange,
    NotYetAnchored,
)
from services.ledger_relay.domain.proofs import ProofService
from services.platform.app.auth import Principal, require_role
from services.platform.app.bounds import NonNegativeInt64, PositiveInt64

READER_ROLES = ("auditor", "admin", "service")
MAX_CHECKPOINTS = 1000

Reader = Annotated[Principal, Depends(require_role(*READER_ROLES))]
TreeSize = Annotated[PositiveInt64, Query(description="a number of leaves")]


def proofs_router(service: ProofService, contract: AnchorContract) -> APIRouter:
    """The API over ``service``; ``contract`` says where the checkpoints are anchored."""
    router = APIRouter(tags=["ledger"])

    @router.get(
        "/proofs/events/{event_id}",
        response_model=InclusionProofBody,
        responses=answers(EventNotFound, NotYetAnchored),
    )
    def inclusion(
        _: Reader, event_id: Annotated[str, Path(min_length=1, max_length=64)]
    ) -> InclusionProofBody:
        """Inclusion proof of an event in the first anchored checkpoint that covers it.

        404 ``event_not_found``; 409 ``not_yet_anchored`` while no anchored
        checkpoint covers the event (ask again later).
        """
        return InclusionProofBody.of(service.inclusion(event_id), contract)

    @router.get(
        "/proofs/consistency",
        response_model=ConsistencyProofBody,
        responses=answers(CheckpointNotFound, InvalidRange),
    )
    def consistency(_: Reader, from_size: TreeSize, to_size: TreeSize) -> ConsistencyProofBody:
        """Proof that the tree of ``from_size`` leaves is a prefix of the anchored
        checkpoint of ``to_size`` leaves (422 ``invalid_range`` when
        ``from_size > to_size``; 404 ``checkpoint_not_found`` when no anchored
        checkpoint has ``to_size`` leaves)."""
        return ConsistencyProofBody.of(
            service.consistency_between_sizes(from_size, to_size), contract
        )

    @router.get("/checkpoints", response_model=CheckpointList)
    def checkpoints(
        _: Reader,
        from_index: Annotated[NonNegativeInt64, Query(description="the first index")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_CHECKPOINTS)] = 100,
    ) -> CheckpointList:
        """Anchored checkpoints in index order, from ``from_index``."""
        found = service.checkpoints(from_index, limit)
        return CheckpointList(checkpoints=[CheckpointBody.of(c) for c in found], contract=contract)

    @router.get(
        "/checkpoints/latest",
        response_model=CheckpointBody,
        responses=answers(CheckpointNotFound),
    )
    def latest(_: Reader) -> CheckpointBody:
        """The latest anchored checkpoint (404 ``checkpoint_not_found`` before the first)."""
        return CheckpointBody.of(service.latest())

    return router
