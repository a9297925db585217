"""Background work of a service process: periodic loops and stopping them.

Every composition root runs the same kind of workers next to its app (publishing the
outbox, sweeping, reconciling, attaching proofs): ``every`` runs one on an interval
until the stop event is set, surviving failures (the next round retries), and
``stop_workers`` sets the event and waits for each task to end; ``lifespan_of`` makes
an app lifespan of a runtime's ``start`` and ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import structlog
from fastapi import FastAPI

log = structlog.get_logger(__name__)


async def every(
    stop: asyncio.Event,
    seconds: float,
    work: Callable[[], Awaitable[object]],
    failure_event: str = "worker_failed",
) -> None:
    """Runs ``work`` now and then every ``seconds`` until ``stop`` is set; a failure is
    logged as ``failure_event`` and retried next round. Returns promptly on ``stop``."""
    while not stop.is_set():
        try:
            await work()
        except Exception as failure:  # a worker keeps running; the next round retries
            log.warning(failure_event, error=repr(failure))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


async def stop_workers(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    """Sets ``stop`` and waits for every task (a task's own failure is not raised here:
    it was logged where it happened); empties ``tasks``."""
    stop.set()
    for task in tasks:
        with contextlib.suppress(Exception):
            await task
    tasks.clear()


def lifespan_of(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """An app lifespan that awaits ``start`` before serving and ``stop`` after (also
    when serving ends with an error)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await start()
        try:
            yield
        finally:
            await stop()

    return lifespan
