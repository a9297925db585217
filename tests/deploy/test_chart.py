"""Offline checks of the Helm charts, the rendered manifests and skaffold.yaml.

helm lint/template (default and ha values), kubernetes-validate --strict on core
kinds, CRD kinds against their CRD openAPIV3Schema, values.schema.json accepts the
shipped values and rejects a wrong type, every value is documented, dashboards
query metric names the services expose. Needs `deploy/local/install.sh helm schemas`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from devstack.gateway import OPERATIONAL_PATHS as DEVSTACK_OPERATIONAL_PATHS

from services.platform.app.factory import OPERATIONAL_PATHS

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".cache" / "bin" / "helm"
SCHEMAS = ROOT / ".cache" / "k8s-schemas"
CHARTS = ROOT / "deploy" / "helm"
SERVICES = ["identity", "consent", "record-store", "ledger-relay", "audit-analytics"]
ALL_CHARTS = ["ehr-common", *SERVICES, "ehr-ledger"]
UMBRELLA = "ehr-ledger"
KUBE = "1.31.0"
CRD_FILES = {
    "Gateway": "gateway.networking.k8s.io_gateways.yaml",
    "HTTPRoute": "gateway.networking.k8s.io_httproutes.yaml",
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
}


def helm(*args: str, cwd: Path) -> str:
    assert HELM.is_file(), "helm missing: deploy/local/install.sh helm"
    done = subprocess.run([str(HELM), *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def charts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/helm with dependencies built (file:// repositories, offline)."""
    copy = tmp_path_factory.mktemp("helm") / "helm"
    shutil.copytree(CHARTS, copy, ignore=shutil.ignore_patterns("*.tgz", "Chart.lock"))
    for chart in [*SERVICES, UMBRELLA]:
        helm("dependency", "build", chart, cwd=copy)
    return copy


@pytest.fixture(scope="module", params=["default", "ha"])
def rendered(request: pytest.FixtureRequest, charts: Path) -> list[dict]:
    extra = ["-f", f"{UMBRELLA}/values-ha.yaml"] if request.param == "ha" else []
    out = helm("template", "ehr", UMBRELLA, "--kube-version", KUBE, *extra, cwd=charts)
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.parametrize("chart", ALL_CHARTS)
def test_helm_lint(charts: Path, chart: str) -> None:
    out = helm("lint", chart, "--strict", "--kube-version", KUBE, cwd=charts)
    assert "0 chart(s) failed" in out
    if chart == UMBRELLA:
        helm(
            "lint",
            chart,
            "--strict",
            "--kube-version",
            KUBE,
            "-f",
            f"{chart}/values-ha.yaml",
            cwd=charts,
        )


