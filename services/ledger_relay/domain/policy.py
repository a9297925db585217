"""When to cut a checkpoint: every N events or T milliseconds, whichever comes first."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    max_events: int = 1000
    """Cut as soon as this many leaves are not covered by a checkpoint."""
    max_delay_ms: int = 1000
    """Cut when the oldest uncovered leaf has waited this long."""

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.max_delay_ms < 0:
            raise ValueError("max_events must be >= 1 and max_delay_ms >= 0")

    def due(self, uncovered: int, oldest_uncovered_ms: int | None, now_ms: int) -> bool:
        if uncovered <= 0:
            return False
        if uncovered >= self.max_events:
            return True
        return oldest_uncovered_ms is not None and now_ms - oldest_uncovered_ms >= self.max_delay_ms
