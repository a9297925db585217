"""One ASGI app that routes by path prefix to several service apps, like the gateway.

The routing rules are the gateway's (nginx on the real stack, the chart's HTTPRoutes
on Kubernetes): identity, the ledger relay and audit-analytics serve at their root,
so ``/identity/...``, ``/ledger/...`` and ``/audit/...`` are passed on without the
prefix (as ``root_path``, which also keeps their OpenAPI pages right); consent and the
record store own ``/consent/...`` and ``/records/...`` and get the path unchanged, except
their operational routes (``/consent/healthz``, ``/consent/readyz``,
``/consent/openapi.json``, the same under ``/records``), which reach the service's root
like a stripped prefix's. ``GET /api`` lists the five services' OpenAPI documents (as
the local nginx does). ``<prefix>/metrics`` (and below it) is never passed on, whatever a
service's routes would make of it: metrics are scraped on a service's own metrics port,
not through a gateway. Anything else is a 404 with the services' JSON error body.

The services' lifespans (bus, workers, consumers) run in order at start-up and are
closed in reverse order at shutdown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from services.platform.app.factory import OPERATIONAL_PATHS

Lifespan = Callable[[], AbstractAsyncContextManager[Any]]

REFUSED_PATHS: tuple[str, ...] = ("/metrics",)
"""Paths under a prefix the gateway answers 404 itself (and everything below them), as
nginx does: a service's route such as ``/records/{record_id}`` must not make
``/records/metrics`` look like something to ask for."""


@dataclass(frozen=True)
class Route:
    """``/<prefix>/...`` goes to ``app``; ``strip`` removes the prefix first (for the
    operational routes, ``OPERATIONAL_PATHS``, it is removed either way)."""

    prefix: str
    app: ASGIApp
    strip: bool

    def matches(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")

    def refuses(self, path: str) -> bool:
        rest = path.removeprefix(self.prefix)
        return any(rest == refused or rest.startswith(refused + "/") for refused in REFUSED_PATHS)

    def strips(self, path: str) -> bool:
        return self.strip or path.removeprefix(self.prefix) in OPERATIONAL_PATHS


def api_index(prefixes: Sequence[str]) -> dict[str, Any]:
    """The index of the OpenAPI documents behind a gateway: one per service prefix."""
    return {
        "documents": [
            {"service": prefix.strip("/"), "url": f"{prefix}/openapi.json"} for prefix in prefixes
        ]
    }


class PathGateway:
    def __init__(self, routes: Sequence[Route], lifespans: Sequence[Lifespan] = ()) -> None:
        self.routes = tuple(routes)
        self.lifespans = tuple(lifespans)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        if scope["type"] == "http" and path in ("/api", "/api/"):
            await JSONResponse(api_index([route.prefix for route in self.routes]))(
                scope, receive, send
            )
            return
        for route in self.routes:
            if route.matches(path) and not route.refuses(path):
                if route.strips(path):
                    scope = {**scope, "root_path": scope.get("root_path", "") + route.prefix}
                await route.app(scope, receive, send)
                return
        if scope["type"] == "http":
            body = {"error": {"code": "not_found", "message": f"no service at {path}"}}
            await JSONResponse(body, status_code=404)(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        stack = AsyncExitStack()
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            for lifespan in self.lifespans:
                await stack.enter_async_context(lifespan())
        except BaseException as error:
            await stack.aclose()
            await send({"type": "lifespan.startup.failed", "message": repr(error)})
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        try:
            await stack.aclose()
        except BaseException as error:
            await send({"type": "lifespan.shutdown.failed", "message": repr(error)})
            return
        await send({"type": "lifespan.shutdown.complete"})
