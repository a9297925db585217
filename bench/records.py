"""Record store: upload and read latency and throughput by payload size, and the cost of
the consent check on the read path, on the embedded default and on the real stack.

Identity, consent and the record store are served by uvicorn on 127.0.0.1 (ephemeral
ports), wired as in the tests: embedded = SQLite, the embedded log and the in-process
EVM; real = PostgreSQL, Kafka and the Geth Clique network. All traffic goes through the
client SDK (``RecordsClient``), so every figure includes the client-side work:

- upload = the key holders (the record store asks consent for the grantees authorised
  now; the client takes their keys from identity and checks them), FHIR validation
  (``fhir.resources``), AES-256-GCM encryption, key wrapping (patient, the one grantee,
  escrow), provenance signature, HTTP, the server's checks
  (role, ``ProviderRegistry.isVerified`` on chain, hashes, escrow copy) and the commit
  of the version, its keys and its outbox event;
- read = HTTP, the server's policy (for a provider: the consent service's ``check``
  over HTTP, no cache) and the access event, then unwrapping, decryption and the
  provenance check on the client.

Payloads are Observations padded (``note``) to 1 KiB, 16 KiB, 256 KiB and 1 MiB of
canonical JSON. At each size: ``n`` sequential uploads, then ``n`` reads by a provider
holding an active grant (consent checked) and ``n`` reads by the patient (own records,
no check). A provider's read also checks ``ProviderRegistry.isVerified`` on chain, so
both are timed alone too: the record store's ``ConsentCheck`` adapter calling consent
and its ``ProviderVerification`` adapter calling the chain, as on every provider read.

Run with ``python -m bench records`` (or ``make bench``). PostgreSQL, Kafka and Geth are
started through the local stack (``EHR_STACK__...`` settings) unless they run already;
only what this run started is stopped. Figures are printed and written to
``bench/results/records.json``. ``EHR_BENCH_RECORDS_SCALE`` (default 1) multiplies the
number of operations per size.
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
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import sqlalchemy as sa
from devstack.settings import StackSettings
from devstack.stack import Stack
from ehr_client import consent as consent_sdk
from ehr_client.identity import IdentityClient, Session
from ehr_client.keys import UserKeys
from ehr_client.records import (
    LABS_BIT,
    IdentityKeyDirectory,
    Recipient,
    RecordsClient,
    canonical_json,
)
from eth_account import Account

from services.consent.main import ConsentRuntime, ConsentSettings
from services.identity.main import IdentityRuntime, IdentitySettings, build
from services.platform.app.logging import configure_logging
from services.platform.app.loopback import serve_in_thread
from services.platform.bus.embedded import EmbeddedEventBus
from services.platform.chain.geth import GethChain
from services.platform.chain.inprocess import InProcessChain
from services.record_store.adapters.consent_http import HttpConsentCheck
from services.record_store.main import RecordStoreRuntime, RecordStoreSettings

ISSUER = "ehr-identity"
COMPONENTS = ("postgres", "kafka", "geth")
SCALE = float(os.environ.get("EHR_BENCH_RECORDS_SCALE", "1"))
# payload size (bytes of canonical FHIR JSON) -> operations of each kind at that size
SIZES = {1024: 40, 16 * 1024: 40, 256 * 1024: 20, 1024 * 1024: 10}
CHECKS = 100
TREATMENT, OWN = 1, 6


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _figures(latencies: list[float], seconds: float, size: int = 0) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "count": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
        "ops_per_s": round(len(latencies) / seconds, 1),
    }
    if size:
        figures["mib_per_s"] = round(len(latencies) * size / seconds / 1_048_576, 2)
    return figures


def _timed_loop(count: int, work: Callable[[int], Any]) -> tuple[list[float], float]:
    latencies: list[float] = []
    started = time.perf_counter()
    for i in range(count):
        began = time.perf_counter()
        work(i)
        latencies.append(time.perf_counter() - began)
    return latencies, time.perf_counter() - started


def observation(patient_id: str, size: int) -> dict[str, Any]:
    """A valid Observation whose canonical JSON is exactly ``size`` bytes."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-11-20T08:30:00Z",
        "valueQuantity": {"value": 5.4, "unit": "mmol/L"},
        "note": [{"text": "x"}],
    }
    missing = size - len(canonical_json(resource))
    if missing < 0:
        raise ValueError(f"{size} bytes is below the smallest payload")
    resource["note"][0]["text"] = "x" * (1 + missing)
    assert len(canonical_json(resource)) == size
    return resource


