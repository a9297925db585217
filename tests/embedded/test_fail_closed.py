"""A service's own process fails closed: without its database, Kafka or chain settings it
refuses to start (one line naming the setting, exit status 2, no traceback) and never
composes the in-process chain, the embedded log or SQLite in their place; only
``services.embedded`` does.

Each service is started exactly as the devstack (and the chart, whose ``command`` is the
same) starts it: ``python -m <module>``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from devstack.service_group import SERVICES, ServiceSpec

PROJECT_ROOT = Path(__file__).resolve().parents[2]
JWKS = json.dumps({"keys": []})

# What each service needs besides the shared settings, so that only those are missing.
OWN_SETTINGS: dict[str, dict[str, str]] = {
    "identity": {},
    "consent": {},
    "ledger-relay": {},
    "record-store": {
        "EHR_PROVIDER_REGISTRY_ADDRESS": "0x" + "11" * 20,
        "EHR_CONSENT_URL": "http://127.0.0.1:9",
        "EHR_IDENTITY_URL": "http://127.0.0.1:9",
    },
    "audit-analytics": {
        "EHR_ANCHOR_ADDRESS": "0x" + "22" * 20,
        "EHR_LEDGER_DATABASE_URL": "postgresql+psycopg://ehr@127.0.0.1:9/ledger_relay",
    },
}
# Everything a service process needs (unreachable addresses: a refusal comes first).
DEPLOYED = {
    "EHR_DATABASE_URL": "postgresql+psycopg://ehr@127.0.0.1:9/ehr",
    "EHR_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
    "EHR_CHAIN_RPC_URLS": '["http://127.0.0.1:9"]',
    "EHR_CHAIN_ID": "1337",
    "EHR_CHAIN_KEY_FILE": "/nonexistent/chain.key",
}


def run(
    spec: ServiceSpec, data_dir: Path, settings: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_")}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(sys.path),
            "EHR_DATA_DIR": str(data_dir),
            "EHR_PORT": "9",
            "EHR_JWT__ISSUER": "ehr-identity",
            "EHR_JWT__AUDIENCE": spec.audience,
            "EHR_JWT__JWKS": JWKS,
            **OWN_SETTINGS[spec.name],
            **settings,
        }
    )
    return subprocess.run(
        [sys.executable, "-m", spec.module],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_refused(result: subprocess.CompletedProcess[str], spec: ServiceSpec) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{spec.name}: refusing to start: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("spec", SERVICES, ids=[s.name for s in SERVICES])
def test_a_service_without_chain_database_and_kafka_refuses_to_start(
    spec: ServiceSpec, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    line = assert_refused(run(spec, data_dir, {}), spec)
    for name in ("EHR_CHAIN_RPC_URLS", "EHR_DATABASE_URL", "EHR_KAFKA_BOOTSTRAP_SERVERS"):
        assert name in line
    # nothing composed in their place: no SQLite file, no embedded log, no chain key
    assert not data_dir.exists()


@pytest.mark.parametrize("spec", SERVICES, ids=[s.name for s in SERVICES])
def test_a_service_without_a_chain_rpc_url_names_exactly_that_setting(
    spec: ServiceSpec, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    missing = "EHR_CHAIN_RPC_URLS"
    settings = {k: v for k, v in DEPLOYED.items() if k != missing}
    line = assert_refused(run(spec, data_dir, settings), spec)
    assert missing in line
    for present in settings:
        assert present not in line
    assert not data_dir.exists()


def test_a_required_service_setting_missing_is_one_line_too(tmp_path: Path) -> None:
    spec = next(s for s in SERVICES if s.name == "record-store")
    result = subprocess.run(
        [sys.executable, "-m", spec.module],
        cwd=PROJECT_ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("EHR_")},
            "PYTHONPATH": os.pathsep.join(sys.path),
            "EHR_DATA_DIR": str(tmp_path / "data"),
            **DEPLOYED,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = assert_refused(result, spec)
    assert "EHR_CONSENT_URL: not set" in line
    assert "EHR_JWT: not set" in line


def test_the_embedded_default_runs_its_in_process_parts_whatever_the_environment_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployed service's settings exported in the shell (``EHR_DATABASE_URL`` ...)
    never half-apply to the embedded default: every service there keeps SQLite, the
    embedded log and the one in-process chain."""
    from services.embedded.main import EmbeddedSettings, compose
    from services.platform.app.loopback import bind_loopback
    from services.platform.bus.embedded import EmbeddedEventBus
    from services.platform.chain.inprocess import InProcessChain

    for name, value in DEPLOYED.items():
        monkeypatch.setenv(name, value)
    sock = bind_loopback(0, "127.0.0.1")
    system = compose(EmbeddedSettings(data_dir=tmp_path / "embedded", port=0), sock)
    try:
        runtimes = {
            "identity": (system.identity.store.engine, system.identity.bus),
            "consent": (system.consent.engine, system.consent.bus),
            "record-store": (system.records.engine, system.records.bus),
            "ledger-relay": (system.relay.engine, system.relay.bus),
            "audit-analytics": (system.audit.engine, system.audit.bus),
        }
        for name, (engine, bus) in runtimes.items():
            assert engine.url.get_backend_name() == "sqlite", name
            assert isinstance(bus, EmbeddedEventBus), name
        for chain in (system.identity.chain, system.consent.chain, system.relay.chain):
            assert isinstance(chain, InProcessChain)
    finally:
        system.close()
        sock.close()
