"""The embedded gateway's routing and lifespan rules (the same as nginx and the chart):
prefixes stripped for identity/ledger/audit, kept for consent/records except on their
operational routes (/healthz, /readyz), 404 JSON elsewhere; lifespans entered in order
and left in reverse order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI, Request

from services.embedded.gateway import PathGateway, Route
from services.platform.app.loopback import ServerStartError, serve_in_thread


def echo(name: str) -> FastAPI:
    app = FastAPI(title=name)

    @app.get("/{rest:path}")
    def any_path(rest: str, request: Request) -> dict[str, str]:
        return {"app": name, "path": "/" + rest, "root_path": request.scope.get("root_path", "")}

    return app


def gateway(lifespans: list[object] | None = None) -> PathGateway:
    return PathGateway(
        [
            Route("/identity", echo("identity"), strip=True),
            Route("/consent", echo("consent"), strip=False),
            Route("/audit", echo("audit"), strip=True),
        ],
        lifespans or [],  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("path", "app", "seen"),
    [
        ("/identity/accounts/7", "identity", "/accounts/7"),
        ("/identity/.well-known/jwks.json", "identity", "/.well-known/jwks.json"),
        ("/consent/grants", "consent", "/consent/grants"),
        ("/consent/healthz", "consent", "/healthz"),
        ("/consent/readyz", "consent", "/readyz"),
        ("/consent/healthz/more", "consent", "/consent/healthz/more"),
        ("/audit/events", "audit", "/events"),
    ],
)
def test_prefixes_are_stripped_or_kept_like_the_gateway(path: str, app: str, seen: str) -> None:
    with serve_in_thread(gateway()) as url:
        answer = httpx.get(url + path).json()
    assert answer["app"] == app and answer["path"] == seen


@pytest.mark.parametrize("path", ["/", "/identityx/accounts", "/records/1", "/consentx"])
def test_other_paths_get_a_json_404(path: str) -> None:
    with serve_in_thread(gateway()) as url:
        answer = httpx.get(url + path)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


def test_a_stripped_service_documents_itself_under_its_prefix() -> None:
    with serve_in_thread(gateway()) as url:
        spec = httpx.get(url + "/identity/openapi.json").json()
        docs = httpx.get(url + "/identity/docs").text
    assert spec["info"]["title"] == "identity"
    assert "/identity/openapi.json" in docs


def test_lifespans_run_in_order_and_close_in_reverse() -> None:
    calls: list[str] = []

    def tracked(name: str) -> object:
        @asynccontextmanager
        async def lifespan() -> AsyncIterator[None]:
            calls.append(f"start {name}")
            yield
            calls.append(f"stop {name}")

        return lifespan

    with serve_in_thread(gateway([tracked("a"), tracked("b")])):
        assert calls == ["start a", "start b"]
    assert calls == ["start a", "start b", "stop b", "stop a"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_failing_start_closes_what_started_and_fails_the_server() -> None:
    """(uvicorn's server thread exits with SystemExit(3): the expected start-up failure)"""
    calls: list[str] = []

    @asynccontextmanager
    async def first() -> AsyncIterator[None]:
        calls.append("start first")
        yield
        calls.append("stop first")

    @asynccontextmanager
    async def broken() -> AsyncIterator[None]:
        raise RuntimeError("cannot reach the chain")
        yield

    with pytest.raises(ServerStartError), serve_in_thread(gateway([first, broken]), None, 10):
        pass
    assert calls == ["start first", "stop first"]
