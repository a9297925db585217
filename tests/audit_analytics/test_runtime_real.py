"""The composition root on the real stack: Kafka, PostgreSQL, the relay's repository
read directly and the chain read over plain JSON-RPC (no key), through the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from audit_analytics import events as ev
from audit_analytics.conftest import AuditStack, until
from devstack.stack import Stack
from ledger_relay.tokens import TokenKey

from services.audit_analytics.main import AuditAnalyticsRuntime, AuditAnalyticsSettings
from services.platform.chain.geth import GethChain
from services.platform.events.envelope import decode

pytestmark = [pytest.mark.kafka, pytest.mark.geth, pytest.mark.postgres]


@pytest.mark.parametrize("audit_backends", ["real"], indirect=True)
async def test_runtime_on_the_real_stack(
    audit_stack: AuditStack, test_stack: Stack, tmp_path: Path
) -> None:
    raws = ev.workflow(3)
    await audit_stack.publish(raws)
    await audit_stack.run(len(raws))  # the relay anchors them (and a first store fills up)
    assert isinstance(audit_stack.chain, GethChain)
    keys = TokenKey()
    database = f"audit_rt_{audit_stack.prefix}"
    admin = sa.create_engine(audit_stack.audit_engine.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{database}"'))
    settings = AuditAnalyticsSettings(
        jwt={**keys.jwt_settings(), "audience": "audit-analytics"},
        data_dir=tmp_path,
        database_url=audit_stack.audit_engine.url.set(database=database).render_as_string(
            hide_password=False
        ),
        kafka_bootstrap_servers=test_stack.kafka.bootstrap_servers,
        topics=audit_stack.all_topics,
        anchored_topics=sorted(audit_stack.anchored_topics),
        consumer_group=f"audit-runtime-{audit_stack.prefix}",
        ledger_database_url=audit_stack.relay_engine.url.render_as_string(hide_password=False),
        ledger_consumer_group=audit_stack.relay_group,
        chain_rpc_urls=[audit_stack.chain.current_url],
        anchor_address=audit_stack.anchor.address,
        proof_interval_seconds=0.2,
        detect_interval_seconds=3600,
    )
    runtime = AuditAnalyticsRuntime(settings)
    await runtime.start()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.app), base_url="http://a")
    headers = keys.headers("auditor", aud="audit-analytics")

    async def get(path: str, **params: Any) -> httpx.Response:
        return await client.get(path, params=params, headers=headers)

    try:
        repo = runtime.repository
        await until(
            lambda: (
                len(repo.all_events()) >= len(raws)
                and not repo.without_proof(1, audit_stack.anchored_topics)
            ),
            60,
            "the runtime stored and proved every event",
        )
        event_id = decode(raws[1]).id
        verified = (await get(f"/events/{event_id}/verification")).json()
        assert verified["verified"] is True, verified
        result = (await client.post("/reconciliation", headers=headers)).json()
        assert result["ok"] is True, result["discrepancies"]
        page = (await get("/events", patient_id="pat-0", limit=2)).json()
        assert len(page["items"]) == 2 and page["next_cursor"] is not None
        now = datetime.now(UTC)
        report = (
            await get(
                "/reports/compliance",
                since=(now - timedelta(days=1)).isoformat(),
                until=(now + timedelta(minutes=1)).isoformat(),
            )
        ).json()
        assert report["attestation"]["verification_result"] == "verified", report["attestation"]
        mine = await client.get(
            "/me/access-report", headers=keys.headers("patient", sub="pat-2", aud="audit-analytics")
        )
        assert mine.status_code == 200
        assert {a["event_id"] for a in mine.json()["accesses"]} <= {
            decode(r).id for r in raws if decode(r).subject == "pat-2"
        }
    finally:
        await client.aclose()
        await runtime.stop()
        runtime.close()
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE "{database}" WITH (FORCE)'))
        admin.dispose()
