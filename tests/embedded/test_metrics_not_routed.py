"""The embedded default exposes no service's ``/metrics``: its gateway answers
``<prefix>/metrics`` itself (the services' API apps have no ``/metrics`` either) and the
process serves no metrics port. Each service's registry is still there for a metrics app
(what a service process serves on its metrics port)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.embedded.main import EmbeddedSettings, EmbeddedSystem, compose
from services.platform.app.factory import metrics_app
from services.platform.app.loopback import bind_loopback, serve_in_thread


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, EmbeddedSystem]]:
    data_dir: Path = tmp_path_factory.mktemp("embedded")
    sock = bind_loopback()
    system = compose(EmbeddedSettings(data_dir=data_dir), sock)
    try:
        with serve_in_thread(system.app, sock) as url:
            yield url, system
    finally:
        system.close()


def test_no_prefix_of_the_gateway_reaches_a_metrics_endpoint(
    embedded: tuple[str, EmbeddedSystem],
) -> None:
    url, system = embedded
    prefixes = [route.prefix for route in system.app.routes]
    assert prefixes == ["/identity", "/consent", "/records", "/ledger", "/audit"]
    with httpx.Client(base_url=url, timeout=30) as client:
        for prefix in prefixes:
            assert client.get(f"{prefix}/healthz").status_code == 200, prefix  # routed
            for path in (f"{prefix}/metrics", f"{prefix}/metrics/", f"{prefix}/metrics/x"):
                reply = client.get(path)
                assert reply.status_code == 404, (path, reply.text)
                assert reply.json()["error"]["code"] == "not_found", path
                assert "x-request-id" not in reply.headers, path  # no service answered
            # Paths that merely start like it are still the service's.
            assert client.get(f"{prefix}/metricsx").headers.get("x-request-id"), prefix
        assert client.get("/metrics").status_code == 404


async def test_each_services_registry_counts_its_requests_for_a_metrics_port(
    embedded: tuple[str, EmbeddedSystem],
) -> None:
    url, system = embedded
    runtimes = {
        "/identity": system.identity,
        "/consent": system.consent,
        "/records": system.records,
        "/ledger": system.relay,
        "/audit": system.audit,
    }
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for prefix in runtimes:
            assert (await client.get(f"{prefix}/healthz")).status_code == 200
    for prefix, runtime in runtimes.items():
        scraper = metrics_app(runtime.app.state.metrics_registry)
        transport = httpx.ASGITransport(app=scraper)
        async with httpx.AsyncClient(transport=transport, base_url="http://metrics") as client:
            text = (await client.get("/metrics")).text
        assert 'http_requests_total{method="GET",route="/healthz",status="200"}' in text, prefix
