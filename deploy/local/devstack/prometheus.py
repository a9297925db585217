"""Prometheus from Debian's packages, scraping the five services and the Geth sealers.

The scrape configuration is generated into ``<run_dir>/prometheus/prometheus.yml`` at
every start (checked with ``promtool check config``) and labels the targets as the
chart's ServiceMonitors do under the Prometheus Operator, so the committed Grafana
dashboards (``deploy/helm/ehr-ledger/dashboards``) work unchanged against it:

* one job per service named like the chart's Kubernetes Service (release ``ehr``:
  ``ehr-identity``, ``ehr-consent``, ``ehr-record-store``, ``ehr-ledger-relay``,
  ``ehr-audit-analytics``), with ``service`` = the same name and ``endpoint="metrics"``,
  scraping ``/metrics`` on the service's metrics port (``EHR_METRICS_PORT``, never its
  API port: the gateway does not reach it);
* ``ehr-geth``: every sealer's ``/debug/metrics/prometheus`` (``endpoint="metrics"``,
  ``pod="ehr-geth-<i>"``).

It listens on the stack's loopback host only and keeps its data under the run dir.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx

from .component import Component, ServerStatus, server_status
from .geth import GethNetwork
from .processes import ManagedProcess, StackError, wait_until
from .service_group import SERVICES, ServiceGroup
from .settings import StackSettings

RELEASE = "ehr"  # the release name deploy/helm/README.md installs the chart as


def job_name(service: str) -> str:
    """The Kubernetes Service name the chart gives ``service`` (and so its job)."""
    return f"{RELEASE}-{service}"


class Prometheus(Component):
    name = "prometheus"
    requires = ("geth", "services")

    def __init__(self, settings: StackSettings, services: ServiceGroup, geth: GethNetwork) -> None:
        self._settings = settings
        self._prometheus = settings.prometheus
        self._services = services
        self._geth = geth
        self.state_dir = settings.run_dir / "prometheus"
        self.config_file = self.state_dir / "prometheus.yml"
        self.process = ManagedProcess(
            name="prometheus",
            argv=[
                str(self._prometheus.binary),
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.state_dir / 'data'}",
                f"--storage.tsdb.retention.time={self._prometheus.retention}",
                f"--web.listen-address={settings.host}:{self._prometheus.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            pid_file=self.state_dir / "prometheus.pid",
            log_file=settings.logs_dir / "prometheus.log",
            match=str(self.config_file),
        )

    @property
    def url(self) -> str:
        return f"http://{self._settings.host}:{self._prometheus.port}"

    def config(self) -> dict[str, Any]:
        host = self._settings.host
        interval = self._prometheus.scrape_interval_s
        jobs: list[dict[str, Any]] = []
        for spec in SERVICES:
            name = job_name(spec.name)
            jobs.append(
                {
                    "job_name": name,
                    "metrics_path": "/metrics",
                    "static_configs": [
                        {
                            "targets": [f"{host}:{self._services.metrics_port(spec.name)}"],
                            "labels": {"service": name, "endpoint": "metrics"},
                        }
                    ],
                }
            )
        metrics_base = self._settings.geth.metrics_port
        jobs.append(
            {
                "job_name": job_name("geth"),
                "metrics_path": "/debug/metrics/prometheus",
                "static_configs": [
                    {
                        "targets": [f"{host}:{metrics_base + index}"],
                        "labels": {
                            "service": job_name("geth"),
                            "endpoint": "metrics",
                            "pod": f"{job_name('geth')}-{index}",
                        },
                    }
                    for index in range(self._settings.geth.sealers)
                ],
            }
        )
        return {
            "global": {
                "scrape_interval": f"{interval}s",
                "scrape_timeout": f"{max(1, interval - 1)}s",
                "evaluation_interval": f"{interval}s",
            },
            "scrape_configs": jobs,
        }

    def _prepare(self) -> None:
        binary = self._prometheus.binary
        if not binary.exists():
            raise StackError(f"{binary} is missing: run `make install` (Debian's prometheus)")
        (self.state_dir / "data").mkdir(parents=True, exist_ok=True)
        # JSON is YAML: no YAML writer needed.
        self.config_file.write_text(json.dumps(self.config(), indent=2) + "\n")
        promtool = shutil.which("promtool") or str(Path(binary).with_name("promtool"))
        check = subprocess.run(
            [promtool, "check", "config", str(self.config_file)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise StackError(f"promtool refused {self.config_file}:\n{check.stdout}{check.stderr}")

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def up(self, timeout_s: float) -> None:
        if self.process.pid() is None:
            self._prepare()
            self.process.start()

        def healthy() -> bool:
            self.process.raise_if_exited()
            return self.ready()

        wait_until(healthy, timeout_s, f"prometheus on {self.url}")

    def down(self, timeout_s: float) -> None:
        self.process.stop(timeout_s)

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets with their health, from Prometheus' API."""
        reply = httpx.get(f"{self.url}/api/v1/targets", params={"state": "active"}, timeout=5)
        reply.raise_for_status()
        found: list[dict[str, Any]] = reply.json()["data"]["activeTargets"]
        return found

    def servers(self) -> list[ServerStatus]:
        pid = self.process.pid()
        healthy = pid is not None and self.ready()
        detail = ""
        if healthy:
            try:
                targets = self.targets()
                up = sum(1 for t in targets if t.get("health") == "up")
                detail = f"{up}/{len(targets)} targets up"
            except httpx.HTTPError:
                detail = "targets unknown"
        return [server_status("prometheus", "prometheus", self.url, pid, healthy, detail)]
