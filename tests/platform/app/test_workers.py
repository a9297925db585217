"""Background workers: ``every`` survives failures and stops promptly; ``stop_workers``
waits for each task."""

from __future__ import annotations

import asyncio
import time

from services.platform.app.workers import every, stop_workers


async def test_every_retries_after_a_failure_and_stops_promptly() -> None:
    stop = asyncio.Event()
    rounds: list[float] = []

    async def work() -> None:
        rounds.append(time.monotonic())
        if len(rounds) == 1:
            raise RuntimeError("the database is restarting")

    task = asyncio.create_task(every(stop, 0.01, work, "test_worker_failed"))
    deadline = time.monotonic() + 5
    while len(rounds) < 3:
        assert time.monotonic() < deadline, "the worker stopped after its failure"
        await asyncio.sleep(0.005)
    # a long interval does not delay stopping
    slow_stop = asyncio.Event()
    slow_rounds: list[int] = []

    async def slow_work() -> None:
        slow_rounds.append(1)

    slow = asyncio.create_task(every(slow_stop, 3600, slow_work))
    while not slow_rounds:
        await asyncio.sleep(0.005)
    started = time.monotonic()
    await stop_workers(slow_stop, [slow])
    assert time.monotonic() - started < 1 and slow.done() and slow_rounds == [1]
    tasks = [task]
    await stop_workers(stop, tasks)
    assert task.done() and tasks == [] and stop.is_set()


async def test_stop_workers_waits_for_every_task_even_after_one_failed() -> None:
    stop = asyncio.Event()
    finished: list[str] = []

    async def failing() -> None:
        raise ValueError("broken worker")

    async def careful() -> None:
        await stop.wait()
        await asyncio.sleep(0.05)  # its own shutdown work
        finished.append("careful")

    tasks = [asyncio.create_task(failing()), asyncio.create_task(careful())]
    await stop_workers(stop, tasks)
    assert finished == ["careful"] and tasks == []


async def test_lifespan_of_starts_before_and_stops_after_even_on_error() -> None:
    from fastapi import FastAPI

    from services.platform.app.workers import lifespan_of

    calls: list[str] = []

    async def start() -> None:
        calls.append("start")

    async def stop() -> None:
        calls.append("stop")

    lifespan = lifespan_of(start, stop)
    async with lifespan(FastAPI()):
        assert calls == ["start"]
    assert calls == ["start", "stop"]
    try:
        async with lifespan(FastAPI()):
            raise RuntimeError("serving failed")
    except RuntimeError:
        pass
    assert calls == ["start", "stop", "start", "stop"]
