"""``EventProofs`` adapters: the relay's ``ProofService`` in one process, or its HTTP API.

``DirectEventProofs`` is the one adapter of this service that imports the ledger relay
(its repository read directly: the embedded stack, and ``EHR_LEDGER_DATABASE_URL``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from services.audit_analytics.domain.errors import NotYetAnchored, ProofsUnavailable
from services.audit_analytics.domain.ports import EventProofs
from services.ledger_relay.domain import errors as relay_errors
from services.ledger_relay.domain.proofs import ProofService
from services.ledger_relay.verify import inclusion_to_json
from services.platform.app.service_token import BearerHttp, CallableTokens


class DirectEventProofs(EventProofs):
    """The relay's proof use cases over its repository (embedded default, tests, benchmarks)."""

    def __init__(self, service: ProofService) -> None:
        self._service = service

    def inclusion(self, event_id: str) -> dict[str, Any] | None:
        try:
            return inclusion_to_json(self._service.inclusion(event_id))
        except relay_errors.EventNotFound:
            return None
        except relay_errors.NotYetAnchored as error:
            raise NotYetAnchored(str(error)) from error

    def latest_checkpoint(self) -> dict[str, Any] | None:
        try:
            c = self._service.latest()
        except relay_errors.CheckpointNotFound:
            return None
        return {
            "index": c.index,
            "tree_size": c.tree_size,
            "root": c.root.hex(),
            "tx_hash": c.tx_hash,
            "block_number": c.block_number,
        }

    def consistency(self, from_size: int, to_size: int) -> dict[str, Any]:
        try:
            found = self._service.consistency_between_sizes(from_size, to_size)
        except relay_errors.LedgerError as error:  # as the HTTP adapter: no answer
            raise ProofsUnavailable(f"the ledger relay has no such proof: {error}") from error
        return {"from_root": found.from_root.hex(), "proof": [p.hex() for p in found.proof]}


class HttpEventProofs(EventProofs):
    """The relay's ``/proofs`` and ``/checkpoints`` API, with a service token.

    ``token()`` is asked on every call (it reads ``EHR_LEDGER_TOKEN_FILE``), and once more
    after the relay answers 401, so a token file replaced after identity rotated and
    retired its key is taken up by the request that found the old token refused.
    """

    def __init__(
        self,
        base_url: str,
        token: Callable[[], str],
        *,
        client: httpx.Client | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self._http = BearerHttp(
            client or httpx.Client(base_url=base_url, timeout=timeout_s),
            "ledger",
            CallableTokens(token),
        )

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, **params: Any) -> httpx.Response:
        try:
            return self._http.get(path, params=params)
        except httpx.HTTPError as error:
            raise ProofsUnavailable(f"the ledger relay cannot be reached: {error!r}") from error

    @staticmethod
    def _fail(response: httpx.Response) -> ProofsUnavailable:
        if response.status_code == 401:
            return ProofsUnavailable(
                "the ledger relay refused the service token (401, twice): replace the "
                "token in EHR_LEDGER_TOKEN_FILE"
            )
        return ProofsUnavailable(f"the ledger relay answered {response.status_code}")

    def inclusion(self, event_id: str) -> dict[str, Any] | None:
        response = self._get(f"/proofs/events/{event_id}")
        if response.status_code == 404:
            return None
        if response.status_code == 409:
            raise NotYetAnchored(f"event {event_id} is not anchored yet")
        if response.status_code != 200:
            raise self._fail(response)
        body: dict[str, Any] = response.json()
        return body

    def latest_checkpoint(self) -> dict[str, Any] | None:
        response = self._get("/checkpoints/latest")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response)
        body: dict[str, Any] = response.json()
        return body

    def consistency(self, from_size: int, to_size: int) -> dict[str, Any]:
        response = self._get("/proofs/consistency", from_size=from_size, to_size=to_size)
        if response.status_code != 200:
            raise self._fail(response)
        body: dict[str, Any] = response.json()
        return body
