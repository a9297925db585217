"""Bad records on a real service's topic, through its composition root on the embedded
default: the audit store's consumer moves past them and the good events still land."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from audit_analytics import events as ev
from audit_analytics.conftest import until
from ehr.vocabulary.v1 import vocabulary_pb2
from ledger_relay.tokens import TokenKey

from services.audit_analytics.adapters.consumer import CONSUMER_NAME
from services.audit_analytics.adapters.proofs import DirectEventProofs
from services.audit_analytics.main import AuditAnalyticsRuntime, AuditAnalyticsSettings
from services.ledger_relay.main import LedgerRelayRuntime, LedgerRelaySettings
from services.ledger_relay.relay import DOMAIN_TOPICS
from services.platform.bus.port import Message, TopicSpec
from services.platform.bus.quarantine import quarantined
from services.platform.events.envelope import decode, encode

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def runtimes(tmp_path: Path) -> AsyncIterator[tuple[AuditAnalyticsRuntime, TokenKey]]:
    keys = TokenKey()
    relay = LedgerRelayRuntime(
        LedgerRelaySettings(jwt=keys.jwt_settings(), data_dir=tmp_path / "relay")
    )
    await relay.start()
    audit = AuditAnalyticsRuntime(
        AuditAnalyticsSettings(
            jwt={**keys.jwt_settings(), "audience": "audit-analytics"},
            data_dir=tmp_path / "audit",
            proof_interval_seconds=3600,
            detect_interval_seconds=3600,
        ),
        proofs=DirectEventProofs(relay.proofs),
        reader=relay.anchor,
        bus=relay.bus,
    )
    await audit.start()
    yield audit, keys
    await audit.stop()
    audit.close()
    await relay.stop()
    relay.close()


def with_unknown_role(raw: bytes) -> bytes:
    """A valid envelope whose actor role no vocabulary names."""
    envelope = decode(raw)
    envelope.actor.role = vocabulary_pb2.Role.ValueType(999)
    return encode(envelope)


def with_long_subject(raw: bytes) -> bytes:
    """A valid envelope with a NUL character in its correlation id."""
    envelope = decode(raw)
    envelope.correlation_id = "corr\x00elation"
    return encode(envelope)


async def test_the_audit_store_keeps_unstorable_events_as_positions_and_goes_on(
    runtimes: tuple[AuditAnalyticsRuntime, TokenKey],
) -> None:
    """Bytes that are not an event, an unknown role and a NUL character: each is kept as
    an undecodable position (its hash accounted for, as reconciliation expects), the good
    events after them are stored, nothing is quarantined and the service stays ready."""
    audit, _ = runtimes
    raws = ev.workflow(3)
    topic, key = ev.route(raws[0])
    bad = [b"\xff\x00 not an envelope", with_unknown_role(raws[0]), with_long_subject(raws[0])]
    await audit.bus.create_topics([TopicSpec(t, 3) for t in DOMAIN_TOPICS])
    await audit.bus.publish_many(
        [
            *(Message(topic, key, value) for value in bad),
            *(Message(ev.route(r)[0], ev.route(r)[1], r) for r in raws),
        ]
    )
    repo = audit.repository

    def undecodable() -> list[bytes]:
        return [row.event_hash for row in repo.positions() if row.kind == "undecodable"]

    await until(
        lambda: len(repo.all_events()) >= len(raws) and len(undecodable()) == len(bad),
        60,
        "the good events stored past the unstorable ones",
    )
    assert sorted(undecodable()) == sorted(hashlib.sha256(value).digest() for value in bad)
    assert sorted(e.raw for e in repo.all_events()) == sorted(raws)
    assert quarantined(audit.engine, CONSUMER_NAME) == []

    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=audit.app), base_url="http://a")
    async with client:
        ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["store_consumer"] == "ok"
