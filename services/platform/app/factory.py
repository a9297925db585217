"""The app factory: one FastAPI app with everything a service needs around its routers.

``create_app`` adds ``/healthz`` (the process is up), ``/readyz`` (the service's
dependencies answer), HTTP metrics on one Prometheus registry per app
(``app.state.metrics_registry``), a request id on every request and response, the
request guard (:mod:`services.platform.app.request_guard`: bounded URLs and bodies,
checked before any route or parser sees them), the shared error statuses in the OpenAPI
document (:mod:`services.platform.app.openapi`), JSON error bodies for every error
(see :mod:`services.platform.app.errors`) and a token verifier for
:func:`services.platform.app.auth.current_principal`.

``/metrics`` is not on the API app: anything a gateway routes to the API port is public,
and the metrics name routes, counts and the service's internals. :func:`metrics_app`
exposes a registry on its own, and :func:`serve` runs it on the metrics port
(``EHR_METRICS_PORT``) beside the API, where only the scraper reaches it.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from http import HTTPStatus
from typing import Any

import structlog
import uuid6
import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.platform.app.auth import TokenVerifier
from services.platform.app.errors import (
    REQUEST_ID_HEADER,
    ErrorMap,
    InternalError,
    MethodNotAllowed,
    NotFound,
    ServiceError,
    ServiceUnavailable,
    error_response,
    install_error_handlers,
)
from services.platform.app.openapi import install_documented_errors
from services.platform.app.request_guard import (
    RequestGuardMiddleware,
    RequestLimits,
    cap_recursion_limit,
)
from services.platform.app.settings import ServiceSettings
from services.platform.readiness import Degraded as Degraded  # re-exported for services

ReadinessCheck = Callable[[], Awaitable[None]]
"""An async check of one dependency: returns when it is usable, raises :class:`Degraded`
when the service serves but something needs an operator, raises anything else when it is
not usable."""


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

UNMATCHED_ROUTE = "unmatched"

log = structlog.get_logger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

OPERATIONAL_PATHS: tuple[str, ...] = ("/healthz", "/readyz", "/openapi.json")
"""Routes every service serves at its root whatever its API's prefix: a gateway that
keeps a service's prefix (consent, the record store) routes ``<prefix><path>`` to them
too, so they answer under the prefix like the services whose prefix is stripped."""


def _state(scope: Scope) -> dict[str, Any]:
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


def _route_template(scope: Scope) -> str:
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


async def _send_error(scope: Scope, receive: Receive, send: Send, error: ServiceError) -> None:
    request_id = _state(scope).get("request_id")
    await error_response(error, request_id if isinstance(request_id, str) else None)(
        scope, receive, send
    )


class RequestContextMiddleware:
    """Gives each request an id (the caller's ``X-Request-ID`` when well-formed, else a new
    one), echoes it, binds it and the service name to the logs, and logs the outcome."""

    def __init__(self, app: ASGIApp, service_name: str) -> None:
        self.app = app
        self.service_name = service_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = MutableHeaders(scope=scope).get(REQUEST_ID_HEADER)
        request_id = offered if offered and _REQUEST_ID.match(offered) else str(uuid6.uuid7())
        _state(scope)["request_id"] = request_id
        status = HTTPStatus.INTERNAL_SERVER_ERROR.value
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        outer_context = structlog.contextvars.get_contextvars()
        structlog.contextvars.bind_contextvars(service=self.service_name, request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "request_finished",
                method=scope["method"],
                route=_route_template(scope),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(**outer_context)


class HttpMetrics:
    """Request counter and latency histogram by method, route template and status."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("method", "route", "status")
        self.requests = Counter("http_requests", "HTTP requests handled", labels, registry=registry)
        self.latency = Histogram(
            "http_request_duration_seconds", "HTTP request latency", labels, registry=registry
        )


