"""The demo scenario run in this process against a composed embedded default."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ehr_client.demo import Endpoints, Scenario, ScenarioResult
from ehr_client.keys import UserKeys
from rich.console import Console

from services.embedded.main import EmbeddedSettings, EmbeddedSystem, compose
from services.platform.app.loopback import bind_loopback, serve_in_thread


@contextmanager
def scenario_on(
    settings: EmbeddedSettings, admin: UserKeys, report_dir: Path, timeout_s: float = 30
) -> Iterator[tuple[EmbeddedSystem, ScenarioResult]]:
    """Composes the system, runs the scenario as ``admin`` through its gateway, and
    yields the system (still open, no longer serving) with the result."""
    sock = bind_loopback()
    system = compose(settings, sock)
    try:
        with serve_in_thread(system.app, sock) as url:
            result = Scenario(
                Endpoints(url),
                admin,
                lambda _: system.relay.anchor,
                report_dir,
                console=Console(file=open(os.devnull, "w")),  # noqa: SIM115
                timeout_s=timeout_s,
            ).run()
        yield system, result
    finally:
        system.close()
