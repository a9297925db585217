"""The app behind a real uvicorn server on 127.0.0.1: what a client on the wire sees."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel

from services.platform.app.factory import create_app
from services.platform.app.loopback import serve_in_thread
from services.platform.app.settings import ServiceSettings


class Note(BaseModel):
    text: str


def _router() -> APIRouter:
    router = APIRouter()

    @router.post("/notes")
    async def add_note(note: Note) -> dict[str, int]:
        return {"length": len(note.text)}

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail that must stay inside")

    return router


@pytest.fixture
def base_url(settings_factory: Callable[..., ServiceSettings]) -> Iterator[str]:
    app = create_app(settings_factory(jwks={"keys": []}, max_body_bytes=1024), [_router()])
    with serve_in_thread(app) as url:
        yield url


def _json_error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


def test_served_app_answers_errors_as_json(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        ok = client.post("/notes", json={"text": "abc"}, headers={"X-Request-ID": "wire-1"})
        assert ok.status_code == 200
        assert ok.json() == {"length": 3}
        assert ok.headers["x-request-id"] == "wire-1"

        too_large = client.post("/notes", json={"text": "x" * 4096})
        assert too_large.status_code == 413
        assert _json_error(too_large)["code"] == "payload_too_large"

        broken = client.post(
            "/notes", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert broken.status_code == 400
        assert _json_error(broken)["code"] == "malformed_json"

        failed = client.get("/boom")
        assert failed.status_code == 500
        assert _json_error(failed)["code"] == "internal_error"
        assert "internal detail" not in failed.text

        missing = client.get("/nowhere")
        assert missing.status_code == 404
        assert _json_error(missing)["code"] == "not_found"

        # the connection still serves requests after all of the above
        assert client.get("/healthz").status_code == 200