class MetricsMiddleware:
    """Counts and times every request once the response status is known."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = HTTPStatus.INTERNAL_SERVER_ERROR.value
        started = time.perf_counter()

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            labels = (scope["method"], _route_template(scope), str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)


class UnhandledErrorMiddleware:
    """Turns any exception no handler took into a 500 JSON body without internals."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def send_tracking_start(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking_start)
        except Exception:
            log.exception("unhandled_error", route=_route_template(scope))
            if not response_started:
                await _send_error(scope, receive, send, InternalError())


async def _run_check(check: ReadinessCheck, timeout: float) -> str:
    try:
        await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        return "timeout"
    except Degraded as degraded:
        return f"degraded: {degraded}"
    except Exception as exc:
        log.warning("readiness_check_failed", error=type(exc).__name__, message=str(exc))
        return f"error: {type(exc).__name__}"
    return "ok"


FORWARDED_PREFIX_HEADER = "X-Forwarded-Prefix"
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")


def gateway_prefix(scope: Scope) -> str | None:
    """The path prefix a gateway stripped before passing the request on: the ASGI
    ``root_path`` (the embedded gateway) or the ``X-Forwarded-Prefix`` header (nginx,
    the chart's routes), when it is a well-formed path."""
    root_path = scope.get("root_path") or ""
    if root_path:
        return root_path.rstrip("/") or None
    offered = MutableHeaders(scope=scope).get(FORWARDED_PREFIX_HEADER, "")
    return offered.rstrip("/") if _PREFIX.match(offered.rstrip("/") or "x") else None


def _operational_router(
    app: FastAPI,
    settings: ServiceSettings,
    checks: Mapping[str, ReadinessCheck],
    servers_from_prefix: bool,
) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/openapi.json")
    async def openapi(request: Request) -> JSONResponse:
        """The document, with ``servers`` naming the prefix the gateway stripped (for a
        service whose routes do not carry it), so its paths resolve from where it was
        fetched. Built per request: a direct client and a gateway client both see
        paths that work for them."""
        document = dict(app.openapi())
        prefix = gateway_prefix(request.scope) if servers_from_prefix else None
        if prefix:
            document["servers"] = [{"url": prefix}]
        return JSONResponse(document)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": settings.service_name}

    @router.get("/readyz")
    async def readyz() -> dict[str, Any]:
        names = list(checks)
        outcomes = await asyncio.gather(
            *(_run_check(checks[name], settings.readiness_timeout_seconds) for name in names)
        )
        results = dict(zip(names, outcomes, strict=True))
        failing = [
            name
            for name, outcome in results.items()
            if outcome != "ok" and not outcome.startswith("degraded")
        ]
        if failing:
            raise ServiceUnavailable(
                f"not ready: {', '.join(failing)}",
                code="not_ready",
                details={"failing": failing, "checks": results},
            )
        degraded = any(outcome != "ok" for outcome in results.values())
        return {"status": "degraded" if degraded else "ready", "checks": results}

    return router


METRICS_PATH = "/metrics"


