"""The embedded default: all five services in one process, behind one gateway app.

No servers to install: one durable embedded event log (``<data_dir>/bus``, shared by
the five services), one in-process EVM running the same contracts (kept in
``<data_dir>/chain``: a restart goes on from the last block, with the same contracts),
SQLite per service. The services are
the same composition roots the real stack runs as separate processes, each given the
shared chain and log; they reach each other over HTTP through this process's own
gateway URL (the record store asks consent and logs in to identity; every service
fetches identity's JWKS), exactly as they do behind nginx.

Commands (``python -m services.embedded``):

- ``demo``: a fresh data dir, the six-step scenario through the SDK, the compliance
  report written to a file; exit status 1 if any step fails (``make demo``);
- ``serve``: serve until interrupted, with an administrator key file for the ``ehr`` CLI.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.audit_analytics.adapters.proofs import DirectEventProofs
from services.audit_analytics.main import AuditAnalyticsRuntime, AuditAnalyticsSettings
from services.consent.main import ConsentRuntime, ConsentSettings
from services.embedded.gateway import Lifespan, PathGateway, Route
from services.identity.main import IdentityRuntime, IdentitySettings, build
from services.ledger_relay.main import LedgerRelayRuntime, LedgerRelaySettings
from services.platform.app.logging import configure_logging
from services.platform.app.loopback import bind_loopback, url_of
from services.platform.bus.embedded import EmbeddedEventBus
from services.platform.chain.inprocess import InProcessChain
from services.record_store.main import RecordStoreRuntime, RecordStoreSettings

ISSUER = "ehr-identity"


class EmbeddedSettings(BaseSettings):
    """``EHR_EMBEDDED__*`` settings of the one-process system."""

    model_config = SettingsConfigDict(env_prefix="EHR_EMBEDDED__", extra="ignore")

    data_dir: Path = Field(Path(".run/embedded"), description="SQLite files, the log, keys")
    host: str = Field("127.0.0.1", description="loopback only")
    port: int = Field(8080, ge=0, le=65535, description="0: any free port")
    admin_address: str | None = Field(None, description="the bootstrap administrator")
    checkpoint_events: int = Field(1000, ge=1)
    checkpoint_interval_ms: int = Field(500, ge=0)
    log_level: str = "WARNING"


@dataclass
class EmbeddedSystem:
    """The five runtimes and the gateway app serving them under their paths."""

    url: str
    app: PathGateway
    chain: InProcessChain
    identity: IdentityRuntime
    consent: ConsentRuntime
    records: RecordStoreRuntime
    relay: LedgerRelayRuntime
    audit: AuditAnalyticsRuntime

    def close(self) -> None:
        """Releases what the runtimes opened (after the gateway's lifespan ended)."""
        runtimes = (self.audit, self.relay, self.records, self.consent, self.identity)
        for runtime in runtimes:
            with contextlib.suppress(Exception):
                runtime.close()
        self.chain.close()


def _lifespan(app: FastAPI) -> Lifespan:
    return lambda: app.router.lifespan_context(app)


def compose(settings: EmbeddedSettings, sock: socket.socket) -> EmbeddedSystem:
    """Builds the five services for serving on ``sock`` (bound, not yet listening)."""
    url = url_of(sock)
    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    log_dir = data / "bus"
    chain = InProcessChain(data / "chain")

    def jwt(audience: str) -> dict[str, Any]:
        return {
            "issuer": ISSUER,
            "audience": audience,
            "jwks_url": f"{url}/identity/.well-known/jwks.json",
        }

    # The in-process parts, whatever the environment says: a deployed service's
    # EHR_DATABASE_URL or EHR_CHAIN_RPC_URLS exported in this shell never half-applies.
    common: dict[str, Any] = {
        "log_level": settings.log_level,
        "database_url": None,
        "kafka_bootstrap_servers": None,
        "chain_rpc_urls": [],
        "chain_id": None,
        "chain_key_file": None,
        "chain_private_key": None,
    }
    identity = build(
        IdentitySettings(
            data_dir=data / "identity",
            bootstrap_admin_address=settings.admin_address,
            login_uri=f"{url}/identity",
            **common,
        ),
        chain=chain.new_client(),
        bus=EmbeddedEventBus(log_dir),
    )
    consent = ConsentRuntime(
        ConsentSettings(jwt=jwt("consent"), data_dir=data / "consent", **common),
        chain=chain.new_client(),
        bus=EmbeddedEventBus(log_dir),
    )
    records = RecordStoreRuntime(
        RecordStoreSettings(
            jwt=jwt("records"),
            data_dir=data / "record-store",
            provider_registry_address=identity.registry.contract.address,
            consent_url=url,
            identity_url=f"{url}/identity",
            **common,
        ),
        chain=chain.new_client(),
        bus=EmbeddedEventBus(log_dir),
    )
    relay = LedgerRelayRuntime(
        LedgerRelaySettings(
            jwt=jwt("ledger"),
            data_dir=data / "ledger-relay",
            checkpoint_events=settings.checkpoint_events,
            checkpoint_interval_ms=settings.checkpoint_interval_ms,
            **common,
        ),
        chain=chain.new_client(),
        bus=EmbeddedEventBus(log_dir),
    )
    audit_bus = EmbeddedEventBus(log_dir)
    audit = AuditAnalyticsRuntime(
        AuditAnalyticsSettings(jwt=jwt("audit"), data_dir=data / "audit-analytics", **common),
        proofs=DirectEventProofs(relay.proofs),
        reader=relay.anchor,
        bus=audit_bus,
    )

    @asynccontextmanager
    async def audit_lifespan() -> AsyncIterator[None]:
        # a bus passed in is started and closed by its owner: this process
        await audit_bus.start()
        try:
            async with audit.app.router.lifespan_context(audit.app):
                yield
        finally:
            await audit_bus.close()

    gateway = PathGateway(
        [
            Route("/identity", identity.app, strip=True),
            Route("/consent", consent.app, strip=False),
            Route("/records", records.app, strip=False),
            Route("/ledger", relay.app, strip=True),
            Route("/audit", audit.app, strip=True),
        ],
        [
            _lifespan(identity.app),
            _lifespan(consent.app),
            _lifespan(records.app),
            _lifespan(relay.app),
            audit_lifespan,
        ],
    )
    return EmbeddedSystem(url, gateway, chain, identity, consent, records, relay, audit)


cli = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)
DataDir = Annotated[Path | None, typer.Option(help="state folder (default: per command)")]
Port = Annotated[int | None, typer.Option(help="loopback port (0: any free port)")]


