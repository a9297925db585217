"""The five services and the nginx gateway as `make up` starts them, on the real Kafka,
Geth and PostgreSQL: readiness, routing as the chart's gateway, a smoke flow through
the gateway with the client SDK, loopback only, and `down` leaving nothing behind."""

from __future__ import annotations

import json
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from devstack.geth import rpc_call
from devstack.processes import pid_alive, pid_cmdline
from devstack.service_group import SERVICES
from devstack.stack import Stack
from ehr_client.identity import IdentityClient
from ehr_client.keys import UserKeys

pytestmark = [pytest.mark.kafka, pytest.mark.geth, pytest.mark.postgres]

STRIPPED = [spec for spec in SERVICES if spec.strip_prefix]
KEPT = [spec for spec in SERVICES if not spec.strip_prefix]


def _manifest(stack: Stack) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(stack.services.manifest_file.read_text())
    return document


def _admin_keys(path: Path) -> UserKeys:
    """The agreed format: JSON with hex ``signing_key`` (secp256k1) and ``encryption_key``
    (X25519), rebuilt with ``UserKeys.from_private_bytes``."""
    stored = json.loads(path.read_text())
    return UserKeys.from_private_bytes(
        bytes.fromhex(stored["signing_key"].removeprefix("0x")),
        bytes.fromhex(stored["encryption_key"].removeprefix("0x")),
    )