def metrics_app(registry: CollectorRegistry) -> ASGIApp:
    """The ASGI app of the metrics port: ``GET /metrics`` answers ``registry`` in the
    Prometheus text format, anything else the shared JSON error body (404, or 405 for
    another method). No request guard, ids or counting: it reads no body and routes
    nothing a caller chooses, and scrapes must not count themselves."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan, no websockets
        if scope["path"] != METRICS_PATH:
            await _send_error(scope, receive, send, NotFound(f"no metrics at {scope['path']}"))
        elif scope["method"] not in ("GET", "HEAD"):
            await _send_error(scope, receive, send, MethodNotAllowed("metrics are read with GET"))
        else:
            response = Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
            await response(scope, receive, send)

    return app


def request_limits(settings: ServiceSettings) -> RequestLimits:
    """The request guard's bounds from the service's settings."""
    return RequestLimits(
        max_body_bytes=settings.max_body_bytes,
        body_timeout_seconds=settings.body_timeout_seconds,
        max_depth=settings.max_json_depth,
        max_items=settings.max_json_items,
    )


def create_app(
    settings: ServiceSettings,
    routers: Sequence[APIRouter] = (),
    readiness_checks: Mapping[str, ReadinessCheck] | None = None,
    *,
    token_verifier: TokenVerifier | None = None,
    registry: CollectorRegistry | None = None,
    error_map: ErrorMap | None = None,
    lifespan: Lifespan | None = None,
    servers_from_root_path: bool = True,
) -> FastAPI:
    """A FastAPI app serving ``routers`` with the shared operational endpoints.

    ``readiness_checks`` name the dependencies ``/readyz`` checks. ``token_verifier``
    defaults to one built from ``settings.jwt``. ``registry`` lets the service register
    its own metrics on the registry the metrics port exposes. ``error_map`` maps the service's
    domain exceptions to HTTP errors. ``servers_from_root_path=False`` is for a service
    whose routes already carry the gateway's prefix (consent, the record store): its
    document's paths are complete, so the prefix a gateway strips (``root_path`` or
    ``X-Forwarded-Prefix``) must not become a ``servers`` entry as well.
    """
    cap_recursion_limit()
    registry = registry if registry is not None else CollectorRegistry()
    app = FastAPI(
        title=settings.service_name,
        lifespan=lifespan,
        openapi_url=None,  # served by the operational router, with per-request servers
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics_registry = registry
    app.state.token_verifier = token_verifier or TokenVerifier.from_settings(settings.jwt)

    install_error_handlers(app, error_map)
    app.include_router(
        _operational_router(app, settings, dict(readiness_checks or {}), servers_from_root_path)
    )
    for router in routers:
        app.include_router(router)
    install_documented_errors(app)

    # The last middleware added runs first.
    app.add_middleware(
        RequestGuardMiddleware, limits=request_limits(settings), send_error=_send_error
    )
    app.add_middleware(UnhandledErrorMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=HttpMetrics(registry))
    app.add_middleware(RequestContextMiddleware, service_name=settings.service_name)
    return app


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signals alone: :func:`serve` handles
    them once for both of its servers (each server would otherwise replace the
    other's handler, and only one would stop)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_together(*servers: uvicorn.Server) -> None:
    """Runs ``servers`` in this event loop until a SIGINT or SIGTERM (a second SIGINT
    forces the exit) or until one of them stops (e.g. it could not bind): the others
    are then stopped too, and this returns when all have shut down."""
    loop = asyncio.get_running_loop()

    def stop(force: bool) -> None:
        for server in servers:
            server.force_exit = server.force_exit or (force and server.should_exit)
            server.should_exit = True

    handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        loop.add_signal_handler(sig, stop, sig == signal.SIGINT)
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop(False)
        await asyncio.gather(*tasks)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def metrics_server(
    registry: CollectorRegistry, host: str, port: int, log_level: str = "info"
) -> uvicorn.Server:
    """A uvicorn server of :func:`metrics_app` on ``host:port`` (no lifespan).

    ``log_level`` must be the service's own: uvicorn sets it on its process-wide loggers
    when a server is configured, so a different level here would silence (or flood) the
    API server's lines too."""
    config = uvicorn.Config(
        metrics_app(registry),
        host=host,
        port=port,
        lifespan="off",
        access_log=False,
        log_level=log_level,
    )
    return _QuietServer(config)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run ``app`` on the settings' host and port and its metrics
    (``app.state.metrics_registry``) on the same host's metrics port, both with uvicorn
    in one event loop; blocks until a signal stops both, or until either stops."""
    api = _QuietServer(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            access_log=False,  # RequestContextMiddleware logs every request as JSON
            log_level=settings.log_level.lower(),
        )
    )
    metrics = metrics_server(
        app.state.metrics_registry,
        settings.host,
        settings.metrics_port_or_default,
        settings.log_level.lower(),
    )
    asyncio.run(serve_together(api, metrics))
