"""Metrics on their own port: the API app (what a gateway routes to) has no
``/metrics``; ``metrics_app`` serves the same registry; ``serve`` runs both servers in
one process, stopping them together."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter
from starlette.types import ASGIApp

from services.platform.app.factory import create_app, metrics_app
from services.platform.app.settings import METRICS_PORT_OFFSET, ServiceSettings

ROOT = Path(__file__).resolve().parents[3]


def _router() -> APIRouter:
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    return router


def _client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")


async def test_the_api_app_has_no_metrics_route(
    settings_factory: Callable[..., ServiceSettings],
) -> None:
    app = create_app(settings_factory(jwks={"keys": []}), [_router()])
    async with _client(app) as client:
        for path in ("/metrics", "/metrics/", "/metrics?format=text"):
            reply = await client.get(path)
            assert reply.status_code == 404, path
            assert reply.json()["error"]["code"] == "not_found"
            assert "http_requests_total" not in reply.text
        assert "/metrics" not in (await client.get("/openapi.json")).json()["paths"]


async def test_the_metrics_app_serves_the_apps_registry_and_nothing_else(
    settings_factory: Callable[..., ServiceSettings],
) -> None:
    app = create_app(settings_factory(jwks={"keys": []}), [_router()])
    async with _client(app) as client:
        assert (await client.get("/items/a")).status_code == 200
    async with _client(metrics_app(app.state.metrics_registry)) as scraper:
        scraped = await scraper.get("/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        assert 'http_requests_total{method="GET",route="/items/{item_id}",status="200"} 1.0' in (
            scraped.text
        )
        for path in ("/", "/healthz", "/items/a", "/metrics/x"):
            other = await scraper.get(path)
            assert other.status_code == 404, path
            assert other.json()["error"]["code"] == "not_found"
        posted = await scraper.post("/metrics", content=b"x")
        assert posted.status_code == 405
        assert posted.json()["error"]["code"] == "method_not_allowed"


def test_metrics_port_defaults_beside_the_api_port_and_never_on_it(
    settings_factory: Callable[..., ServiceSettings],
) -> None:
    def metrics_port(**over: int) -> int:
        return settings_factory(jwks={"keys": []}, **over).metrics_port_or_default

    assert metrics_port(port=8000) == 8000 + METRICS_PORT_OFFSET
    assert metrics_port(port=8000, metrics_port=9100) == 9100
    assert metrics_port(port=0) == 0  # any free port, like the API's
    with pytest.raises(ValueError, match="must differ"):
        metrics_port(port=8000, metrics_port=8000)
    with pytest.raises(ValueError, match="set metrics_port"):
        metrics_port(port=65000)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


SERVE = """
from fastapi import APIRouter
from services.platform.app.factory import create_app, serve
from services.platform.app.settings import ServiceSettings
router = APIRouter()
@router.get("/ping")
async def ping() -> dict[str, str]:
    return {"pong": "yes"}
settings = ServiceSettings()
serve(create_app(settings, [router]), settings)
print("served", flush=True)
"""


def _start(port: int, metrics_port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_")}
    env.update(
        {
            "EHR_SERVICE_NAME": "metrics-port-test",
            "EHR_HOST": "127.0.0.1",
            "EHR_PORT": str(port),
            "EHR_METRICS_PORT": str(metrics_port),
            "EHR_JWT__ISSUER": "test",
            "EHR_JWT__AUDIENCE": "test",
            "EHR_JWT__JWKS": json.dumps({"keys": []}),
            "EHR_LOG_LEVEL": "WARNING",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-c", SERVE],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _answers(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None


@pytest.fixture
def ports() -> Iterator[tuple[int, int]]:
    yield _free_port(), _free_port()


def test_serve_runs_api_and_metrics_ports_and_stops_both_on_sigterm(
    ports: tuple[int, int],
) -> None:
    port, metrics_port = ports
    process = _start(port, metrics_port)
    api, scrape = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    try:
        deadline = time.monotonic() + 30
        while _answers(f"{scrape}/metrics") is None or _answers(f"{api}/ping") is None:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the two servers did not start"
            time.sleep(0.1)
        assert httpx.get(f"{api}/ping", timeout=5).json() == {"pong": "yes"}
        assert httpx.get(f"{api}/metrics", timeout=5).status_code == 404
        scraped = httpx.get(f"{scrape}/metrics", timeout=5)
        assert scraped.status_code == 200
        assert 'http_requests_total{method="GET",route="/ping",status="200"}' in scraped.text
        assert httpx.get(f"{scrape}/ping", timeout=5).status_code == 404

        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    # Both servers shut down and serve() returned: the code after it ran.
    assert process.returncode == 0, err
    assert "served" in out
    assert _answers(f"{api}/ping") is None
    assert _answers(f"{scrape}/metrics") is None


def test_serve_does_not_run_the_api_without_its_metrics_port(ports: tuple[int, int]) -> None:
    port, metrics_port = ports
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", metrics_port))
        taken.listen()
        process = _start(port, metrics_port)
        try:
            _, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode != 0
    assert "address already in use" in err.lower(), err
    assert _answers(f"http://127.0.0.1:{port}/ping") is None