def _settings(data_dir: Path | None, port: int | None, default_dir: Path) -> EmbeddedSettings:
    overrides: dict[str, Any] = {"data_dir": data_dir or default_dir}
    if port is not None:
        overrides["port"] = port
    return EmbeddedSettings(**overrides)


@cli.command()
def demo(
    data_dir: DataDir = None,
    port: Annotated[int, typer.Option(help="loopback port (0: any free port)")] = 0,
) -> None:
    """Run the six-step scenario on the embedded default (a fresh state every time)."""
    from ehr_client.demo import Endpoints, Scenario
    from ehr_client.keys import UserKeys
    from rich.console import Console

    from services.platform.app.loopback import serve_in_thread

    console = Console(highlight=False, soft_wrap=True)
    settings = _settings(data_dir, port, Path(".run/demo"))
    state = settings.data_dir.resolve() / "state"
    if state.exists():
        shutil.rmtree(state)
    admin = UserKeys.generate()  # the administrator's keys stay on this (client) side
    settings = settings.model_copy(update={"data_dir": state, "admin_address": admin.address})
    configure_logging("embedded", settings.log_level)
    console.print(
        "[bold]EHR Ledger: the whole workflow on the embedded default[/bold] "
        "(one process: embedded log, in-process EVM, SQLite)"
    )
    with console.status("starting the five services and deploying the contracts…"):
        sock = bind_loopback(settings.port, settings.host)
        system = compose(settings, sock)
    ok = False
    try:
        with serve_in_thread(system.app, sock) as url:
            console.print(f"gateway: {url} (/identity /consent /records /ledger /audit)")

            def reader_for(address: str) -> Any:
                if address.lower() != system.relay.anchor.address.lower():
                    raise ValueError(f"unknown AuditAnchor {address}")
                return system.relay.anchor

            result = Scenario(
                Endpoints(url),
                admin,
                reader_for,
                settings.data_dir.parent / "report",
                console=console,
            ).run()
            ok = result.ok
    finally:
        system.close()
    raise typer.Exit(0 if ok else 1)


@cli.command()
def serve(data_dir: DataDir = None, port: Port = None) -> None:
    """Serve the five services under their gateway paths until interrupted."""
    import uvicorn
    from ehr_client.keys import UserKeys, read_key_file, write_key_file

    settings = _settings(data_dir, port, Path(".run/embedded"))
    key_file = settings.data_dir / "admin-key.json"
    admin = read_key_file(key_file) if key_file.exists() else UserKeys.generate()
    if not key_file.exists():
        write_key_file(key_file, admin)
    settings = settings.model_copy(update={"admin_address": admin.address})
    configure_logging("embedded", settings.log_level)
    sock = bind_loopback(settings.port, settings.host)
    system = compose(settings, sock)
    print(f"EHR Ledger (embedded) on {system.url}; administrator key file: {key_file}")
    try:
        uvicorn.Server(uvicorn.Config(system.app, log_level="warning")).run(sockets=[sock])
    finally:
        system.close()


def main(argv: list[str] | None = None) -> None:
    cli(args=argv if argv is not None else sys.argv[1:])
