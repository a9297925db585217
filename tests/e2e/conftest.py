"""The identity + consent deployment of the end-to-end tests, on the embedded default
and on the real stack (Kafka, Geth, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from devstack.stack import Stack
from e2e.harness import Deployment, deploy


@pytest.fixture(
    scope="module",
    params=[
        "embedded",
        pytest.param("real", marks=[pytest.mark.kafka, pytest.mark.geth, pytest.mark.postgres]),
    ],
)
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    stack: Stack | None = None
    if request.param == "real":
        stack = request.getfixturevalue("test_stack")
        for component in ("postgres", "kafka", "geth"):
            request.getfixturevalue(f"{component}_stack")
    with deploy(request.param, tmp_path_factory.mktemp("e2e"), stack) as deployed:
        yield deployed


@pytest.fixture
def embedded_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deploy("embedded", tmp_path_factory.mktemp("e2e-cli")) as deployed:
        yield deployed
