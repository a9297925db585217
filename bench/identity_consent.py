"""Login and grant latency and throughput of identity and consent on the real stack.

Both services are served by uvicorn on 127.0.0.1 (ephemeral ports) on PostgreSQL,
Kafka and the Geth Clique network, wired as deployed: consent verifies identity's
tokens through identity's JWKS URL and learns accounts from identity's events. All
traffic goes through the client SDK, so every login signs a challenge and every grant
is an EIP-712 message signed on the client.

- logins: ``LOGINS`` sequential logins (challenge, sign, tokens for every audience),
  then the same number from ``WORKERS`` threads at once;
- grants: ``GRANTS`` sequential grants of one patient (each waits for its block), then
  ``GRANTS`` grants from ``WORKERS`` patients at once (one patient's messages are
  ordered by its nonce, different patients' are not), which shows several grants
  per block.

Latency is the SDK call (a grant: nonce, sign, relay, receipt, projection). Run with
``python -m bench identity_consent`` (or ``make bench``). PostgreSQL, Kafka and Geth
are started through the local stack (``EHR_STACK__...`` settings) unless they run
already, and only what this run started is stopped. Figures are printed and written
to ``bench/results/identity_consent.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import sqlalchemy as sa
from devstack.settings import StackSettings
from devstack.stack import Stack
from ehr_client.consent import IMAGING, LABS, MEDICATIONS, NOTES, TREATMENT
from ehr_client.consent_client import ConsentClient, ConsentClientError
from ehr_client.identity import IdentityClient
from ehr_client.keys import UserKeys
from eth_account import Account

from services.consent.main import ConsentRuntime, ConsentSettings
from services.identity.main import IdentitySettings, build
from services.platform.app.logging import configure_logging
from services.platform.app.loopback import bind_loopback, serve_in_thread, url_of
from services.platform.chain.geth import GethChain

LOGINS = int(os.environ.get("EHR_BENCH_IDC_LOGINS", "100"))
GRANTS = int(os.environ.get("EHR_BENCH_IDC_GRANTS", "30"))
WORKERS = int(os.environ.get("EHR_BENCH_IDC_WORKERS", "6"))
PROVIDERS = 10
COMPONENTS = ("postgres", "kafka", "geth")
MONTH = 30 * 86400
SCOPES = [LABS, IMAGING, MEDICATIONS, NOTES, LABS | IMAGING]


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _figures(latencies: list[float], seconds: float, unit: str) -> dict[str, Any]:
    return {
        "count": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
        f"{unit}_per_s": round(len(latencies) / seconds, 1),
        "seconds": round(seconds, 2),
    }


def _timed(work: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


# -- the two services on the real stack ------------------------------------------------------


@contextlib.contextmanager
def _database(stack: Stack, prefix: str) -> Iterator[str]:
    server = sa.make_url(stack.postgres.dsn().replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def _services(stack: Stack, admin: UserKeys, work_dir: Path) -> Iterator[tuple[str, str]]:
    """(identity URL, consent URL) of both services, served until the block exits."""
    geth, bootstrap = stack.geth, stack.kafka.bootstrap_servers
    registrar, relay = Account.create(), Account.create()
    key_file = work_dir / "registrar.key"
    key_file.touch(mode=0o600)
    key_file.write_text(registrar.key.hex())
    with GethChain(list(geth.rpc_urls), geth.chain_id, geth.faucet_private_key()) as faucet:
        faucet.fund(registrar.address, 10**20)
        faucet.fund(relay.address, 10**20)
    identity_socket, consent_socket = bind_loopback(), bind_loopback()
    identity_url = url_of(identity_socket)
    with (
        _database(stack, "bench_identity") as identity_db,
        _database(stack, "bench_consent") as consent_db,
    ):
        consent = ConsentRuntime(
            ConsentSettings(
                jwt={
                    "issuer": "ehr-identity",
                    "audience": "consent",
                    "jwks_url": f"{identity_url}/.well-known/jwks.json",
                },
                data_dir=work_dir / "consent",
                database_url=consent_db,
                kafka_bootstrap_servers=bootstrap,
                chain_rpc_urls=list(geth.rpc_urls),
                chain_id=geth.chain_id,
                chain_private_key=relay.key.hex(),
                identity_consumer_group=f"bench-consent-identity-{uuid.uuid4().hex[:8]}",
            )
        )
        options = IdentitySettings(
            data_dir=work_dir / "identity",
            database_url=identity_db,
            kafka_bootstrap_servers=bootstrap,
            chain_rpc_urls=list(geth.rpc_urls),
            chain_id=geth.chain_id,
            chain_key_file=key_file,
            bootstrap_admin_address=admin.address,
        )
        identity = build(options)
        try:
            with (
                serve_in_thread(identity.app, identity_socket),
                serve_in_thread(consent.app, consent_socket) as consent_url,
            ):
                yield identity_url, consent_url
        finally:
            consent.close()
            identity.store.engine.dispose()
            identity.chain.close()


# -- the workload -----------------------------------------------------------------------------


class Party:
    def __init__(self, keys: UserKeys, account_id: str) -> None:
        self.keys, self.account_id = keys, account_id
        self.token = ""


def _register(identity: IdentityClient, role: str, count: int) -> list[Party]:
    parties = []
    for i in range(count):
        keys = UserKeys.generate()
        account = identity.register(keys, name=f"{role} {i}", role=role)
        parties.append(Party(keys, str(account["account_id"])))
    return parties


def _wait_known(consent_url: str, patients: list[Party], timeout_s: float = 60.0) -> None:
    """Until consent has learnt every patient from identity's events."""
    with ConsentClient(consent_url) as consent:
        for patient in patients:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    consent.nonce(patient.token, patient.account_id)
                    break
                except ConsentClientError as exc:
                    if exc.status != 404 or time.monotonic() > deadline:
                        raise
                time.sleep(0.05)


