"""Session fixtures that start the real servers through the same code as `make up`.

The test stack keeps its state in ``.run/pytest`` and uses its own loopback
ports (so it never collides with a developer's ``make up``). It starts from a
clean slate, starts only the components a test asks for, and stops them when
the session ends. Every port can be changed with ``EHR_TEST_STACK__...``
variables, e.g. ``EHR_TEST_STACK__KAFKA__PORT=29192``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from devstack.processes import pid_alive
from devstack.settings import (
    PROJECT_ROOT,
    GatewaySettings,
    GethSettings,
    KafkaSettings,
    PostgresSettings,
    PrometheusSettings,
    ServicesSettings,
    StackSettings,
)
from devstack.stack import Stack
from pydantic_settings import SettingsConfigDict


class PytestStackSettings(StackSettings):
    model_config = SettingsConfigDict(
        env_prefix="EHR_TEST_STACK__", env_nested_delimiter="__", extra="ignore"
    )
    run_dir: Path = PROJECT_ROOT / ".run" / "pytest"
    kafka: KafkaSettings = KafkaSettings(port=29092, controller_port=29093)
    geth: GethSettings = GethSettings(
        p2p_port=31311, http_port=28545, authrpc_port=28651, metrics_port=26061
    )
    postgres: PostgresSettings = PostgresSettings(port=25432)
    services: ServicesSettings = ServicesSettings(base_port=28100)
    gateway: GatewaySettings = GatewaySettings(port=28080)
    prometheus: PrometheusSettings = PrometheusSettings(port=29090, scrape_interval_s=2)


def _progress(message: str) -> None:
    print(f"[test stack] {message}")


@pytest.fixture(scope="session")
def test_stack() -> Iterator[Stack]:
    """The test stack, reset once per session; every server is stopped at the end."""
    stack = Stack(PytestStackSettings())
    stack.reset(progress=_progress)  # also stops leftovers of an aborted run
    yield stack
    started = stack.pids()
    stack.down(progress=_progress)
    leftovers = [pid for pid in started if pid_alive(pid)]
    assert not leftovers, f"processes left behind after down: {leftovers}"


def _component(stack: Stack, name: str) -> Stack:
    stack.up([name], progress=_progress)
    return stack


@pytest.fixture(scope="session")
def kafka_stack(test_stack: Stack) -> Stack:
    return _component(test_stack, "kafka")


@pytest.fixture(scope="session")
def geth_stack(test_stack: Stack) -> Stack:
    return _component(test_stack, "geth")


@pytest.fixture(scope="session")
def postgres_stack(test_stack: Stack) -> Stack:
    return _component(test_stack, "postgres")


@pytest.fixture(scope="module")
def services_stack(test_stack: Stack) -> Iterator[Stack]:
    """The five services and the nginx gateway as separate processes (with Kafka, Geth
    and PostgreSQL), started once per module and stopped at its end: they consume the
    shared topics, so they do not run behind other modules' tests."""
    test_stack.up(["services", "gateway"], progress=_progress)
    yield test_stack
    started = [pid for c in test_stack.components(["services", "gateway"]) for pid in c.pids()]
    test_stack.down(["services", "gateway"], progress=_progress)
    leftovers = [pid for pid in started if pid_alive(pid)]
    assert not leftovers, f"service processes left behind after down: {leftovers}"


@pytest.fixture(scope="module")
def monitored_stack(services_stack: Stack) -> Iterator[Stack]:
    """``services_stack`` plus Prometheus scraping the services and the sealers."""
    services_stack.up(["prometheus"], progress=_progress)
    yield services_stack
    services_stack.down(["prometheus"], progress=_progress)


# Shared fixtures of the platform's ports (each module owns one port's fixtures).
pytest_plugins = [
    module
    for module in ("fixtures.bus", "fixtures.chain")
    if (Path(__file__).parent / (module.replace(".", "/") + ".py")).exists()
]
