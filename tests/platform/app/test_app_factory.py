"""The app factory: operational endpoints, request ids, metrics, body limit, error bodies."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from io import StringIO
from typing import Any

import httpx
import pytest
import structlog
from fastapi import APIRouter, FastAPI, HTTPException
from pydantic import BaseModel, Field
from starlette.types import ASGIApp

from services.platform.app.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    InternalError,
    MalformedBody,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from services.platform.app.factory import Degraded, ReadinessCheck, create_app, metrics_app
from services.platform.app.logging import configure_logging
from services.platform.app.settings import ServiceSettings

MAX_BODY = 1024
SECRET_DETAIL = "password=hunter2 at /srv/ehr/internal.py"
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _all_service_errors() -> list[type[ServiceError]]:
    found: list[type[ServiceError]] = []
    pending: list[type[ServiceError]] = [ServiceError]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(current.__subclasses__())
    return found


class Item(BaseModel):
    name: str = Field(min_length=1)
    count: int = Field(ge=0)


class RecordMissing(Exception):
    code = "record_missing"


class ArchivedRecordMissing(RecordMissing):
    pass


class ConsentClash(Exception):
    pass


def _domain_router() -> APIRouter:
    router = APIRouter()
    log = structlog.get_logger("test")

    @router.post("/items")
    async def create_item(item: Item) -> dict[str, Any]:
        return {"name": item.name, "count": item.count}

    @router.post("/raw")
    async def raw_length(body: dict[str, str]) -> dict[str, int]:
        return {"size": len(body.get("data", ""))}

    @router.get("/items/{item_id}")
    async def get_item(item_id: str) -> dict[str, str]:
        log.info("item_read", item_id=item_id)
        return {"id": item_id}

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError(SECRET_DETAIL)

    @router.get("/errors/{name}")
    async def raise_error(name: str) -> None:
        error_type = {cls.__name__: cls for cls in _all_service_errors()}[name]
        raise error_type()

    @router.get("/http/{status}")
    async def http_exception(status: int) -> None:
        raise HTTPException(status_code=status, detail="raised by a dependency")

    @router.get("/specific")
    async def specific() -> None:
        raise NotFound("no such record", code="record_not_found")

    @router.get("/domain/{which}")
    async def domain(which: str) -> None:
        if which == "missing":
            raise RecordMissing("record r-1 is missing")
        if which == "archived":
            raise ArchivedRecordMissing("record r-2 is archived")
        raise ConsentClash("grant already revoked")

    return router


def _app(
    settings_factory: Callable[..., ServiceSettings],
    checks: dict[str, ReadinessCheck] | None = None,
    **settings: Any,
) -> FastAPI:
    return create_app(
        settings_factory(jwks={"keys": []}, max_body_bytes=MAX_BODY, **settings),
        [_domain_router()],
        checks,
        error_map={RecordMissing: NotFound, ConsentClash: Conflict},
    )


def _client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")


@pytest.fixture
async def client(
    settings_factory: Callable[..., ServiceSettings],
) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(_app(settings_factory)) as c:
        yield c


def _error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["request_id"] == response.headers["X-Request-ID"]
    return error


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "test-service"}


async def test_readyz_runs_every_check(settings_factory: Callable[..., ServiceSettings]) -> None:
    calls: list[str] = []

    async def database() -> None:
        calls.append("database")

    async def bus() -> None:
        calls.append("bus")

    async with _client(_app(settings_factory, {"database": database, "bus": bus})) as c:
        response = await c.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "bus": "ok"}}
    assert sorted(calls) == ["bus", "database"]


async def test_readyz_names_failing_and_hanging_checks(
    settings_factory: Callable[..., ServiceSettings],
) -> None:
    async def database() -> None:
        raise ConnectionRefusedError("connect to 10.0.0.7:5432 refused")

    async def chain() -> None:
        await asyncio.Event().wait()  # never answers: must be cut by the timeout

    async def bus() -> None:
        return None

    app = _app(
        settings_factory,
        {"database": database, "chain": chain, "bus": bus},
        readiness_timeout_seconds=0.2,
    )
    async with _client(app) as c:
        response = await c.get("/readyz")
    assert response.status_code == 503
    error = _error(response)
    assert error["code"] == "not_ready"
    assert sorted(error["details"]["failing"]) == ["chain", "database"]
    assert error["details"]["checks"] == {
        "database": "error: ConnectionRefusedError",
        "chain": "timeout",
        "bus": "ok",
    }
    assert "10.0.0.7" not in response.text


async def test_readyz_reports_a_degraded_check_without_failing(
    settings_factory: Callable[..., ServiceSettings],
) -> None:
    async def projection() -> None:
        raise Degraded("2 records quarantined")

    async def bus() -> None:
        return None

    async with _client(_app(settings_factory, {"projection": projection, "bus": bus})) as c:
        response = await c.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "degraded",
        "checks": {"projection": "degraded: 2 records quarantined", "bus": "ok"},
    }


async def test_metrics_count_requests_by_route_template_and_status(
    settings_factory: Callable[..., ServiceSettings],
) -> None:
    first, second = _app(settings_factory), _app(settings_factory)  # one process, two apps
    async with _client(first) as c1, _client(second) as c2:
        for item_id in ("a", "b", "c"):
            assert (await c1.get(f"/items/{item_id}")).status_code == 200
        assert (await c1.get("/no/such/route")).status_code == 404
        assert (await c2.get("/items/z")).status_code == 200
    scrapes = [metrics_app(app.state.metrics_registry) for app in (first, second)]
    async with _client(scrapes[0]) as m1, _client(scrapes[1]) as m2:
        first_metrics = (await m1.get("/metrics")).text
        second_metrics = (await m2.get("/metrics")).text

    def count(text: str, route: str, status: str) -> float:
        pattern = (
            r'^http_requests_total\{method="GET",route="'
            + re.escape(route)
            + r'",status="'
            + status
            + r'"\} (\S+)$'
        )
        match = re.search(pattern, text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    assert count(first_metrics, "/items/{item_id}", "200") == 3.0
    assert count(first_metrics, "unmatched", "404") == 1.0
    assert count(second_metrics, "/items/{item_id}", "200") == 1.0
    assert "/items/a" not in first_metrics
    assert "http_request_duration_seconds_bucket" in first_metrics


async def test_request_id_is_generated_and_echoed(client: httpx.AsyncClient) -> None:
    first = await client.get("/items/a")
    second = await client.get("/items/a")
    assert UUID7.match(first.headers["X-Request-ID"])
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


async def test_request_id_offered_by_the_caller_is_kept(client: httpx.AsyncClient) -> None:
    response = await client.get("/errors/NotFound", headers={"X-Request-ID": "trace-42.a:b"})
    assert response.headers["X-Request-ID"] == "trace-42.a:b"
    assert _error(response)["request_id"] == "trace-42.a:b"


async def test_malformed_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    offered = "bad id\twith spaces" + "x" * 200
    response = await client.get("/items/a", headers={"X-Request-ID": offered})
    assert UUID7.match(response.headers["X-Request-ID"])


EXPECTED_STATUS = {
    ServiceError: (500, "internal_error"),
    InternalError: (500, "internal_error"),
    BadRequest: (400, "bad_request"),
    MalformedBody: (400, "malformed_json"),
    Unauthorized: (401, "unauthorized"),
    Forbidden: (403, "forbidden"),
    NotFound: (404, "not_found"),
    MethodNotAllowed: (405, "method_not_allowed"),
    Conflict: (409, "conflict"),
    Gone: (410, "gone"),
    RequestTimeout: (408, "request_timeout"),
    PayloadTooLarge: (413, "payload_too_large"),
    UnsupportedMediaType: (415, "unsupported_media_type"),
    ValidationFailed: (422, "validation_failed"),
    ServiceUnavailable: (503, "service_unavailable"),
}


@pytest.mark.parametrize("error_type", _all_service_errors(), ids=lambda t: t.__name__)
async def test_every_service_error_maps_to_its_status_and_code(
    client: httpx.AsyncClient, error_type: type[ServiceError]
) -> None:
    response = await client.get(f"/errors/{error_type.__name__}")
    expected_status, expected_code = EXPECTED_STATUS.get(
        error_type, (error_type.status, error_type.code)
    )
    assert response.status_code == expected_status
    error = _error(response)
    assert error["code"] == expected_code
    assert error["message"] == error_type.default_message


async def test_base_errors_are_all_checked() -> None:
    base = {
        cls for cls in _all_service_errors() if cls.__module__ == "services.platform.app.errors"
    }
    assert base == set(EXPECTED_STATUS)


async def test_raise_site_gives_a_specific_code(client: httpx.AsyncClient) -> None:
    response = await client.get("/specific")
    assert response.status_code == 404
    assert _error(response) | {"request_id": None} == {
        "code": "record_not_found",
        "message": "no such record",
        "request_id": None,
    }


@pytest.mark.parametrize(
    ("which", "status", "code", "message"),
    [
        ("missing", 404, "record_missing", "record r-1 is missing"),
        ("archived", 404, "record_missing", "record r-2 is archived"),
        ("clash", 409, "conflict", "grant already revoked"),
    ],
)
async def test_domain_errors_follow_the_error_map(
    client: httpx.AsyncClient, which: str, status: int, code: str, message: str
) -> None:
    response = await client.get(f"/domain/{which}")
    assert response.status_code == status
    error = _error(response)
    assert (error["code"], error["message"]) == (code, message)


async def test_unknown_route_is_404_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere")
    assert response.status_code == 404
    assert _error(response)["code"] == "not_found"


async def test_wrong_method_is_405_json(client: httpx.AsyncClient) -> None:
    response = await client.delete("/items/a")
    assert response.status_code == 405
    assert _error(response)["code"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/items", content=b'{"name": "x", "count": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert _error(response)["code"] == "malformed_json"


async def test_validation_error_is_422_with_the_failing_fields(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/items", json={"name": "", "count": -1, "extra": "x" * 10})
    assert response.status_code == 422
    error = _error(response)
    assert error["code"] == "validation_failed"
    locations = sorted(tuple(problem["loc"]) for problem in error["details"])
    assert locations == [("body", "count"), ("body", "name")]
    assert all(set(problem) == {"loc", "msg", "type"} for problem in error["details"])


async def test_body_within_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    payload = {"data": "x" * (MAX_BODY - len('{"data": ""}'))}
    content = json.dumps(payload).encode()
    assert len(content) == MAX_BODY
    response = await client.post(
        "/raw", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json() == {"size": len(payload["data"])}


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "x" * MAX_BODY, "count": 1})
    assert response.status_code == 413
    assert _error(response)["code"] == "payload_too_large"


async def test_oversized_streamed_body_without_length_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(4):
            yield b"x" * (MAX_BODY // 2)
        yield b'", "count": 1}'

    response = await client.post(
        "/items", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert _error(response)["code"] == "payload_too_large"


async def test_streamed_body_within_the_limit_reaches_the_route(
    client: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        yield b"abc"
        yield b'", "count": 2}'

    response = await client.post(
        "/items", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json() == {"name": "abc", "count": 2}


async def test_unexpected_exception_is_500_without_internals(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/boom")
    assert response.status_code == 500
    error = _error(response)
    assert error == {
        "code": "internal_error",
        "message": "internal error",
        "request_id": response.headers["X-Request-ID"],
    }
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text


@pytest.fixture
def log_stream() -> AsyncIterator[StringIO]:
    stream = StringIO()
    configure_logging("test-service", "INFO", stream=stream)
    yield stream
    structlog.reset_defaults()


def _log_lines(stream: StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_logs_are_json_with_service_and_request_id(
    client: httpx.AsyncClient, log_stream: StringIO
) -> None:
    await client.get("/items/a", headers={"X-Request-ID": "req-logged-1"})
    lines = _log_lines(log_stream)
    item_read = [line for line in lines if line["event"] == "item_read"]
    assert len(item_read) == 1
    assert item_read[0]["request_id"] == "req-logged-1"
    assert item_read[0]["service"] == "test-service"
    assert item_read[0]["level"] == "info"
    finished = [line for line in lines if line["event"] == "request_finished"]
    assert finished[-1]["route"] == "/items/{item_id}"
    assert finished[-1]["status"] == 200
    assert finished[-1]["request_id"] == "req-logged-1"


async def test_unexpected_exception_is_logged_with_its_traceback(
    client: httpx.AsyncClient, log_stream: StringIO
) -> None:
    response = await client.get("/boom")
    lines = _log_lines(log_stream)
    unhandled = [line for line in lines if line["event"] == "unhandled_error"]
    assert len(unhandled) == 1
    assert unhandled[0]["request_id"] == response.headers["X-Request-ID"]
    assert SECRET_DETAIL in json.dumps(unhandled[0]["exception"])


async def test_log_level_filters(client: httpx.AsyncClient) -> None:
    stream = StringIO()
    configure_logging("test-service", "WARNING", stream=stream)
    try:
        await client.get("/items/a")
        await client.get("/boom")
    finally:
        structlog.reset_defaults()
    events = [line["event"] for line in _log_lines(stream)]
    assert "item_read" not in events
    assert "unhandled_error" in events


@pytest.mark.parametrize(
    ("status", "code"), [(409, "conflict"), (401, "unauthorized"), (418, "http_418")]
)
async def test_http_exceptions_get_the_same_body(
    client: httpx.AsyncClient, status: int, code: str
) -> None:
    response = await client.get(f"/http/{status}")
    assert response.status_code == status
    error = _error(response)
    assert error["code"] == code
    assert error["message"] == "raised by a dependency"