def _poll(what: str, probe: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def test_services_json_names_the_gateway_services_chain_keys_and_contracts(
    services_stack: Stack,
) -> None:
    manifest = _manifest(services_stack)
    assert manifest["gateway_url"] == services_stack.gateway.url
    assert set(manifest["services"]) == {spec.name for spec in SERVICES}
    for spec in SERVICES:
        entry = manifest["services"][spec.name]
        assert entry["url"] == services_stack.services.url(spec.name)
        assert entry["metrics_url"] == services_stack.services.metrics_url(spec.name) + "/metrics"
        assert entry["gateway_url"] == manifest["gateway_url"] + spec.path
    assert manifest["chain"] == {
        "rpc_urls": services_stack.geth.rpc_urls,
        "chain_id": services_stack.geth.chain_id,
    }
    for name in ("provider_registry", "consent_registry", "audit_anchor"):
        address = manifest["contracts"][name]
        assert address, f"{name} missing from services.json"
        code = rpc_call(services_stack.geth.rpc_urls[0], "eth_getCode", [address, "latest"])
        assert len(code) > 2, f"no contract at {name} {address}"

    key_file = Path(manifest["admin_key_file"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    _admin_keys(key_file)  # the SDK rebuilds the administrator's keys from it
    for key in (key_file.parent).glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_every_service_is_healthy_and_ready_directly(services_stack: Stack) -> None:
    for spec in SERVICES:
        url = services_stack.services.url(spec.name)
        health = httpx.get(f"{url}/healthz", timeout=5)
        assert health.status_code == 200, (spec.name, health.text)
        assert health.json()["service"] == spec.name
        ready = httpx.get(f"{url}/readyz", timeout=5)
        assert ready.status_code == 200, (spec.name, ready.text)
        assert ready.json()["status"] == "ready"


@pytest.mark.parametrize("spec", STRIPPED, ids=[s.name for s in STRIPPED])
def test_gateway_strips_the_prefix_of_services_serving_at_their_root(
    services_stack: Stack, spec: Any
) -> None:
    gateway = services_stack.gateway.url
    for probe in ("healthz", "readyz"):
        reply = httpx.get(f"{gateway}{spec.path}/{probe}", timeout=5)
        assert reply.status_code == 200, (spec.path, probe, reply.text)
    assert httpx.get(f"{gateway}{spec.path}/healthz", timeout=5).json()["service"] == spec.name


@pytest.mark.parametrize("spec", KEPT, ids=[s.name for s in KEPT])
def test_gateway_keeps_the_prefix_of_consent_and_records(services_stack: Stack, spec: Any) -> None:
    """As in the chart, /consent/... and /records/... reach the service unchanged: the
    service's own answer (its JSON error body and request id) comes back. Their
    operational routes, at the service's root, are routed there from under the prefix."""
    gateway = services_stack.gateway.url
    path = {"consent": "/consent/registry", "record-store": "/records/service-registration"}
    reply = httpx.get(f"{gateway}{path[spec.name]}", timeout=10)
    assert "x-request-id" in reply.headers, "the answer did not come from the service"
    if spec.name == "consent":
        assert reply.status_code == 401, reply.text  # the service asks for a token
        assert reply.json()["error"]["code"]
    else:
        assert reply.status_code == 200, reply.text
        assert reply.json()["role"] == "service"
    health = httpx.get(f"{gateway}{spec.path}/healthz", timeout=5)
    assert health.status_code == 200, health.text
    assert health.json()["service"] == spec.name
    assert httpx.get(f"{gateway}{spec.path}/readyz", timeout=10).status_code == 200
    schema = httpx.get(f"{gateway}{spec.path}/openapi.json", timeout=5).json()
    assert schema["paths"], schema
    assert all(p.startswith(spec.path) for p in schema["paths"]), schema["paths"]
    # Only those three: any other path under the prefix stays the service's own.
    other = httpx.get(f"{gateway}{spec.path}/healthz/more", timeout=5)
    assert other.status_code == 404 and "x-request-id" in other.headers


@pytest.mark.parametrize("path", ["/", "/nothing", "/identityx/healthz", "/metrics", "/healthz"])
def test_gateway_answers_404_for_unrouted_paths(services_stack: Stack, path: str) -> None:
    reply = httpx.get(f"{services_stack.gateway.url}{path}", timeout=5)
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "route_not_found"
    assert "x-request-id" not in reply.headers  # nginx answered, no service did


@pytest.mark.parametrize("spec", SERVICES, ids=[s.name for s in SERVICES])
def test_metrics_are_on_the_metrics_port_only_never_through_the_gateway(
    services_stack: Stack, spec: Any
) -> None:
    """``<prefix>/metrics`` gets nginx's own 404 (also for consent and the record store,
    whose routes would otherwise take ``metrics`` for an id); the API port has no
    ``/metrics``; the metrics port (what Prometheus scrapes) answers the text format."""
    gateway = services_stack.gateway.url
    for path in (f"{spec.path}/metrics", f"{spec.path}/metrics/", f"{spec.path}/metrics/x"):
        reply = httpx.get(f"{gateway}{path}", timeout=5)
        assert reply.status_code == 404, (path, reply.text)
        assert reply.json()["error"]["code"] == "route_not_found", path
        assert "x-request-id" not in reply.headers, path  # nginx answered, no service did
    api = httpx.get(f"{services_stack.services.url(spec.name)}/metrics", timeout=5)
    assert api.status_code == 404, api.text
    assert api.json()["error"]["code"] == "not_found"
    assert "x-request-id" in api.headers  # the service itself answered
    metrics_url = services_stack.services.metrics_url(spec.name)
    assert metrics_url != services_stack.services.url(spec.name)
    scraped = httpx.get(f"{metrics_url}/metrics", timeout=5)
    assert scraped.status_code == 200, scraped.text
    assert scraped.headers["content-type"].startswith("text/plain")
    assert "http_requests_total{" in scraped.text


def test_smoke_flow_through_the_gateway_with_the_sdk(services_stack: Stack) -> None:
    manifest = _manifest(services_stack)
    gateway = manifest["gateway_url"]
    admin = _admin_keys(Path(manifest["admin_key_file"]))
    with IdentityClient(f"{gateway}/identity") as identity:
        patient = UserKeys.generate()
        registered = identity.register(
            patient, name=f"Patient {uuid.uuid4().hex[:6]}", role="patient"
        )
        patient_session = identity.login(patient)
        assert identity.whoami(patient_session.token("identity"))["role"] == "patient"

        admin_session = identity.login(admin)
        assert admin_session.role == "admin"
        auditor = UserKeys.generate()
        identity.register(
            auditor,
            name=f"Auditor {uuid.uuid4().hex[:6]}",
            role="auditor",
            admin_token=admin_session.token("identity"),
        )
        auditor_session = identity.login(auditor)
        assert auditor_session.role == "auditor"

    def get(path: str, token: str) -> httpx.Response:
        return httpx.get(
            f"{gateway}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    registry = get("/consent/registry", patient_session.token("consent"))
    assert registry.status_code == 200, registry.text
    assert registry.json()["verifying_contract"] == manifest["contracts"]["consent_registry"]

    # The patient's registration event reaches audit-analytics over Kafka, is anchored
    # by the ledger relay and verifies against the chain.
    audit_token = auditor_session.token("audit")

    def registration_event() -> str | None:
        found = get(f"/audit/events?actor_id={registered['account_id']}", audit_token)
        assert found.status_code == 200, found.text
        items = found.json()["items"]
        return str(items[0]["id"]) if items else None

    event_id = _poll("the registration event in the audit store", registration_event)

    def verified() -> bool:
        reply = get(f"/audit/events/{event_id}/verification", audit_token)
        return reply.status_code == 200 and reply.json()["verified"] is True

    _poll("the registration event to verify against the chain", verified, timeout_s=90)

    checkpoints = get("/ledger/checkpoints", auditor_session.token("ledger"))
    assert checkpoints.status_code == 200, checkpoints.text
    body = checkpoints.json()
    assert body["checkpoints"], "no anchored checkpoint"
    assert body["contract"]["address"] == manifest["contracts"]["audit_anchor"]


def test_every_server_listens_on_loopback_only(services_stack: Stack) -> None:
    servers = services_stack.status(["postgres", "kafka", "geth", "services", "gateway"])
    names = {s.name for s in servers}
    assert {spec.name for spec in SERVICES} | {"gateway"} <= names
    for server in servers:
        assert server.state == "running", server
        assert server.listening, f"{server.name} listens on nothing"
        exposed = [s for s in server.listening if not s.loopback]
        assert not exposed, f"{server.name} listens beyond loopback: {exposed}"


def test_gateway_runs_unprivileged_when_the_stack_runs_as_root(services_stack: Stack) -> None:
    pid = services_stack.gateway.process.pid()
    assert pid is not None
    uid = int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[1])
    assert uid != 0, "nginx runs as root"


def test_env_names_the_gateway_and_services_file(services_stack: Stack) -> None:
    env = services_stack.environment()
    assert env["EHR_GATEWAY_URL"] == services_stack.gateway.url
    assert env["EHR_SERVICES_FILE"] == str(services_stack.services.manifest_file)


def test_second_up_keeps_the_running_processes(services_stack: Stack) -> None:
    before = {s.name: s.pid for s in services_stack.status(["services", "gateway"])}
    services_stack.up(["gateway"], progress=lambda _: None)
    after = {s.name: s.pid for s in services_stack.status(["services", "gateway"])}
    assert after == before


def _processes_using(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not pid_alive(pid := int(entry.name)):
            continue
        if any(str(folder) in arg for arg in pid_cmdline(pid)):
            found.append(pid)
    return found


def _processes_with_environment(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not pid_alive(pid := int(entry.name)):
            continue
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in environment:
            found.append(pid)
    return found


def test_the_gateway_publishes_the_five_documents_with_paths_that_resolve(
    services_stack: Stack,
) -> None:
    gateway = services_stack.gateway.url
    index = httpx.get(f"{gateway}/api", timeout=10).json()
    assert {entry["url"] for entry in index["documents"]} == {
        f"{spec.path}/openapi.json" for spec in SERVICES
    }
    for entry in index["documents"]:
        document = httpx.get(gateway + entry["url"], timeout=10).json()
        base = gateway + (document.get("servers") or [{"url": ""}])[0]["url"]
        plain = [p for p, item in document["paths"].items() if "get" in item and "{" not in p]
        for path in plain:
            reply = httpx.get(base + path, timeout=10)
            assert reply.status_code not in (404, 405), (entry["url"], path, reply.text)


def test_down_stops_the_services_and_the_gateway_leaving_no_process(
    services_stack: Stack,
) -> None:
    """Runs last in this module: the fixture's teardown then has nothing left to stop."""
    servers = services_stack.status(["services", "gateway"])
    pids = [s.pid for s in servers if s.pid is not None]
    assert len(pids) == len(SERVICES) + 1
    services_stack.down(["gateway", "services"], progress=lambda _: None)
    assert all(s.state == "stopped" for s in services_stack.status(["services", "gateway"]))
    assert not [pid for pid in pids if pid_alive(pid)]
    run_dir = services_stack.settings.run_dir
    assert _processes_using(run_dir / "gateway") == []
    # Each service process has its data folder under the run dir in its environment.
    assert _processes_with_environment(str(run_dir / "services")) == []
