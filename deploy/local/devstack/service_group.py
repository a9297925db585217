"""The five services, each a separate process, wired to the stack's Kafka, Geth and
PostgreSQL.

``up`` starts them in dependency order and waits for each one's ``/readyz``:

1. identity (deploys ``ProviderRegistry`` on its first start),
2. consent (deploys ``ConsentRegistry`` on its first start),
3. ledger-relay (deploys ``AuditAnchor`` on its first start),
4. record-store (needs identity's ``ProviderRegistry`` address and consent),
5. audit-analytics (needs the relay's database and ``AuditAnchor`` address).

Bootstrap, at the first ``up`` (nothing here is ever committed):

* one database per service on the stack's PostgreSQL;
* the chain accounts the services pay gas from (identity's registrar, consent's relay,
  the ledger relay), generated into ``<run_dir>/services/keys`` (mode 0600) and
  funded from the Geth faucet whenever their balance is low (e.g. after a chain reset);
* an administrator key pair made client-side with the SDK (``UserKeys``), stored as
  ``<run_dir>/services/keys/admin.json`` (mode 0600):
  ``{"signing_key": "0x<secp256k1>", "encryption_key": "0x<x25519>"}``. Its address
  is identity's bootstrap admin; the stack registers it as ``admin`` and, with its
  token, registers the record store's service account (role ``service``).

Everything a client needs is written to ``<run_dir>/services.json``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from eth_account import Account
from psycopg import sql

from .component import Component, ServerStatus, server_status
from .geth import GethNetwork, rpc_call
from .kafka import Kafka
from .postgres import Postgres
from .processes import ManagedProcess, StackError, wait_until
from .settings import StackSettings

JWT_ISSUER = "ehr-identity"
# Funded again when a balance falls below this (e.g. the chain was reset).
MIN_BALANCE_WEI = 10**20


@dataclass(frozen=True)
class ServiceSpec:
    """One service: its process, its gateway route and its own database."""

    name: str
    module: str
    path: str  # gateway path prefix
    strip_prefix: bool  # as deploy/helm/ehr-ledger/values.yaml gateway.routes
    audience: str  # the `aud` of the tokens it accepts
    database: str


# In start order (each one's dependencies come before it).
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("identity", "services.identity.main", "/identity", True, "identity", "identity"),
    ServiceSpec("consent", "services.consent.main", "/consent", False, "consent", "consent"),
    ServiceSpec("ledger-relay", "services.ledger_relay", "/ledger", True, "ledger", "ledger_relay"),
    ServiceSpec(
        "record-store", "services.record_store.main", "/records", False, "records", "record_store"
    ),
    ServiceSpec(
        "audit-analytics",
        "services.audit_analytics.main",
        "/audit",
        True,
        "audit",
        "audit_analytics",
    ),
)
SERVICE_NAMES = tuple(spec.name for spec in SERVICES)
#: Service ``i`` serves its API on ``base_port + i`` and ``/metrics`` on
#: ``base_port + METRICS_PORT_STEP + i``.
METRICS_PORT_STEP = 10


def write_private(path: Path, text: str) -> None:
    """Writes ``text`` to a file only its owner can read (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


class ServiceGroup(Component):
    """identity, consent, ledger-relay, record-store and audit-analytics."""

    name = "services"
    requires = ("postgres", "kafka", "geth")

    def __init__(
        self, settings: StackSettings, postgres: Postgres, kafka: Kafka, geth: GethNetwork
    ) -> None:
        self._settings = settings
        self._services = settings.services
        self._postgres = postgres
        self._kafka = kafka
        self._geth = geth
        self.state_dir = settings.run_dir / "services"
        self.keys_dir = self.state_dir / "keys"
        self.manifest_file = settings.run_dir / "services.json"
        self.processes = {
            spec.name: ManagedProcess(
                name=spec.name,
                argv=[str(self._services.python), "-m", spec.module],
                pid_file=self.state_dir / f"{spec.name}.pid",
                log_file=settings.logs_dir / f"{spec.name}.log",
                cwd=Path(__file__).resolve().parents[3],
                match=f"-m {spec.module}",
            )
            for spec in SERVICES
        }

    # -- addresses ---------------------------------------------------------

    def port(self, name: str) -> int:
        return self._services.base_port + SERVICE_NAMES.index(name)

    def url(self, name: str) -> str:
        """The service's own base URL (its API, /healthz and /readyz; the gateway
        routes here)."""
        return f"http://{self._settings.host}:{self.port(name)}"

    def metrics_port(self, name: str) -> int:
        """The port of the service's ``/metrics``: apart from its API port, so the
        gateway cannot reach it; only Prometheus scrapes it."""
        return self._services.base_port + METRICS_PORT_STEP + SERVICE_NAMES.index(name)

    def metrics_url(self, name: str) -> str:
        return f"http://{self._settings.host}:{self.metrics_port(name)}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self._settings.host}:{self._settings.gateway.port}"

    @property
    def admin_key_file(self) -> Path:
        return self.keys_dir / "admin.json"

    def _key_file(self, name: str) -> Path:
        return self.keys_dir / f"{name}.key"

    def _data_dir(self, name: str) -> Path:
        return self.state_dir / name

    def _database_url(self, spec: ServiceSpec) -> str:
        dsn = self._postgres.dsn(spec.database)
        return dsn.replace("postgresql://", "postgresql+psycopg://", 1)

    # -- bootstrap ---------------------------------------------------------

    def _create_databases(self) -> None:
        with psycopg.connect(self._postgres.dsn("postgres"), autocommit=True) as conn:
            existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for spec in SERVICES:
                if spec.database not in existing:
                    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(spec.database))
                    conn.execute(create)

    def _chain_key(self, name: str) -> str:
        """The hex private key of a service's chain account, generated once."""
        path = self._key_file(name)
        if not path.exists():
            write_private(path, Account.create().key.hex() + "\n")
        return path.read_text().strip()

    def _admin_keys(self) -> Any:
        """The administrator's keys, made client-side with the SDK on the first ``up``."""
        from ehr_client.keys import UserKeys, read_key_file, write_key_file

        if not self.admin_key_file.exists():
            write_key_file(self.admin_key_file, UserKeys.generate())
        return read_key_file(self.admin_key_file)

    def _fund(self, private_keys: list[str], timeout_s: float) -> None:
        """Tops up each account below ``MIN_BALANCE_WEI`` from the Geth faucet."""
        url = self._geth.rpc_urls[0]
        faucet = Account.from_key(self._geth.faucet_private_key())
        nonce = int(rpc_call(url, "eth_getTransactionCount", [faucet.address, "pending"]), 16)
        gas_price = int(rpc_call(url, "eth_gasPrice"), 16)
        pending: list[str] = []
        for key in private_keys:
            address = Account.from_key(key).address
            if int(rpc_call(url, "eth_getBalance", [address, "latest"]), 16) >= MIN_BALANCE_WEI:
                continue
            signed = faucet.sign_transaction(
                {
                    "to": address,
                    "value": self._services.funding_wei,
                    "gas": 21_000,
                    "gasPrice": gas_price * 2,
                    "nonce": nonce,
                    "chainId": self._geth.chain_id,
                }
            )
            raw = "0x" + bytes(signed.raw_transaction).hex()
            pending.append(rpc_call(url, "eth_sendRawTransaction", [raw]))
            nonce += 1
        if pending:
            self.progress(f"funding {len(pending)} service account(s) from the faucet")
            wait_until(
                lambda: all(rpc_call(url, "eth_getTransactionReceipt", [h]) for h in pending),
                timeout_s,
                "the funding transactions",
            )

    def _register_accounts(self, admin: Any) -> None:
        """Registers the administrator (bootstrap admin) and the record store's service
        account; both are idempotent (409 means already registered)."""
        from ehr_client.identity import IdentityClient, IdentityClientError

        with IdentityClient(self.url("identity")) as identity:
            try:
                identity.register(admin, name="Stack administrator", role="admin")
            except IdentityClientError as exc:
                if exc.status != 409:
                    raise StackError(f"registering the administrator failed: {exc}") from exc
            token = identity.login(admin, ["identity"]).token("identity")
        registration = httpx.get(
            f"{self.url('record-store')}/records/service-registration", timeout=10
        )
        created = httpx.post(
            f"{self.url('identity')}/accounts",
            json=registration.json(),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        if created.status_code not in (201, 409):
            raise StackError(
                f"registering the record store's service account failed: "
                f"{created.status_code} {created.text[:300]}"
            )

    # -- contract addresses --------------------------------------------------

    def provider_registry_address(self) -> str | None:
        record = self._data_dir("identity") / "contracts.json"
        if not record.exists():
            return None
        found: str | None = json.loads(record.read_text()).get(str(self._geth.chain_id))
        return found

    def _state_value(self, database: str, query: str, key: str) -> str | None:
        try:
            with psycopg.connect(self._postgres.dsn(database), connect_timeout=3) as conn:
                row = conn.execute(query, (key,)).fetchone()
        except psycopg.Error:
            return None
        return None if row is None else str(row[0])

    def consent_registry_address(self) -> str | None:
        return self._state_value(
            "consent", "SELECT value FROM consent_state WHERE name = %s", "registry_address"
        )

    def audit_anchor_address(self) -> str | None:
        return self._state_value(
            "ledger_relay", "SELECT value FROM ledger_state WHERE key = %s", "anchor_address"
        )

    # -- environment of each service ----------------------------------------

    def _environment(self, spec: ServiceSpec, admin_address: str) -> dict[str, str]:
        """The service's settings: the shared names of ``services.platform.app.settings``
        (as in the chart's values), then the service's own."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_")}
        env["PYTHONUNBUFFERED"] = "1"
        rpc_urls = json.dumps(self._geth.rpc_urls)
        chain_id = str(self._geth.chain_id)
        kafka = self._kafka.bootstrap_servers
        env.update(
            {
                "EHR_HOST": self._settings.host,
                "EHR_PORT": str(self.port(spec.name)),
                "EHR_METRICS_PORT": str(self.metrics_port(spec.name)),
                "EHR_LOG_LEVEL": self._services.log_level,
                "EHR_DATA_DIR": str(self._data_dir(spec.name)),
                "EHR_DATABASE_URL": self._database_url(spec),
                "EHR_KAFKA_BOOTSTRAP_SERVERS": kafka,
                "EHR_CHAIN_RPC_URLS": rpc_urls,
                "EHR_CHAIN_ID": chain_id,
            }
        )
        if spec.name == "identity":
            env.update(
                {
                    "EHR_CHAIN_KEY_FILE": str(self._key_file("identity-registrar")),
                    "EHR_BOOTSTRAP_ADMIN_ADDRESS": admin_address,
                }
            )
            return env
        env.update(
            {
                "EHR_JWT__ISSUER": JWT_ISSUER,
                "EHR_JWT__AUDIENCE": spec.audience,
                "EHR_JWT__JWKS_URL": f"{self.url('identity')}/.well-known/jwks.json",
            }
        )
        if spec.name == "consent":
            env["EHR_CHAIN_KEY_FILE"] = str(self._key_file("consent-relay"))
        elif spec.name == "ledger-relay":
            env["EHR_CHAIN_KEY_FILE"] = str(self._key_file("ledger-relay"))
        elif spec.name == "record-store":
            registry = self.provider_registry_address()
            if registry is None:
                raise StackError("identity recorded no ProviderRegistry address")
            env.update(
                {
                    "EHR_PROVIDER_REGISTRY_ADDRESS": registry,
                    "EHR_CONSENT_URL": self.url("consent"),
                    "EHR_IDENTITY_URL": self.url("identity"),
                }
            )
        elif spec.name == "audit-analytics":
            anchor = self.audit_anchor_address()
            if anchor is None:
                raise StackError("the ledger relay recorded no AuditAnchor address")
            ledger = next(s for s in SERVICES if s.name == "ledger-relay")
            env.update(
                {
                    "EHR_LEDGER_DATABASE_URL": self._database_url(ledger),
                    "EHR_ANCHOR_ADDRESS": anchor,
                }
            )
        return env

    # -- lifecycle ---------------------------------------------------------

    def ready(self, name: str) -> bool:
        return http_ok(f"{self.url(name)}/readyz")

    def up(self, timeout_s: float) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._create_databases()
        keys = [self._chain_key(n) for n in ("identity-registrar", "consent-relay", "ledger-relay")]
        admin = self._admin_keys()
        self._fund(keys, timeout_s)
        for spec in SERVICES:
            process = self.processes[spec.name]
            started = time.monotonic()
            if process.pid() is None:
                self.progress(f"starting {spec.name} on {self.url(spec.name)} ...")
                process.env = self._environment(spec, admin.address)
                process.start()

            def ready(process: ManagedProcess = process, name: str = spec.name) -> bool:
                process.raise_if_exited()
                return self.ready(name)

            wait_until(ready, timeout_s, f"{spec.name} to be ready ({process.log_file})")
            self.progress(f"{spec.name} ready in {time.monotonic() - started:.1f} s")
            if spec.name == "record-store":
                self._register_accounts(admin)
        self.write_manifest()

    def manifest(self) -> dict[str, Any]:
        gateway = self.gateway_url
        return {
            "gateway_url": gateway,
            "services": {
                spec.name: {
                    "url": self.url(spec.name),
                    "metrics_url": f"{self.metrics_url(spec.name)}/metrics",
                    "gateway_url": gateway + spec.path,
                    "log_file": str(self.processes[spec.name].log_file),
                }
                for spec in SERVICES
            },
            "chain": {"rpc_urls": self._geth.rpc_urls, "chain_id": self._geth.chain_id},
            "kafka_bootstrap_servers": self._kafka.bootstrap_servers,
            "admin_key_file": str(self.admin_key_file),
            "contracts": {
                "provider_registry": self.provider_registry_address(),
                "consent_registry": self.consent_registry_address(),
                "audit_anchor": self.audit_anchor_address(),
            },
            "prometheus_url": f"http://{self._settings.host}:{self._settings.prometheus.port}",
        }

    def write_manifest(self) -> None:
        self.manifest_file.write_text(json.dumps(self.manifest(), indent=2) + "\n")

    def down(self, timeout_s: float) -> None:
        for spec in reversed(SERVICES):
            self.processes[spec.name].stop(timeout_s)

    def reset(self, timeout_s: float) -> None:
        """Stops the services and deletes their state, keys and databases."""
        super().reset(timeout_s)
        self.manifest_file.unlink(missing_ok=True)
        if self._postgres.pid() is None:
            return  # nothing to drop (or the cluster itself is being reset)
        with psycopg.connect(self._postgres.dsn("postgres"), autocommit=True) as conn:
            for spec in SERVICES:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(spec.database)
                    )
                )

    def servers(self) -> list[ServerStatus]:
        statuses = []
        for spec in SERVICES:
            pid = self.processes[spec.name].pid()
            healthy = pid is not None and self.ready(spec.name)
            detail = f"gateway {spec.path}"
            statuses.append(
                server_status("services", spec.name, self.url(spec.name), pid, healthy, detail)
            )
        return statuses
