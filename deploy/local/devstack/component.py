"""What every stack component (Kafka, Geth, PostgreSQL) offers the stack."""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .processes import ListeningSocket, listening_sockets


@dataclass(frozen=True)
class ServerStatus:
    """One server process of a component, as ``make status`` shows it."""

    component: str
    name: str
    address: str
    state: str  # "running", "stopped" or "unhealthy"
    pid: int | None
    detail: str = ""
    listening: list[ListeningSocket] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Component(ABC):
    """A real server (or group of servers) started from project-local binaries."""

    name: str
    state_dir: Path
    # Components that must be up before this one (``up`` starts them first).
    requires: tuple[str, ...] = ()

    def set_progress(self, progress: Callable[[str], None]) -> None:
        """Where a component with several steps reports them (``Stack.up`` sets it)."""
        self._progress = progress

    def progress(self, message: str) -> None:
        report: Callable[[str], None] | None = getattr(self, "_progress", None)
        if report is not None:
            report(message)

    @abstractmethod
    def up(self, timeout_s: float) -> None:
        """Starts whatever is not running and waits until every server is healthy."""

    @abstractmethod
    def down(self, timeout_s: float) -> None:
        """Stops every server of this component; leaves no process behind."""

    @abstractmethod
    def servers(self) -> list[ServerStatus]:
        """The current state of each server."""

    def pids(self) -> list[int]:
        return [s.pid for s in self.servers() if s.pid is not None]

    def reset(self, timeout_s: float) -> None:
        """Stops the component and deletes its data."""
        self.down(timeout_s)
        shutil.rmtree(self.state_dir, ignore_errors=True)


def server_status(
    component: str, name: str, address: str, pid: int | None, healthy: bool, detail: str = ""
) -> ServerStatus:
    if pid is None:
        return ServerStatus(component, name, address, "stopped", None)
    return ServerStatus(
        component,
        name,
        address,
        "running" if healthy else "unhealthy",
        pid,
        detail,
        listening_sockets(pid),
    )
