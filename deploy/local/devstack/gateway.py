"""The gateway: nginx from Debian's packages in front of the five services.

It routes exactly as the chart's Gateway API routes
(``deploy/helm/ehr-ledger/values.yaml`` ``gateway.routes``): a ``PathPrefix`` match on
``/identity``, ``/consent``, ``/records``, ``/ledger`` and ``/audit``; the prefix is
replaced by ``/`` for identity, the ledger relay and audit-analytics (which serve at
their root) and kept for consent and the record store (which serve under it), except
on their operational routes (``/consent/healthz``, ``/consent/readyz``,
``/consent/openapi.json``, the same under ``/records``), which go to the service's
root. ``<prefix>/metrics`` (and below it) is never passed on: the services serve
``/metrics`` on their metrics ports, for Prometheus only. Any other path gets a JSON 404
from the gateway itself.

nginx runs in the foreground (``daemon off``) under the stack's process manager, with
its own config, pid file, temp folders and logs under ``<run_dir>/gateway`` and
``<run_dir>/logs``. When the stack is started by root, nginx runs as an unprivileged
system user (``www-data`` by default, through ``setpriv``), never as root.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess

import httpx

from .component import Component, ServerStatus, server_status
from .processes import ManagedProcess, StackError, wait_until
from .service_group import SERVICES, ServiceGroup
from .settings import StackSettings

OPERATIONAL_PATHS = ("/healthz", "/readyz", "/openapi.json")
"""Served by every service at its root (``services.platform.app.factory.OPERATIONAL_PATHS``)."""
NOT_FOUND_BODY = '{"error":{"code":"route_not_found","message":"no route for this path"}}'
REFUSED_PATHS = ("/metrics",)
"""Answered 404 under every prefix (``services.embedded.gateway.REFUSED_PATHS``)."""


class Gateway(Component):
    name = "gateway"
    requires = ("services",)

    def __init__(self, settings: StackSettings, services: ServiceGroup) -> None:
        self._settings = settings
        self._gateway = settings.gateway
        self._services = services
        self.state_dir = settings.run_dir / "gateway"
        self.config_file = self.state_dir / "nginx.conf"
        self.access_log = settings.logs_dir / "gateway-access.log"
        self.error_log = settings.logs_dir / "gateway-error.log"
        self.process = ManagedProcess(
            name="gateway",
            argv=self._argv(),
            pid_file=self.state_dir / "gateway.pid",
            log_file=settings.logs_dir / "gateway.log",
            match=str(self.config_file),
        )

    @property
    def url(self) -> str:
        return f"http://{self._settings.host}:{self._gateway.port}"

    def _user(self) -> pwd.struct_passwd | None:
        """The unprivileged user nginx runs as, when the stack runs as root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(self._gateway.os_user)
        except KeyError as exc:
            raise StackError(f"system user {self._gateway.os_user!r} is missing") from exc

    def _argv(self) -> list[str]:
        nginx = [
            str(self._gateway.binary),
            "-e", str(self.error_log),
            "-p", str(self.state_dir),
            "-c", str(self.config_file),
        ]  # fmt: skip
        user = self._user()
        if user is None:
            return nginx
        return [
            "setpriv",
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--init-groups",
            "--inh-caps=-all",
            *nginx,
        ]

    def config(self) -> str:
        host = self._settings.host
        temp = self.state_dir / "tmp"
        locations = []
        for spec in SERVICES:
            upstream = f"http://{host}:{self._services.port(spec.name)}"
            # With a URI part ("/"), nginx replaces the matched prefix by it.
            target = f"{upstream}/" if spec.strip_prefix else upstream
            routes = [(f"= {spec.path}", target), (f"{spec.path}/", target)]
            if not spec.strip_prefix:
                # The service's operational routes are at its root (as the chart routes them).
                routes += [(f"= {spec.path}{op}", f"{upstream}{op}") for op in OPERATIONAL_PATHS]
            for refused in REFUSED_PATHS:
                for match in (f"= {spec.path}{refused}", f"^~ {spec.path}{refused}/"):
                    locations.append(
                        f"        location {match} {{\n"
                        "            default_type application/json;\n"
                        f"            return 404 '{NOT_FOUND_BODY}';\n"
                        "        }\n"
                    )
            for match, to in routes:
                locations.append(
                    f"        location {match} {{\n"
                    f"            proxy_pass {to};\n"
                    f"            proxy_set_header X-Forwarded-Prefix {spec.path};\n"
                    "        }\n"
                )
        index = json.dumps(
            {
                "documents": [
                    {"service": spec.path.strip("/"), "url": f"{spec.path}/openapi.json"}
                    for spec in SERVICES
                ]
            },
            separators=(",", ":"),
        )
        locations.append(
            "        location = /api {\n"
            "            default_type application/json;\n"
            f"            return 200 '{index}';\n"
            "        }\n"
        )
        return (
            "# Written by the local stack at every start; see devstack/gateway.py.\n"
            "daemon off;\n"
            "worker_processes 1;\n"
            f"pid {self.state_dir / 'nginx.pid'};\n"
            f"error_log {self.error_log} warn;\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            f"    access_log {self.access_log};\n"
            f"    client_body_temp_path {temp / 'client_body'};\n"
            f"    proxy_temp_path {temp / 'proxy'};\n"
            f"    fastcgi_temp_path {temp / 'fastcgi'};\n"
            f"    uwsgi_temp_path {temp / 'uwsgi'};\n"
            f"    scgi_temp_path {temp / 'scgi'};\n"
            "    client_max_body_size 8m;\n"
            "    proxy_http_version 1.1;\n"
            '    proxy_set_header Connection "";\n'
            "    proxy_set_header Host $http_host;\n"
            "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
            "    proxy_set_header X-Forwarded-Proto $scheme;\n"
            "    proxy_read_timeout 300s;\n"
            "    proxy_send_timeout 300s;\n"
            "    server {\n"
            f"        listen {host}:{self._gateway.port};\n"
            "        server_name _;\n" + "".join(locations) + "        location / {\n"
            "            default_type application/json;\n"
            f"            return 404 '{NOT_FOUND_BODY}';\n"
            "        }\n"
            "    }\n"
            "}\n"
        )

    def _prepare(self) -> None:
        binary = self._gateway.binary
        if not binary.exists():
            raise StackError(f"{binary} is missing: run `make install` (Debian's nginx-light)")
        temp = self.state_dir / "tmp"
        for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (temp / folder).mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.config())
        for log in (self.access_log, self.error_log):
            log.parent.mkdir(parents=True, exist_ok=True)
            log.touch()
        user = self._user()
        if user is not None:
            owned = [self.state_dir, *self.state_dir.rglob("*"), self.access_log, self.error_log]
            for path in owned:
                os.chown(path, user.pw_uid, user.pw_gid)
        check = subprocess.run(
            [*self._argv(), "-t", "-q"], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise StackError(f"nginx refused its config:\n{check.stderr}")

    def ready(self) -> bool:
        """nginx answers its own 404 for a path no route matches."""
        try:
            reply = httpx.get(f"{self.url}/", timeout=2)
        except httpx.HTTPError:
            return False
        return reply.status_code == 404 and "route_not_found" in reply.text

    def up(self, timeout_s: float) -> None:
        if self.process.pid() is None:
            self._prepare()
            self.process.start()

        def healthy() -> bool:
            self.process.raise_if_exited()
            return self.ready()

        wait_until(healthy, timeout_s, f"the gateway on {self.url}")

    def down(self, timeout_s: float) -> None:
        self.process.stop(timeout_s)

    def servers(self) -> list[ServerStatus]:
        pid = self.process.pid()
        healthy = pid is not None and self.ready()
        detail = "nginx: " + " ".join(spec.path for spec in SERVICES)
        return [server_status("gateway", "gateway", self.url, pid, healthy, detail)]
