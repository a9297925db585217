"""Fixtures of the consent service tests: the service on the embedded default
(SQLite, embedded log, in-process chain) and on the real stack (PostgreSQL, Kafka, Geth).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from consent.harness import AUDIENCE, ISSUER, Harness, TokenKey
from devstack.stack import Stack
from eth_account import Account

from services.consent.main import ConsentRuntime, ConsentSettings
from services.platform.chain.geth import GethChain


def _real_settings(stack: Stack, data_dir: Path, keys: TokenKey) -> ConsentSettings:
    server = sa.make_url(stack.postgres.dsn().replace("postgresql://", "postgresql+psycopg://", 1))
    database = f"consent_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{database}"'))
    admin.dispose()
    relay = Account.create()
    geth = stack.geth
    with GethChain(list(geth.rpc_urls), geth.chain_id, geth.faucet_private_key()) as faucet:
        faucet.fund(relay.address, 10**20)
    return ConsentSettings(
        jwt={"issuer": ISSUER, "audience": AUDIENCE, "jwks": keys.jwks()},
        data_dir=data_dir,
        database_url=server.set(database=database).render_as_string(hide_password=False),
        kafka_bootstrap_servers=stack.kafka.bootstrap_servers,
        chain_rpc_urls=list(geth.rpc_urls),
        chain_id=geth.chain_id,
        chain_private_key=relay.key.hex(),
        identity_consumer_group=f"consent-identity-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture(
    scope="module",
    params=[
        "embedded",
        pytest.param("real", marks=[pytest.mark.kafka, pytest.mark.geth, pytest.mark.postgres]),
    ],
)
async def consent(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Harness]:
    """The consent service, started, on the embedded default and on the real stack."""
    keys = TokenKey()
    data_dir = tmp_path_factory.mktemp("consent")
    if request.param == "real":
        stack = request.getfixturevalue("test_stack")
        for component in ("postgres", "kafka", "geth"):
            request.getfixturevalue(f"{component}_stack")
        settings = _real_settings(stack, data_dir, keys)
    else:
        settings = ConsentSettings(
            jwt={"issuer": ISSUER, "audience": AUDIENCE, "jwks": keys.jwks()}, data_dir=data_dir
        )
    runtime = ConsentRuntime(settings)
    await runtime.start()
    harness = Harness(request.param, runtime, keys)
    try:
        yield harness
    finally:
        await harness.close()
        await runtime.stop()
        runtime.close()