def test_rendered_kinds(rendered: list[dict]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    for name in SERVICES:
        for kind in ("Deployment", "Service", "ServiceMonitor"):
            assert (kind, f"ehr-{name}") in kinds
    for kind, name in [
        ("StatefulSet", "ehr-kafka"),
        ("StatefulSet", "ehr-geth"),
        ("StatefulSet", "ehr-postgres"),
        ("Gateway", "ehr-gateway"),
        ("Job", "ehr-deploy-contracts"),
        ("Job", "ehr-chain-bootstrap"),
    ]:
        assert (kind, name) in kinds


def test_ha_values_scale_kafka_and_geth(charts: Path) -> None:
    for values, expected in [([], 1), (["-f", f"{UMBRELLA}/values-ha.yaml"], 3)]:
        docs = yaml.safe_load_all(
            helm("template", "ehr", UMBRELLA, "--kube-version", KUBE, *values, cwd=charts)
        )
        sets = {d["metadata"]["name"]: d for d in docs if d and d["kind"] == "StatefulSet"}
        assert sets["ehr-kafka"]["spec"]["replicas"] == expected
        assert sets["ehr-geth"]["spec"]["replicas"] == expected


def test_service_containers_run_the_local_stack_commands(rendered: list[dict]) -> None:
    expected = {
        "ehr-identity": "services.identity.main",
        "ehr-consent": "services.consent.main",
        "ehr-record-store": "services.record_store.main",
        "ehr-ledger-relay": "services.ledger_relay",
        "ehr-audit-analytics": "services.audit_analytics.main",
    }
    deployments = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Deployment"}
    for name, module in expected.items():
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["python", "-m", module]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert (ROOT / "services" / module.split(".")[1]).is_dir()
        labels = deployments[name]["metadata"]["labels"]
        assert {
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/component",
            "app.kubernetes.io/part-of",
            "app.kubernetes.io/managed-by",
        } <= set(labels)


def test_no_secret_material_in_values() -> None:
    pattern = re.compile(r"(?i)(password|private_key|secret)\s*:\s*['\"]?[A-Za-z0-9+/]{8,}")
    for values in CHARTS.rglob("values*.yaml"):
        assert not pattern.search(values.read_text()), values


def test_core_kinds_pass_kubernetes_validate_strict(rendered: list[dict], tmp_path: Path) -> None:
    core = [d for d in rendered if d["kind"] not in CRD_FILES]
    manifest = tmp_path / "core.yaml"
    manifest.write_text(yaml.safe_dump_all(core))
    tool = ROOT / ".venv" / "bin" / "kubernetes-validate"
    done = subprocess.run(
        [str(tool), "--strict", "-k", KUBE, str(manifest)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def crd_schema(kind: str, version: str) -> dict:
    path = SCHEMAS / CRD_FILES[kind]
    assert path.is_file(), f"{path} missing: deploy/local/install.sh schemas"
    crd = yaml.safe_load(path.read_text())
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise AssertionError(f"{kind} {version} not in {path.name}")


def test_crd_kinds_validate_against_their_crds(rendered: list[dict]) -> None:
    crd_docs = [d for d in rendered if d["kind"] in CRD_FILES]
    assert {d["kind"] for d in crd_docs} == set(CRD_FILES)
    for doc in crd_docs:
        schema = crd_schema(doc["kind"], doc["apiVersion"].split("/")[1])
        jsonschema.validate(doc, schema)


def test_crd_validation_rejects_a_wrong_object() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"spec": {"endpoints": [{"port": 8000}]}}, crd_schema("ServiceMonitor", "v1")
        )


def test_service_monitors_carry_the_release_label(rendered: list[dict]) -> None:
    monitors = [d for d in rendered if d["kind"] == "ServiceMonitor"]
    assert len(monitors) == len(SERVICES)
    assert all(m["metadata"]["labels"]["release"] == "kube-prometheus-stack" for m in monitors)


def test_metrics_are_scraped_on_their_own_port_which_no_route_reaches(
    rendered: list[dict],
) -> None:
    """Each service serves /metrics on the `metrics` port only (EHR_METRICS_PORT): its
    Service exposes it, its ServiceMonitor scrapes it, and every HTTPRoute names the
    `http` port (the API), never the metrics one."""
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in rendered:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    api_ports: set[int] = set()
    metrics_ports: set[int] = set()
    for name in (f"ehr-{service}" for service in SERVICES):
        container = by_kind["Deployment"][name]["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert set(ports) == {"http", "metrics"} and ports["http"] != ports["metrics"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["EHR_PORT"] == str(ports["http"])
        assert env["EHR_METRICS_PORT"] == str(ports["metrics"])
        service_ports = {p["name"]: p for p in by_kind["Service"][name]["spec"]["ports"]}
        assert service_ports["metrics"]["targetPort"] == "metrics"
        assert service_ports["http"]["targetPort"] == "http"
        api_ports.add(service_ports["http"]["port"])
        metrics_ports.add(service_ports["metrics"]["port"])
        [endpoint] = by_kind["ServiceMonitor"][name]["spec"]["endpoints"]
        assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    routed = {
        ref["port"]
        for route in by_kind["HTTPRoute"].values()
        for rule in route["spec"]["rules"]
        for ref in rule["backendRefs"]
    }
    assert routed and routed <= api_ports
    assert not routed & metrics_ports


def test_routes_cover_the_gateway_paths(rendered: list[dict]) -> None:
    paths = {
        r["spec"]["rules"][0]["matches"][0]["path"]["value"]
        for r in rendered
        if r["kind"] == "HTTPRoute"
    }
    assert paths == {"/identity", "/consent", "/records", "/ledger", "/audit"}


def test_kept_prefixes_route_the_operational_paths_to_the_service_root(
    rendered: list[dict],
) -> None:
    """Consent and the record store keep their prefix, but their operational routes are
    at their root: the chart routes <prefix>/healthz etc. there, as the local gateway
    and the embedded one do (one list of paths for all three)."""
    routes = {
        r["spec"]["rules"][0]["matches"][0]["path"]["value"]: r["spec"]["rules"]
        for r in rendered
        if r["kind"] == "HTTPRoute"
    }
    assert list(DEVSTACK_OPERATIONAL_PATHS) == list(OPERATIONAL_PATHS)
    for prefix, rules in routes.items():
        exact = {
            rule["matches"][0]["path"]["value"]: rule["filters"][0]["urlRewrite"]["path"]
            for rule in rules
            if rule["matches"][0]["path"]["type"] == "Exact"
        }
        if prefix in ("/consent", "/records"):
            assert "filters" not in rules[0]  # the prefix itself is kept
            assert exact == {
                f"{prefix}{op}": {"type": "ReplaceFullPath", "replaceFullPath": op}
                for op in OPERATIONAL_PATHS
            }
        else:
            assert exact == {}


def test_stripped_prefixes_are_named_to_the_service(rendered: list[dict]) -> None:
    """A service served at its root learns the prefix the route stripped (its OpenAPI
    document's servers entry), as nginx tells it with the same header."""
    for route in (r for r in rendered if r["kind"] == "HTTPRoute"):
        rule = route["spec"]["rules"][0]
        prefix = rule["matches"][0]["path"]["value"]
        headers = [
            header
            for f in rule.get("filters", [])
            if f["type"] == "RequestHeaderModifier"
            for header in f["requestHeaderModifier"]["set"]
        ]
        if prefix in ("/consent", "/records"):
            assert headers == []
        else:
            assert headers == [{"name": "X-Forwarded-Prefix", "value": prefix}]


def merged(base: dict, overlay: dict) -> dict:
    out = dict(base)
    for key, value in overlay.items():
        out[key] = (
            merged(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


@pytest.mark.parametrize("chart", ALL_CHARTS)
def test_values_schema_accepts_shipped_values_and_rejects_a_wrong_type(chart: str) -> None:
    schema = json.loads((CHARTS / chart / "values.schema.json").read_text())
    values = yaml.safe_load((CHARTS / chart / "values.yaml").read_text()) or {}
    jsonschema.validate(values, schema)
    for overlay in sorted((CHARTS / chart).glob("values-*.yaml")):  # merged as Helm does
        jsonschema.validate(merged(values, yaml.safe_load(overlay.read_text())), schema)
    wrong = (
        {**values, "replicaCount": "three"}
        if chart in SERVICES
        else (
            {**values, "global": {**values["global"], "gethSealers": "three"}}
            if chart == UMBRELLA
            else {"oops": 1}
        )
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, schema)


def test_service_chart_schemas_are_one_schema() -> None:
    texts = {(CHARTS / c / "values.schema.json").read_text() for c in SERVICES}
    assert len(texts) == 1


def inside_list_item(lines: list[str], index: int) -> bool:
    """True when the key belongs to an item of a documented list (e.g. an EnvVar object)."""
    indent = len(lines[index]) - len(lines[index].lstrip())
    for line in reversed(lines[:index]):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        other = len(line) - len(line.lstrip())
        if other < indent:
            return line.lstrip().startswith("- ")
    return False


@pytest.mark.parametrize("chart", [*SERVICES, UMBRELLA])
def test_every_value_is_documented(chart: str) -> None:
    """Every key line in values*.yaml has a `# --` comment above it (or sits in a documented
    flow map)."""
    for values_file in sorted((CHARTS / chart).glob("values*.yaml")):
        lines = values_file.read_text().splitlines()
        for i, line in enumerate(lines):
            if not re.match(r"^\s*[A-Za-z0-9_.-]+:", line) or inside_list_item(lines, i):
                continue
            above = lines[i - 1].strip() if i else ""
            assert above.startswith("#"), (
                f"{values_file.relative_to(ROOT)}:{i + 1} undocumented: {line.strip()}"
            )


def exposed_metric_names() -> set[str]:
    """Names the services register with prometheus_client (with the suffixes it adds)."""
    names: set[str] = set()
    for source in (ROOT / "services").rglob("*.py"):
        text = source.read_text()
        for kind, name in re.findall(r"\b(Counter|Histogram|Gauge)\(\s*\"([a-z_:]+)\"", text):
            suffixes = {
                "Counter": ["_total"],
                "Gauge": [""],
                "Histogram": ["_bucket", "_sum", "_count"],
            }[kind]
            names.update(name + s for s in suffixes)
    return names


def test_dashboards_query_metrics_the_services_expose() -> None:
    exposed = exposed_metric_names()
    assert "http_requests_total" in exposed and "ledger_tree_size" in exposed
    promql_words = {
        "sum",
        "by",
        "rate",
        "histogram_quantile",
        "le",
        "service",
        "route",
        "status",
        "kind",
        "or",
        "on",
        "clamp_min",
    }
    dashboards = sorted((CHARTS / UMBRELLA / "dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        board = json.loads(path.read_text())
        assert board["panels"]
        for panel in board["panels"]:
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", target["expr"])
                expr = re.sub(r"\b\d+(\.\d+)?(e-?\d+)?\b", "", expr)  # number literals
                used = set(re.findall(r"[a-z_][a-z0-9_:]*", expr)) - promql_words
                assert used, target["expr"]
                assert used <= exposed, f"{path.name}: {used - exposed} not exposed"


def test_dashboard_configmaps_are_labelled_for_the_grafana_sidecar(rendered: list[dict]) -> None:
    boards = [
        d for d in rendered if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]
    ]
    assert len(boards) == 2
    for board in boards:
        assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
        for text in board["data"].values():
            json.loads(text)


def test_skaffold_yaml_validates_against_the_v4beta_schema() -> None:
    path = SCHEMAS / "skaffold-v4beta11.json"
    assert path.is_file(), f"{path} missing: deploy/local/install.sh schemas"
    schema = json.loads(path.read_text())
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    assert config["apiVersion"] == "skaffold/v4beta11"
    jsonschema.validate(config, schema)
    assert {p["name"] for p in config["profiles"]} == {"minikube", "ha"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**config, "deploy": {"helm": {"releases": "ehr"}}}, schema)


def test_dockerfile_is_pinned_non_root_and_ships_contracts() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim", text, re.M)
    assert re.search(r"^USER 10001", text, re.M)
    assert "COPY --chown=root:root contracts/build/ contracts/build/" in text
    assert "--require-hashes" in text
