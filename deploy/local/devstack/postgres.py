"""PostgreSQL from Debian's packages, with its own data directory, on loopback.

The cluster listens on TCP at the stack's loopback host only (no Unix socket)
and requires a password (SCRAM) that is generated at ``initdb`` and kept in
``<run_dir>/postgres/password`` (mode 0600). PostgreSQL refuses to run as
root, so when the stack is started by root the server runs as the system user
``postgres`` that Debian's package creates.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from .component import Component, ServerStatus, server_status
from .processes import StackError, pid_alive, wait_until
from .settings import StackSettings


def find_bin_dir(configured: Path | None) -> Path:
    """The folder holding initdb and pg_ctl (the newest Debian version wins)."""
    if configured is not None:
        return configured
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).resolve().parent
    raise StackError("PostgreSQL is not installed: run `make install` (apt-get install postgresql)")


class Postgres(Component):
    name = "postgres"

    def __init__(self, settings: StackSettings) -> None:
        self._settings = settings
        self._pg = settings.postgres
        self.state_dir = settings.run_dir / "postgres"
        self._data_dir = self.state_dir / "data"
        self._password_file = self.state_dir / "password"
        self.log_file = settings.logs_dir / "postgres.log"

    # -- addresses ---------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self._settings.host}:{self._pg.port}"

    def dsn(self, database: str | None = None) -> str:
        """A libpq URL for the stack's database (or another one on the server)."""
        password = quote(self._password_file.read_text().strip(), safe="")
        return (
            f"postgresql://{self._pg.user}:{password}@{self.address}/"
            f"{database or self._pg.database}"
        )

    # -- running commands as the server's user ------------------------------

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(find_bin_dir(self._pg.bin_dir) / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", self._pg.os_user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    def _hand_over(self, *paths: Path) -> None:
        """Gives the server's user ownership of its files when running as root."""
        if not self._as_root:
            return
        try:
            user = pwd.getpwnam(self._pg.os_user)
        except KeyError as exc:
            raise StackError(
                f"system user {self._pg.os_user!r} is missing: install Debian's postgresql"
            ) from exc
        for path in paths:
            os.chown(path, user.pw_uid, user.pw_gid)
            if path.is_dir():
                for child in path.rglob("*"):
                    os.chown(child, user.pw_uid, user.pw_gid)

    # -- lifecycle ---------------------------------------------------------

    def _init_cluster(self) -> None:
        if (self._data_dir / "PG_VERSION").exists():
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
        self._data_dir.mkdir(mode=0o700, exist_ok=True)
        self._hand_over(self.state_dir)
        result = self._run(
            "initdb",
            "-D", str(self._data_dir),
            "-U", self._pg.user,
            "--pwfile", str(self._password_file),
            "--auth-host=scram-sha-256",
            "--auth-local=reject",
            "-E", "UTF8",
            "--locale=C",
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(f"initdb failed:\n{result.stdout}{result.stderr}")
        with (self._data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude_if_exists = 'ehr-stack.conf'\n")

    def _write_server_config(self) -> None:
        conf = self._data_dir / "ehr-stack.conf"
        conf.write_text(
            "# Written by the local stack at every start.\n"
            f"listen_addresses = '{self._settings.host}'\n"
            f"port = {self._pg.port}\n"
            "unix_socket_directories = ''\n"
            "max_connections = 200\n"
        )
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        self._hand_over(conf, self.log_file)

    def pid(self) -> int | None:
        try:
            pid = int((self._data_dir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError, PermissionError):
            return None
        return pid if pid_alive(pid) else None

    def ready(self) -> bool:
        with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    def up(self, timeout_s: float) -> None:
        self._init_cluster()
        if self.pid() is None:
            self._write_server_config()
            result = self._run(
                "pg_ctl", "start", "-w",
                "-t", str(int(timeout_s)),
                "-D", str(self._data_dir),
                "-l", str(self.log_file),
            )  # fmt: skip
            if result.returncode != 0:
                raise StackError(
                    f"pg_ctl start failed ({result.stdout.strip()}); see {self.log_file}"
                )
            self._create_database()
        wait_until(self.ready, timeout_s, f"postgres on {self.address}")

    def _create_database(self) -> None:
        def create() -> bool:
            with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=2) as c:
                exists = c.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (self._pg.database,)
                ).fetchone()
                if not exists:
                    c.execute(
                        sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self._pg.database))
                    )
            return True

        wait_until(create, 30, f"database {self._pg.database!r}")

    def down(self, timeout_s: float) -> None:
        if self.pid() is None:
            return
        result = self._run(
            "pg_ctl", "stop", "-w", "-m", "fast",
            "-t", str(int(timeout_s)),
            "-D", str(self._data_dir),
        )  # fmt: skip
        pid = self.pid()
        if result.returncode != 0 and pid is not None:
            raise StackError(f"pg_ctl stop failed: {result.stdout}{result.stderr}")

    def servers(self) -> list[ServerStatus]:
        pid = self.pid()
        healthy = False
        if pid is not None:
            try:
                healthy = self.ready()
            except psycopg.Error:
                healthy = False
        detail = f"database {self._pg.database}, user {self._pg.user}"
        return [server_status("postgres", "postgres", self.address, pid, healthy, detail)]
