"""UUIDv7 event ids: strictly increasing, close to the clock, safe across threads."""

from __future__ import annotations

import threading
import uuid

from services.platform.events.envelope import EventIdGenerator

FROZEN_NS = 1_790_000_000_123_456_789  # a fixed instant
FROZEN_MS = FROZEN_NS // 1_000_000


def _millis(event_id: str) -> int:
    return uuid.UUID(event_id).int >> 80


def test_ids_within_one_millisecond_still_increase_and_stay_close_to_the_clock() -> None:
    ids = EventIdGenerator(clock_ns=lambda: FROZEN_NS)
    burst = [ids.new() for _ in range(5_000)]

    assert sorted(burst) == burst
    assert len(set(burst)) == len(burst)
    assert all(uuid.UUID(i).version == 7 for i in burst)
    # 4,096 ticks per millisecond: 5,000 ids on a frozen clock carry at most 1 ms.
    assert _millis(burst[0]) == FROZEN_MS
    assert _millis(burst[-1]) <= FROZEN_MS + 1


def test_a_clock_that_steps_back_does_not_break_the_order() -> None:
    readings = iter([FROZEN_NS, FROZEN_NS - 5_000_000_000, FROZEN_NS + 1_000_000])
    ids = EventIdGenerator(clock_ns=lambda: next(readings))
    first, second, third = ids.new(), ids.new(), ids.new()
    assert first < second < third
    assert _millis(third) == FROZEN_MS + 1


def test_ids_from_many_threads_are_unique_and_increasing_per_thread() -> None:
    ids = EventIdGenerator()
    per_thread: list[list[str]] = [[] for _ in range(4)]

    def work(out: list[str]) -> None:
        for _ in range(2_000):
            out.append(ids.new())

    threads = [threading.Thread(target=work, args=(out,)) for out in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    everything = [i for out in per_thread for i in out]
    assert len(set(everything)) == len(everything) == 8_000
    for out in per_thread:
        assert sorted(out) == out
