"""Every panel query of the committed Grafana dashboards returns data from a real
Prometheus scraping the real services and Geth sealers, after real traffic.

The stack (Kafka, Geth, PostgreSQL, the five services, the nginx gateway and
Prometheus) is started as `make up` starts it. Before any error, the error panels
must show a finite value (0 without errors) for every service with traffic, not "no
data". Then the traffic: the six-step scenario (`ehr demo`) through the gateway, then a
chain outage: every sealer stopped for a moment, so the relay counts a chain error and
the services' readiness answers 503 (the error series themselves), then the sealers
restarted and anchoring resumed. Each panel's PromQL is sent to Prometheus' HTTP API
with the Grafana variables replaced by a concrete window, polling with a deadline until
it returns at least one finite sample.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from devstack.prometheus import job_name
from devstack.service_group import SERVICES
from devstack.settings import PROJECT_ROOT
from devstack.stack import Stack
from ehr_client.identity import IdentityClient
from ehr_client.keys import UserKeys

pytestmark = [pytest.mark.kafka, pytest.mark.geth, pytest.mark.postgres]

DASHBOARDS = PROJECT_ROOT / "deploy" / "helm" / "ehr-ledger" / "dashboards"
# At least four scrape intervals (the test stack scrapes every 2 s, `make up` every 5 s).
WINDOW = "1m"
GRAFANA_VARIABLES = re.compile(
    r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}"
)


def panel_queries() -> list[tuple[str, str]]:
    """(id, PromQL) of every target of every panel of every committed dashboard."""
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for index, target in enumerate(panel["targets"]):
                queries.append((f"{path.stem}:{panel['title']}:{index}", target["expr"]))
    return queries


QUERIES = panel_queries()


def concrete(expr: str) -> str:
    query = GRAFANA_VARIABLES.sub(WINDOW, expr)
    assert "$" not in query, f"a Grafana variable is left in {query!r}"
    return query


def _heartbeat(stack: Stack) -> None:
    """One login through the gateway: requests on identity and an event to anchor."""
    manifest = json.loads(stack.services.manifest_file.read_text())
    with IdentityClient(f"{manifest['gateway_url']}/identity") as identity:
        keys = UserKeys.generate()
        identity.register(keys, name="Dashboard heartbeat", role="patient")
        identity.login(keys)


def _relay_metric(stack: Stack, name: str) -> str:
    reply = httpx.get(f"{stack.services.metrics_url('ledger-relay')}/metrics", timeout=5)
    reply.raise_for_status()
    return "\n".join(line for line in reply.text.splitlines() if line.startswith(name))


def _poll(what: str, probe: Any, timeout_s: float, between: Any = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        if between is not None:
            between()
        time.sleep(0.5)


@pytest.fixture(scope="module")
def traffic(monitored_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    stack = monitored_stack
    manifest = json.loads(stack.services.manifest_file.read_text())
    out: Path = tmp_path_factory.mktemp("demo-report")
    scenario = subprocess.run(
        [
            str(PROJECT_ROOT / ".venv" / "bin" / "ehr"),
            "demo",
            "--gateway", manifest["gateway_url"],
            "--chain-rpc", manifest["chain"]["rpc_urls"][0],
            "--admin-key-file", manifest["admin_key_file"],
            "--out", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )  # fmt: skip
    assert scenario.returncode == 0, scenario.stdout[-4000:] + scenario.stderr[-4000:]

    # A chain outage: every sealer stopped while there are events to anchor.
    for index in range(len(stack.geth.nodes)):
        stack.geth.stop_node(index)
    try:
        _heartbeat(stack)
        _poll(
            "the relay to count a chain error",
            lambda: "ledger_chain_errors_total{" in _relay_metric(stack, "ledger_chain_errors"),
            timeout_s=60,
        )
        gateway = manifest["gateway_url"]
        not_ready = httpx.get(f"{gateway}/ledger/readyz", timeout=10)
        assert not_ready.status_code == 503, not_ready.text
    finally:
        stack.up(["geth"], progress=lambda _: None)
    anchored_before = _relay_metric(stack, "ledger_checkpoints_anchored_total")
    _poll(
        "anchoring to resume after the outage",
        lambda: _relay_metric(stack, "ledger_checkpoints_anchored_total") != anchored_before,
        timeout_s=120,
        between=lambda: _heartbeat(stack),
    )
    return stack


def test_prometheus_scrapes_every_service_and_sealer(monitored_stack: Stack) -> None:
    expected = {job_name(spec.name) for spec in SERVICES} | {job_name("geth")}

    def all_up() -> bool:
        targets = monitored_stack.prometheus.targets()
        healthy = [t for t in targets if t["health"] == "up"]
        jobs = {t["labels"]["job"] for t in healthy}
        sealers = [t for t in healthy if t["labels"]["job"] == job_name("geth")]
        return jobs == expected and len(sealers) == len(monitored_stack.geth.nodes)

    _poll("every target to be scraped", all_up, timeout_s=60)
    metrics_urls = {
        job_name(spec.name): f"{monitored_stack.services.metrics_url(spec.name)}/metrics"
        for spec in SERVICES
    }
    for target in monitored_stack.prometheus.targets():
        assert target["labels"]["service"] == target["labels"]["job"]
        assert target["labels"]["endpoint"] == "metrics"  # as the ServiceMonitors name it
        if target["labels"]["job"] in metrics_urls:  # each service's metrics port
            assert target["scrapeUrl"] == metrics_urls[target["labels"]["job"]]


def test_prometheus_listens_on_loopback_only(monitored_stack: Stack) -> None:
    [server] = monitored_stack.status(["prometheus"])
    assert server.state == "running", server
    assert server.listening
    assert all(s.loopback for s in server.listening), server.listening


def test_every_dashboard_has_panels_with_queries() -> None:
    assert len(QUERIES) >= 10
    boards = {query_id.split(":")[0] for query_id, _ in QUERIES}
    assert boards == {p.stem for p in DASHBOARDS.glob("*.json")}


def _series(stack: Stack, expr: str, last: dict[str, Any] | None = None) -> list[Any]:
    """The result series of a panel's PromQL, its Grafana variables made concrete."""
    reply = httpx.get(
        f"{stack.prometheus.url}/api/v1/query", params={"query": concrete(expr)}, timeout=10
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "success", body
    if last is not None:
        last.update(body)
    return list(body["data"]["result"])


ERROR_PANELS = {
    "services:Error ratio (5xx) by service:0": "service",
    "ledger:Checkpoints, gas and chain errors:2": None,
}


@pytest.mark.parametrize("query_id", list(ERROR_PANELS))
def test_error_panels_read_zero_before_any_error(monitored_stack: Stack, query_id: str) -> None:
    """Before the outage that ``traffic`` makes (this test does not use it, so it runs
    first), an error panel shows a finite value, not "no data": for the 5xx ratio a series
    for every service with traffic, for the relay's chain errors at least one series."""
    expr = dict(QUERIES)[query_id]
    by = ERROR_PANELS[query_id]
    _heartbeat(monitored_stack)
    with_traffic = "sum by (service) (rate(http_requests_total[$__rate_interval]))"

    def covered() -> bool:
        shown = _series(monitored_stack, expr)
        if not shown or not all(math.isfinite(float(s["value"][1])) for s in shown):
            return False
        if by is None:
            return True
        busy = {s["metric"][by] for s in _series(monitored_stack, with_traffic)}
        return bool(busy) and {s["metric"].get(by) for s in shown} >= busy

    _poll(f"{query_id} to show a finite value per series", covered, timeout_s=60)


@pytest.mark.parametrize("expr", [q for _, q in QUERIES], ids=[i for i, _ in QUERIES])
def test_dashboard_panel_query_returns_data(traffic: Stack, expr: str) -> None:
    query = concrete(expr)
    last: dict[str, Any] = {}

    def finite_samples() -> list[float]:
        values = [float(series["value"][1]) for series in _series(traffic, expr, last)]
        return [v for v in values if math.isfinite(v)]

    try:
        _poll(
            f"data for {query}", finite_samples, timeout_s=90, between=lambda: _heartbeat(traffic)
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answer: {json.dumps(last)[:1000]}") from exc
