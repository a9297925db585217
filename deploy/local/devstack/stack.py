"""The local real stack: PostgreSQL, Kafka and a Geth Clique network together."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable

from .component import Component, ServerStatus
from .geth import GethNetwork
from .kafka import Kafka
from .postgres import Postgres
from .processes import StackError
from .settings import StackSettings

COMPONENTS = ("postgres", "kafka", "geth")

Progress = Callable[[str], None]


class Stack:
    """Starts, checks and stops the stack's components, in dependency order."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.postgres = Postgres(settings)
        self.kafka = Kafka(settings)
        self.geth = GethNetwork(settings)

    def components(self, names: Iterable[str] | None = None) -> list[Component]:
        by_name: dict[str, Component] = {
            "postgres": self.postgres,
            "kafka": self.kafka,
            "geth": self.geth,
        }
        wanted = list(names or COMPONENTS)
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise StackError(f"unknown component(s) {unknown}; choose from {list(COMPONENTS)}")
        return [by_name[n] for n in COMPONENTS if n in wanted]

    def up(
        self, names: Iterable[str] | None = None, progress: Progress = print
    ) -> dict[str, float]:
        """Starts what is not running and waits until healthy; returns seconds per component."""
        timings: dict[str, float] = {}
        for component in self.components(names):
            progress(f"starting {component.name} ...")
            started = time.monotonic()
            component.up(self.settings.start_timeout_s)
            timings[component.name] = time.monotonic() - started
            progress(f"{component.name} ready in {timings[component.name]:.1f} s")
        return timings

    def down(self, names: Iterable[str] | None = None, progress: Progress = print) -> None:
        for component in reversed(self.components(names)):
            progress(f"stopping {component.name} ...")
            component.down(self.settings.stop_timeout_s)

    def reset(self, names: Iterable[str] | None = None, progress: Progress = print) -> None:
        """Stops the components and deletes their data."""
        for component in reversed(self.components(names)):
            progress(f"resetting {component.name} ...")
            component.reset(self.settings.stop_timeout_s)

    def status(self, names: Iterable[str] | None = None) -> list[ServerStatus]:
        return [server for c in self.components(names) for server in c.servers()]

    def pids(self) -> list[int]:
        return [pid for component in self.components() for pid in component.pids()]

    def environment(self) -> dict[str, str]:
        """Connection settings for the services and tests, as environment variables."""
        env = {
            "EHR_KAFKA__BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "EHR_CHAIN__RPC_URLS": ",".join(self.geth.rpc_urls),
            "EHR_CHAIN__CHAIN_ID": str(self.geth.chain_id),
        }
        if self.geth.faucet_key_file.exists():
            env["EHR_CHAIN__FAUCET_KEY_FILE"] = str(self.geth.faucet_key_file)
        with contextlib.suppress(FileNotFoundError):  # PostgreSQL was never initialised
            env["EHR_DATABASE__URL"] = self.postgres.dsn()
        return env