def _logins(identity_url: str, parties: list[Party]) -> dict[str, Any]:
    latencies: list[float] = []
    with IdentityClient(identity_url) as identity:
        started = time.perf_counter()
        for i in range(LOGINS):
            party = parties[i % len(parties)]
            elapsed, session = _timed(partial(identity.login, party.keys))
            latencies.append(elapsed)
            party.token = session.token("consent")
        sequential = _figures(latencies, time.perf_counter() - started, "logins")

    def worker(index: int) -> list[float]:
        mine: list[float] = []
        with IdentityClient(identity_url) as client:
            for i in range(index, LOGINS, WORKERS):
                elapsed, _ = _timed(partial(client.login, parties[i % len(parties)].keys))
                mine.append(elapsed)
        return mine

    started = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        together = [x for part in pool.map(worker, range(WORKERS)) for x in part]
    concurrent = _figures(together, time.perf_counter() - started, "logins")
    return {"sequential": sequential, f"concurrent_{WORKERS}": concurrent}


def _grant_many(
    consent_url: str, patient: Party, providers: list[UserKeys], indices: range
) -> tuple[list[float], list[int]]:
    latencies: list[float] = []
    blocks: list[int] = []
    with ConsentClient(consent_url) as consent:
        for i in indices:
            provider = providers[i % len(providers)]
            scope = SCOPES[(i // len(providers)) % len(SCOPES)]
            elapsed, grant = _timed(
                partial(
                    consent.grant,
                    patient.keys,
                    patient.token,
                    patient_id=patient.account_id,
                    grantee=provider.address,
                    categories=scope,
                    purpose=TREATMENT,
                    expires_in=MONTH,
                )
            )
            latencies.append(elapsed)
            blocks.append(int(grant["receipt"]["block_number"]))
    return latencies, blocks


def _grants(consent_url: str, patients: list[Party], providers: list[UserKeys]) -> dict[str, Any]:
    started = time.perf_counter()
    latencies, blocks = _grant_many(consent_url, patients[0], providers, range(GRANTS))
    sequential = _figures(latencies, time.perf_counter() - started, "grants")
    sequential["blocks"] = len(set(blocks))

    share = [range(i, GRANTS, WORKERS) for i in range(WORKERS)]
    started = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [
            pool.submit(_grant_many, consent_url, patients[1 + j], providers, share[j])
            for j in range(WORKERS)
        ]
        parts = [future.result() for future in futures]
    seconds = time.perf_counter() - started
    together = [x for lat, _ in parts for x in lat]
    concurrent = _figures(together, seconds, "grants")
    concurrent["blocks"] = len({b for _, bl in parts for b in bl})
    concurrent["patients"] = WORKERS
    return {"sequential": sequential, f"concurrent_{WORKERS}_patients": concurrent}


def measure(stack: Stack, work_dir: Path) -> dict[str, Any]:
    admin = UserKeys.generate()
    with _services(stack, admin, work_dir) as (identity_url, consent_url):
        with IdentityClient(identity_url) as identity:
            patients = _register(identity, "patient", WORKERS + 1)
            providers = [p.keys for p in _register(identity, "provider", PROVIDERS)]
        logins = _logins(identity_url, patients)
        _wait_known(consent_url, patients)
        grants = _grants(consent_url, patients, providers)
    return {"logins": logins, "grants": grants}


def _running(stack: Stack, name: str) -> bool:
    try:
        servers = stack.status([name])
    except Exception:  # nothing to ask yet
        return False
    return bool(servers) and all(s.state == "running" for s in servers)


def run(results_dir: Path) -> dict[str, Any]:
    """Runs the benchmark, prints a table, writes ``identity_consent.json``."""
    # the services log every request as they do when deployed, on stderr: stdout keeps the table
    configure_logging("bench-identity-consent", "INFO", stream=sys.stderr)
    stack = Stack(StackSettings())
    started_here = [name for name in COMPONENTS if not _running(stack, name)]
    if started_here:
        stack.up(started_here)
    try:
        with TemporaryDirectory(prefix="bench-idc-") as tmp:
            figures = measure(stack, Path(tmp))
    finally:
        if started_here:
            stack.down(started_here)
    print(f"{'operation':<34}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}{'per s':>8}{'blocks':>8}")
    for kind, unit in (("logins", "logins_per_s"), ("grants", "grants_per_s")):
        for mode, row in figures[kind].items():
            print(
                f"{kind + ' ' + mode:<34}{row['count']:>5}{row['p50_ms']:>9}"
                f"{row['p99_ms']:>9}{row[unit]:>8}{row.get('blocks', '-')!s:>8}"
            )
    report = {
        "benchmark": "identity_consent",
        "backend": "real stack: PostgreSQL, Kafka, Geth Clique",
        "clique_period_s": stack.settings.geth.period,
        "workload": (
            f"{LOGINS} SDK logins sequential then from {WORKERS} threads; {GRANTS} SDK "
            f"grants of one patient sequential, then {GRANTS} from {WORKERS} patients at once"
        ),
        **figures,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "identity_consent.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    run(Path(__file__).resolve().parent / "results")