# -- the three services -------------------------------------------------------------------


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


def _register_service_account(records_url: str, identity_url: str, admin: UserKeys) -> None:
    """What an administrator does once: submits the record store's signed registration
    (role service) to identity, so the record store can log in and ask consent."""
    with IdentityClient(identity_url) as identity:
        identity.register(admin, name="Admin", role="admin")
        token = identity.login(admin).token("identity")
    registration = httpx.get(f"{records_url}/records/service-registration", timeout=30)
    registration.raise_for_status()
    created = httpx.post(
        f"{identity_url}/accounts",
        json=registration.json(),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    created.raise_for_status()


@dataclass
class Services:
    identity: IdentityRuntime
    identity_url: str
    consent: ConsentRuntime
    consent_url: str
    records: RecordStoreRuntime
    records_url: str


@contextlib.contextmanager
def _services(stack: Stack | None, admin: UserKeys, work_dir: Path) -> Iterator[Services]:
    """The three services on the real stack (``stack``) or the embedded default (None)."""
    options: dict[str, Any] = {
        "data_dir": work_dir / "identity",
        "bootstrap_admin_address": admin.address,
    }
    consent_extra: dict[str, Any] = {}
    records_extra: dict[str, Any] = {}
    with contextlib.ExitStack() as scope:
        if stack is not None:
            geth = stack.geth
            registrar, relay = Account.create(), Account.create()
            with GethChain(list(geth.rpc_urls), geth.chain_id, geth.faucet_private_key()) as faucet:
                faucet.fund(registrar.address, 10**20)
                faucet.fund(relay.address, 10**20)
            key_file = work_dir / "registrar.key"
            key_file.touch(mode=0o600)
            key_file.write_text(registrar.key.hex())
            chain = {"chain_rpc_urls": list(geth.rpc_urls), "chain_id": geth.chain_id}
            group = uuid.uuid4().hex[:8]
            options.update(
                database_url=scope.enter_context(_database(stack, "bench_identity")),
                kafka_bootstrap_servers=stack.kafka.bootstrap_servers,
                chain_key_file=key_file,
                **chain,
            )
            consent_extra = {
                "database_url": scope.enter_context(_database(stack, "bench_consent")),
                "kafka_bootstrap_servers": stack.kafka.bootstrap_servers,
                "chain_private_key": relay.key.hex(),
                "identity_consumer_group": f"bench-consent-identity-{group}",
                **chain,
            }
            records_extra = {
                "database_url": scope.enter_context(_database(stack, "bench_records")),
                "kafka_bootstrap_servers": stack.kafka.bootstrap_servers,
                "identity_consumer_group": f"bench-records-identity-{group}",
                **chain,
            }
            identity = build(IdentitySettings(**options))
        else:
            identity = build(
                IdentitySettings(**options),
                bus=EmbeddedEventBus(work_dir / "consent" / "bus"),
            )
        scope.callback(identity.close)
        identity_url = scope.enter_context(serve_in_thread(identity.app))
        with IdentityClient(identity_url) as client:
            jwks = client.jwks()
        consent = ConsentRuntime(
            ConsentSettings(
                jwt={
                    "issuer": ISSUER,
                    "audience": "consent",
                    "jwks": jwks,
                },
                data_dir=work_dir / "consent",
                **consent_extra,
            )
        )
        scope.callback(consent.close)
        consent_url = scope.enter_context(serve_in_thread(consent.app))
        records = RecordStoreRuntime(
            RecordStoreSettings(
                jwt={"issuer": ISSUER, "audience": "records", "jwks": jwks},
                data_dir=work_dir / "records",
                provider_registry_address=identity.registry.contract.address,
                consent_url=consent_url,
                identity_url=identity_url,
                **records_extra,
            ),
            chain=identity.chain if stack is None else None,
            bus=EmbeddedEventBus(work_dir / "consent" / "bus") if stack is None else None,
        )
        scope.callback(records.close)
        records_url = scope.enter_context(serve_in_thread(records.app))
        _register_service_account(records_url, identity_url, admin)
        yield Services(identity, identity_url, consent, consent_url, records, records_url)


# -- the workload -------------------------------------------------------------------------


@dataclass
class Party:
    account_id: str
    keys: UserKeys
    session: Session
    records: RecordsClient

    @property
    def recipient(self) -> Recipient:
        return Recipient(self.account_id, self.keys.public().encryption_key)


def _party(services: Services, identity: IdentityClient, role: str, admin: Session) -> Party:
    keys = UserKeys.generate()
    account_id = str(identity.register(keys, name=f"bench {role}", role=role)["account_id"])
    if role == "provider":
        identity.verify_provider(admin.token("identity"), account_id, "0x" + "ab" * 32)
    session = identity.login(keys)
    client = RecordsClient(
        services.records_url,
        token=session.token("records"),
        keys=keys,
        account_id=account_id,
        directory=IdentityKeyDirectory(identity, session.token("identity")),
    )
    deadline = time.monotonic() + 60
    while (
        services.records.repository.account(account_id) is None
        or services.consent.repository.account(account_id) is None
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("the services did not learn the account in time")
        time.sleep(0.02)
    return Party(account_id, keys, session, client)


def _grant(services: Services, patient: Party, grantee: Party) -> None:
    """The patient's EIP-712 grant of labs for treatment, relayed by consent."""
    registry = services.consent.registry
    chain = services.consent.chain
    now = int(time.time())
    if isinstance(chain, InProcessChain):  # the in-process chain's clock runs ahead
        block = chain._run(lambda w3: w3.eth.get_block("latest"))
        now = int(max(now, int(block["timestamp"]) + 1))
    message = consent_sdk.GrantMessage(
        patient=patient.keys.address,
        grantee=grantee.keys.address,
        categories=LABS_BIT,
        purpose=TREATMENT,
        expires_at=now + 3600,
        nonce=registry.next_nonce(patient.keys.address),
        deadline=now + 3600,
    )
    signature = Account.sign_message(
        consent_sdk.signable(
            message, chain_id=registry.chain_id, verifying_contract=registry.address
        ),
        private_key=patient.keys.account.key,
    ).signature
    fields = dict(message.typed_message())
    fields["expires_at"] = fields.pop("expiresAt")
    response = httpx.post(
        f"{services.consent_url}/consent/grants",
        json={"message": fields, "signature": "0x" + bytes(signature).hex()},
        headers={"Authorization": f"Bearer {patient.session.token('consent')}"},
        timeout=120,
    )
    if response.status_code not in (200, 201):
        raise RuntimeError(f"grant refused: {response.status_code} {response.text[:200]}")


def measure(stack: Stack | None, work_dir: Path) -> dict[str, Any]:
    admin_keys = UserKeys.generate()
    with _services(stack, admin_keys, work_dir) as services:
        identity = IdentityClient(services.identity_url)  # the clients' key directory
        admin = identity.login(admin_keys)
        author = _party(services, identity, "provider", admin)
        reader = _party(services, identity, "provider", admin)
        patient = _party(services, identity, "patient", admin)
        _grant(services, patient, reader)
        by_size: dict[str, Any] = {}
        for size, base_count in SIZES.items():
            count = max(3, round(base_count * SCALE))
            resource = observation(patient.account_id, size)
            ids: list[str] = []

            def upload(_: int, resource: dict[str, Any] = resource, ids: list[str] = ids) -> None:
                stored = author.records.upload(resource, patient=patient.recipient, category="labs")
                ids.append(stored.record_id)

            def provider_read(i: int, ids: list[str] = ids, size: int = size) -> None:
                opened = reader.records.read(ids[i % len(ids)], purpose=TREATMENT)
                assert opened.basis == "consent" and len(canonical_json(opened.resource)) == size

            def patient_read(i: int, ids: list[str] = ids, size: int = size) -> None:
                opened = patient.records.read(ids[i % len(ids)], purpose=OWN)
                assert opened.basis == "owner" and len(canonical_json(opened.resource)) == size

            upload(0)  # warm-up: first request at this size
            ids.clear()
            up, up_s = _timed_loop(count, upload)
            consented, consented_s = _timed_loop(count, provider_read)
            own, own_s = _timed_loop(count, patient_read)
            by_size[f"{size // 1024}KiB"] = {
                "bytes": size,
                "upload": _figures(up, up_s, size),
                "read_provider_consent_checked": _figures(consented, consented_s, size),
                "read_patient_own_no_check": _figures(own, own_s, size),
            }
        check = HttpConsentCheck(services.consent_url, services.records.account)
        try:
            checks, checks_s = _timed_loop(
                CHECKS,
                lambda _: check.authorising_grant(
                    patient.account_id, reader.account_id, LABS_BIT, TREATMENT
                ),
            )
        finally:
            check.close()
        verification = services.records.service.providers
        verifications, verifications_s = _timed_loop(
            CHECKS, lambda _: verification.is_verified(reader.keys.address)
        )
        for party in (author, reader, patient):
            party.records.close()
        identity.close()
    small = by_size["1KiB"]
    return {
        "by_size": by_size,
        "consent_check": {
            "alone": _figures(checks, checks_s),
            "provider_verification_alone": _figures(verifications, verifications_s),
            "read_1KiB_p50_difference_ms": round(
                small["read_provider_consent_checked"]["p50_ms"]
                - small["read_patient_own_no_check"]["p50_ms"],
                2,
            ),
        },
    }


def _running(stack: Stack, name: str) -> bool:
    try:
        servers = stack.status([name])
    except Exception:  # nothing to ask yet
        return False
    return bool(servers) and all(s.state == "running" for s in servers)


def _print(backend: str, figures: dict[str, Any]) -> None:
    print(f"-- {backend}")
    print(f"{'size':<8}{'operation':<34}{'n':>4}{'p50 ms':>9}{'p99 ms':>9}{'per s':>8}{'MiB/s':>8}")
    for size, rows in figures["by_size"].items():
        for kind in ("upload", "read_provider_consent_checked", "read_patient_own_no_check"):
            row = rows[kind]
            print(
                f"{size:<8}{kind:<34}{row['count']:>4}{row['p50_ms']:>9}{row['p99_ms']:>9}"
                f"{row['ops_per_s']:>8}{row['mib_per_s']:>8}"
            )
    alone = figures["consent_check"]["alone"]
    verified = figures["consent_check"]["provider_verification_alone"]
    print(
        f"consent check alone: p50 {alone['p50_ms']} ms, p99 {alone['p99_ms']} ms; "
        f"ProviderRegistry.isVerified alone: p50 {verified['p50_ms']} ms; "
        f"1 KiB read p50, provider - patient: "
        f"{figures['consent_check']['read_1KiB_p50_difference_ms']} ms"
    )


def run(results_dir: Path) -> dict[str, Any]:
    """Runs the benchmark on both backends, prints tables, writes ``records.json``."""
    configure_logging("bench-records", "WARNING", stream=sys.stderr)
    report: dict[str, Any] = {
        "benchmark": "records",
        "workload": (
            "per payload size: n sequential SDK uploads (validate, encrypt, wrap for patient,"
            " grantee and escrow, sign, send), then n provider reads with consent checked"
            " and n patient reads of own records (fetch, unwrap, decrypt, verify)"
        ),
        "scale": SCALE,
    }
    with TemporaryDirectory(prefix="bench-records-") as tmp:
        report["embedded"] = measure(None, Path(tmp) / "embedded")
    _print("embedded default: SQLite, embedded log, in-process EVM", report["embedded"])
    stack = Stack(StackSettings())
    started_here = [name for name in COMPONENTS if not _running(stack, name)]
    if started_here:
        stack.up(started_here)
    try:
        with TemporaryDirectory(prefix="bench-records-") as tmp:
            report["real"] = measure(stack, Path(tmp))
    finally:
        if started_here:
            stack.down(started_here)
    report["real"]["clique_period_s"] = stack.settings.geth.period
    _print("real stack: PostgreSQL, Kafka, Geth Clique", report["real"])
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "records.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    run(Path(__file__).resolve().parent / "results")
