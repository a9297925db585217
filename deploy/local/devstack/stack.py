"""The local real stack: PostgreSQL, Kafka, a Geth Clique network, the five services,
the nginx gateway and Prometheus."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable

from .component import Component, ServerStatus
from .gateway import Gateway
from .geth import GethNetwork
from .kafka import Kafka
from .postgres import Postgres
from .processes import StackError
from .prometheus import Prometheus
from .service_group import ServiceGroup
from .settings import ALL_COMPONENTS, StackSettings

COMPONENTS = ALL_COMPONENTS

Progress = Callable[[str], None]


def _prefixed(progress: Progress, prefix: str) -> Progress:
    def report(message: str) -> None:
        progress(f"{prefix}: {message}")

    return report


class Stack:
    """Starts, checks and stops the stack's components, in dependency order."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.postgres = Postgres(settings)
        self.kafka = Kafka(settings)
        self.geth = GethNetwork(settings)
        self.services = ServiceGroup(settings, self.postgres, self.kafka, self.geth)
        self.gateway = Gateway(settings, self.services)
        self.prometheus = Prometheus(settings, self.services, self.geth)
        self._by_name: dict[str, Component] = {
            "postgres": self.postgres,
            "kafka": self.kafka,
            "geth": self.geth,
            "services": self.services,
            "gateway": self.gateway,
            "prometheus": self.prometheus,
        }

    def components(
        self, names: Iterable[str] | None = None, *, with_requirements: bool = False
    ) -> list[Component]:
        """The named components (default: the settings' selection) in start order;
        ``with_requirements`` adds what they need (e.g. ``services`` needs Kafka)."""
        wanted = set(names or self.settings.components)
        unknown = [n for n in wanted if n not in COMPONENTS]
        if unknown:
            raise StackError(f"unknown component(s) {unknown}; choose from {list(COMPONENTS)}")
        if with_requirements:
            pending = list(wanted)
            while pending:
                for required in self._by_name[pending.pop()].requires:
                    if required not in wanted:
                        wanted.add(required)
                        pending.append(required)
        return [self._by_name[n] for n in COMPONENTS if n in wanted and n in self._by_name]

    def up(
        self, names: Iterable[str] | None = None, progress: Progress = print
    ) -> dict[str, float]:
        """Starts what is not running and waits until healthy; returns seconds per component."""
        timings: dict[str, float] = {}
        for component in self.components(names, with_requirements=True):
            progress(f"starting {component.name} ...")
            started = time.monotonic()
            component.set_progress(_prefixed(progress, component.name))
            component.up(self.settings.start_timeout_s)
            timings[component.name] = time.monotonic() - started
            progress(f"{component.name} ready in {timings[component.name]:.1f} s")
        return timings

    def down(self, names: Iterable[str] | None = None, progress: Progress = print) -> None:
        """Stops the named components (default: all of them, whatever was started)."""
        for component in reversed(self.components(names or COMPONENTS)):
            progress(f"stopping {component.name} ...")
            component.down(self.settings.stop_timeout_s)

    def reset(self, names: Iterable[str] | None = None, progress: Progress = print) -> None:
        """Stops the components and deletes their data."""
        for component in reversed(self.components(names or COMPONENTS)):
            progress(f"resetting {component.name} ...")
            component.reset(self.settings.stop_timeout_s)

    def status(self, names: Iterable[str] | None = None) -> list[ServerStatus]:
        return [server for c in self.components(names) for server in c.servers()]

    def pids(self) -> list[int]:
        return [pid for component in self.components(COMPONENTS) for pid in component.pids()]

    def environment(self) -> dict[str, str]:
        """Connection settings for the services and tests, as environment variables, under
        the names every service reads (``services.platform.app.settings``); the database
        URL is the server's, each service has its own database on it."""
        env = {
            "EHR_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "EHR_CHAIN_RPC_URLS": ",".join(self.geth.rpc_urls),
            "EHR_CHAIN_ID": str(self.geth.chain_id),
        }
        if self.geth.faucet_key_file.exists():
            env["EHR_CHAIN_FAUCET_KEY_FILE"] = str(self.geth.faucet_key_file)
        with contextlib.suppress(FileNotFoundError):  # PostgreSQL was never initialised
            env["EHR_DATABASE_URL"] = self.postgres.dsn()
        if self.services.manifest_file.exists():
            env["EHR_GATEWAY_URL"] = self.gateway.url
            env["EHR_SERVICES_FILE"] = str(self.services.manifest_file)
            env["EHR_ADMIN_KEY_FILE"] = str(self.services.admin_key_file)
        if self.prometheus.process.pid() is not None:
            env["EHR_PROMETHEUS_URL"] = self.prometheus.url
        return env
