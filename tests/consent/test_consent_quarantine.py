"""A projection never wedges on one bad record: a registry log the projection cannot
hold (here: logs as an older or faulty registry deployment could have left them, made on
the real chain by ``contracts/test/ConsentEventEmitter.sol``) is quarantined, listed for
an admin, counted and logged; the chain sync goes on to apply later good logs;
``/readyz`` reports the service degraded; and the service starts with quarantined rows
present. Both backends (in-process chain, and Geth with PostgreSQL and Kafka)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from consent.harness import HOUR, Harness
from eth_account import Account

from services.consent.main import ConsentRuntime, ConsentSettings
from services.platform.app.factory import metrics_app
from services.platform.chain.artifacts import load_artifact
from services.platform.chain.port import DeployedContract

TREATMENT, LABS, IMAGING = 1, 1, 2


def _settings_like(h: Harness, data_dir: Path, registry_address: str) -> ConsentSettings:
    """The harness's settings with a fresh database and data dir, syncing from
    ``registry_address``."""
    base = h.runtime.settings
    update: dict[str, object] = {
        "data_dir": data_dir,
        "registry_address": registry_address,
        "identity_consumer_group": f"consent-identity-{uuid.uuid4().hex[:8]}",
    }
    if base.database_url is not None:
        url = sa.make_url(base.database_url)
        database = f"consent_q_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{database}"'))
        admin.dispose()
        update["database_url"] = url.set(database=database).render_as_string(hide_password=False)
    return base.model_copy(update=update)


@asynccontextmanager
async def started(h: Harness, settings: ConsentSettings) -> AsyncIterator[ConsentRuntime]:
    """A second consent runtime on the harness's chain (shared when in-process)."""
    shared = h.runtime.chain if not settings.chain_rpc_urls else None
    runtime = ConsentRuntime(settings, chain=shared)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
        runtime.close()


async def _get(runtime: ConsentRuntime, path: str, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=runtime.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://consent") as client:
        return await client.get(path, headers=headers)


async def _scrape(runtime: ConsentRuntime) -> httpx.Response:
    """The service's metrics port: its app has no ``/metrics``."""
    transport = httpx.ASGITransport(app=metrics_app(runtime.app.state.metrics_registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://consent") as client:
        return await client.get("/metrics")


def _emit(h: Harness, emitter: DeployedContract, fn: str, *args: object) -> str:
    receipt = h.runtime.chain.transact(emitter, fn, *args, sender=h.runtime.relay_account)
    return receipt.tx_hash


async def _synced_through(runtime: ConsentRuntime, block: int) -> None:
    deadline = time.monotonic() + 60
    while int(runtime.repository.get_state("reconciled_through_block") or "-1") < block:
        assert time.monotonic() < deadline, "the chain sync did not reach the block"
        await runtime.sync()


async def test_a_log_the_projection_cannot_hold_is_quarantined_not_fatal(
    consent: Harness, tmp_path: Path
) -> None:
    h = consent
    chain = h.runtime.chain
    emitter = chain.deploy(load_artifact("ConsentEventEmitter"), h.runtime.relay_account)
    patient, grantee, other = (Account.create().address for _ in range(3))
    now = int(h.chain_time())
    poison = [
        # The hostile tester's grant: an expiry no database column or event holds.
        _emit(h, emitter, "emitGranted", patient, grantee, TREATMENT, LABS, 2**64 - 1, 0),
        # A purpose id that does not exist.
        _emit(h, emitter, "emitRevoked", patient, grantee, 0, LABS, 0, 1),
    ]
    scope = (TREATMENT, LABS | IMAGING, now + HOUR, 0)
    good = _emit(h, emitter, "emitGranted", other, grantee, *scope)
    settings = _settings_like(h, tmp_path / "quarantine", emitter.address)
    admin = h.headers("operator-1", "admin")

    async with started(h, settings) as runtime:
        listed = runtime.repository.quarantined(100)
        assert [q.tx_hash for q in listed] == poison
        assert [q.kind for q in listed] == ["granted", "revoked"]
        assert "expiry" in listed[0].reason and "purpose" in listed[1].reason
        row = runtime.repository.grant(other, grantee, TREATMENT)
        assert row is not None and row.position.tx_hash == good
        assert row.categories == LABS | IMAGING

        # The sync goes on past them: a later good log is applied.
        later = _emit(h, emitter, "emitRevoked", other, grantee, TREATMENT, LABS, IMAGING, 1)
        await _synced_through(runtime, chain.block_number())
        row = runtime.repository.grant(other, grantee, TREATMENT)
        assert row is not None and (row.position.tx_hash, row.categories) == (later, IMAGING)
        assert runtime.sync_failure is None

        ready = await _get(runtime, "/readyz", {})
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["projection"].startswith("degraded: 2 registry log")

        response = await _get(runtime, "/consent/quarantine", admin)
        assert response.status_code == 200, response.text
        assert [(q["transaction_hash"], q["log_index"]) for q in response.json()] == [
            (q.tx_hash, q.log_index) for q in listed
        ]
        assert {q["block_number"] for q in response.json()} == {q.block_number for q in listed}
        refused = await _get(runtime, "/consent/quarantine", h.headers("patient-1", "patient"))
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "role_not_allowed"

        metrics = (await _scrape(runtime)).text
        assert 'consent_quarantined_logs_total{kind="granted"} 1.0' in metrics
        assert 'consent_quarantined_logs_total{kind="revoked"} 1.0' in metrics

    # It starts again with the quarantined rows present, and stays degraded.
    async with started(h, settings) as runtime:
        assert len(runtime.repository.quarantined(100)) == 2
        ready = await _get(runtime, "/readyz", {})
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded"
        row = runtime.repository.grant(other, grantee, TREATMENT)
        assert row is not None and row.position.tx_hash == later


@pytest.mark.parametrize("role", ["patient", "provider", "service", "auditor"])
async def test_only_an_admin_lists_the_quarantine(consent: Harness, role: str) -> None:
    response = await consent.client.get(
        "/consent/quarantine", headers=consent.headers(f"{role}-1", role)
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "role_not_allowed"
