"""The proofs API over the composition root on the embedded default (embedded log,
in-process EVM, SQLite), through httpx's ASGI transport with tokens signed at run time.

The runtime is started twice on one data directory: first with a policy that never
cuts (events are in the log but not anchored: 409), then with short checkpoints.
The second start gets a fresh in-process chain, so it also shows that a new
contract makes the relay forget the old checkpoints and anchor the whole log anew.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ledger_relay.conftest import make_event
from ledger_relay.tokens import TokenKey

from services.ledger_relay.domain.errors import ProofInvalid
from services.ledger_relay.domain.merkle import verify_consistency
from services.ledger_relay.main import LedgerRelayRuntime, LedgerRelaySettings
from services.ledger_relay.verify import verify_event
from services.platform.bus.port import Message, TopicSpec
from services.platform.bus.process import ProcessConsumer
from services.platform.events.envelope import decode


async def _until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _settings(
    data_dir: Path, keys: TokenKey, topics: list[str], **extra: Any
) -> LedgerRelaySettings:
    return LedgerRelaySettings(
        jwt=keys.jwt_settings(),
        data_dir=data_dir,
        topics=topics,
        consumer_group="ledger-relay-api",
        **extra,
    )


async def _publish(runtime: LedgerRelayRuntime, topics: list[str], events: list[bytes]) -> None:
    await runtime.bus.create_topics([TopicSpec(t, 3) for t in topics])
    await runtime.bus.publish_many(
        [Message(topics[i % len(topics)], f"k{i % 5}", raw) for i, raw in enumerate(events)]
    )


class Api:
    def __init__(self, runtime: LedgerRelayRuntime, keys: TokenKey, events: list[bytes]) -> None:
        self.runtime = runtime
        self.keys = keys
        self.events = events
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=runtime.app), base_url="http://ledger"
        )

    async def get(self, path: str, role: str = "auditor", **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=self.keys.headers(role))


@pytest.fixture(scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    async for harness in anchored_api(tmp_path_factory.mktemp("ledger-api")):
        yield harness


async def anchored_api(data_dir: Path) -> AsyncIterator[Api]:
    """The runtime on ``data_dir`` with three rounds of events anchored (see the module
    docstring), and a client of its API."""
    keys = TokenKey()
    suffix = uuid.uuid4().hex[:8]
    topics = [f"test.apia{suffix}.v1", f"test.apib{suffix}.v1"]
    events = [make_event(i) for i in range(230)]

    waiting = LedgerRelayRuntime(
        _settings(data_dir, keys, topics, checkpoint_events=10**6, checkpoint_interval_ms=10**8)
    )
    await waiting.start()
    try:
        await _publish(waiting, topics, events)
        await _until(lambda: waiting.relay.tree_size == len(events), 30, "events consumed")
        unanchored = Api(waiting, keys, events)
        response = await unanchored.get(f"/proofs/events/{decode(events[3]).id}")
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "not_yet_anchored"
        response = await unanchored.get("/checkpoints/latest")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "checkpoint_not_found"
        await unanchored.client.aclose()
    finally:
        await waiting.stop()
        waiting.close()

    runtime = LedgerRelayRuntime(
        _settings(data_dir, keys, topics, checkpoint_events=100, checkpoint_interval_ms=200)
    )
    await runtime.start()
    harness = Api(runtime, keys, events)
    try:
        await _until(lambda: runtime.relay.anchored_size == len(events), 60, "first anchored")
        for round_ in range(2):  # later events: later checkpoints
            more = [make_event(1000 * (round_ + 1) + i) for i in range(70)]
            await _publish(runtime, topics, more)
            events.extend(more)
            await _until(
                lambda: runtime.relay.anchored_size == len(events), 60, "every event anchored"
            )
        yield harness
    finally:
        await harness.client.aclose()
        await runtime.stop()
        runtime.close()


async def test_every_event_has_an_inclusion_proof_that_verifies_against_the_chain(
    api: Api,
) -> None:
    anchor = api.runtime.anchor
    for raw in [*api.events[:: len(api.events) // 9], api.events[-1]]:
        response = await api.get(f"/proofs/events/{decode(raw).id}")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["contract"] == {"chain_id": anchor.chain_id, "address": anchor.address}
        verified = verify_event(raw, body, anchor)
        assert verified.tree_size == body["checkpoint"]["tree_size"]
        assert verified.leaf_index < verified.tree_size
        with pytest.raises(ProofInvalid):
            verify_event(raw + b"x", body, anchor)


async def test_leaves_keep_their_positions_across_the_restart(api: Api) -> None:
    indices = set()
    for raw in api.events:
        body = (await api.get(f"/proofs/events/{decode(raw).id}", role="admin")).json()
        indices.add(body["leaf_index"])
    assert indices == set(range(len(api.events)))
    assert api.runtime.repository.tree_size() == len(api.events)


async def test_checkpoints_are_listed_as_the_chain_holds_them(api: Api) -> None:
    anchor = api.runtime.anchor
    body = (await api.get("/checkpoints", limit=1000)).json()
    listed = body["checkpoints"]
    assert len(listed) == anchor.count() >= 2
    sizes = [c["tree_size"] for c in listed]
    assert sizes == sorted(set(sizes)) and sizes[-1] == len(api.events)
    for entry in listed:
        on_chain = anchor.checkpoint_at(entry["index"])
        assert (on_chain.tree_size, on_chain.root.hex()) == (entry["tree_size"], entry["root"])
        assert anchor.find_anchor(entry["index"]).tx_hash == entry["tx_hash"]
    page = (await api.get("/checkpoints", from_index=1, limit=1)).json()["checkpoints"]
    assert page == listed[1:2]
    latest = (await api.get("/checkpoints/latest", role="service")).json()
    assert latest == listed[-1]


async def test_consistency_proofs_between_sizes_verify(api: Api) -> None:
    listed = (await api.get("/checkpoints")).json()["checkpoints"]
    first, last = listed[0], listed[-1]
    for from_size in (1, first["tree_size"], last["tree_size"] - 1, last["tree_size"]):
        response = await api.get(
            "/proofs/consistency", from_size=from_size, to_size=last["tree_size"]
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["to_root"] == last["root"]
        verify_consistency(
            from_size,
            last["tree_size"],
            bytes.fromhex(body["from_root"]),
            bytes.fromhex(body["to_root"]),
            [bytes.fromhex(p) for p in body["proof"]],
        )
    assert body is not None
    assert (
        await api.get(
            "/proofs/consistency", from_size=first["tree_size"], to_size=first["tree_size"]
        )
    ).json()["from_root"] == first["root"]


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"from_size": 0, "to_size": 100}, 422, "validation_failed"),
        ({"from_size": 5}, 422, "validation_failed"),
        ({"from_size": "x", "to_size": 100}, 422, "validation_failed"),
        ({"from_size": 101, "to_size": 100}, 422, "invalid_range"),
        ({"from_size": 1, "to_size": 99}, 404, "checkpoint_not_found"),
        ({"from_size": 1, "to_size": 10**9}, 404, "checkpoint_not_found"),
    ],
)
async def test_bad_consistency_requests_get_clear_errors(
    api: Api, params: dict[str, Any], status: int, code: str
) -> None:
    response = await api.get("/proofs/consistency", **params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code


async def test_unknown_event_is_404(api: Api) -> None:
    response = await api.get(f"/proofs/events/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "event_not_found"


async def test_only_auditors_admins_and_services_may_read(api: Api) -> None:
    event_id = decode(api.events[0]).id
    path = f"/proofs/events/{event_id}"
    assert (await api.client.get(path)).status_code == 401
    for role in ("patient", "provider"):
        refused = await api.get(path, role=role)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "role_not_allowed"
    wrong_audience = await api.client.get(path, headers=api.keys.headers("auditor", aud="consent"))
    assert wrong_audience.status_code == 401
    expired = await api.client.get(
        path, headers=api.keys.headers("auditor", exp=int(time.time()) - 3600)
    )
    assert expired.status_code == 401
    for role in ("auditor", "admin", "service"):
        assert (await api.get(path, role=role)).status_code == 200


async def test_openapi_lists_the_routes(api: Api) -> None:
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    for path in (
        "/proofs/events/{event_id}",
        "/proofs/consistency",
        "/checkpoints",
        "/checkpoints/latest",
    ):
        assert "get" in paths[path]
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200, ready.text


async def test_the_runtime_gives_back_the_collection_threshold_it_set(tmp_path: Path) -> None:
    """The threshold is process-wide: code running after the relay (in tests, a benchmark's
    bare consumer) must not inherit it."""
    before = gc.get_threshold()
    runtime = LedgerRelayRuntime(
        _settings(tmp_path, TokenKey(), ["test.gc.v1"], gc_threshold=before[0] + 12_345)
    )
    await runtime.start()
    try:
        assert gc.get_threshold() == (before[0] + 12_345, *before[1:])
    finally:
        await runtime.stop()
        runtime.close()
    assert gc.get_threshold() == before


def test_the_fetch_settings_reach_the_consumer_process(tmp_path: Path) -> None:
    """With Kafka and ``fetch_process``, the relay reads through a child process whose
    batch size and prefetch depth come from the settings (nothing is started here)."""
    runtime = LedgerRelayRuntime(
        _settings(
            tmp_path,
            TokenKey(),
            ["test.fetch.v1"],
            kafka_bootstrap_servers="127.0.0.1:9",
            fetch_max_records=321,
            fetch_prefetch=7,
        )
    )
    try:
        factory = runtime._consumer_factory()
        assert factory is not None
        consumer = factory("g", ["test.fetch.v1"])
        assert isinstance(consumer, ProcessConsumer)
        assert (consumer.max_records, consumer.prefetch) == (321, 7)
        assert (consumer.bootstrap_servers, consumer.group) == ("127.0.0.1:9", "g")
    finally:
        runtime.close()
