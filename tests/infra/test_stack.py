"""The stack as a whole: loopback only, and `make up/status/down` as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from devstack.processes import pid_alive, pid_cmdline
from devstack.settings import PROJECT_ROOT
from devstack.stack import Stack

# both tests start Kafka, Geth and PostgreSQL: `-m "not kafka ..."` (make test-fast) skips them
pytestmark = [pytest.mark.kafka, pytest.mark.geth, pytest.mark.postgres]


def test_every_server_listens_on_loopback_only(
    kafka_stack: Stack, geth_stack: Stack, postgres_stack: Stack
) -> None:
    servers = kafka_stack.status(["postgres", "kafka", "geth"])
    assert {s.name for s in servers} == {"postgres", "kafka", "geth-0", "geth-1", "geth-2"}
    for server in servers:
        assert server.state == "running", server
        assert server.listening, f"{server.name} listens on nothing"
        exposed = [s for s in server.listening if not s.loopback]
        assert not exposed, f"{server.name} listens beyond loopback: {exposed}"


def _processes_using(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not pid_alive(pid := int(entry.name)):
            continue
        if any(str(folder) in arg for arg in pid_cmdline(pid)):
            found.append(pid)
    return found


@pytest.fixture
def lifecycle_env() -> dict[str, str]:
    """A separate stack (one sealer, its own folder and ports) driven through make.

    Its folder is inside the project (not pytest's private tmp folder) because
    PostgreSQL runs as the ``postgres`` user when the tests run as root. Its ports are
    below Linux's ephemeral range (32768-60999), like every default port of the stacks,
    so an outgoing connection of another process can never be holding one.
    """
    run_dir = PROJECT_ROOT / ".run" / "pytest-lifecycle"
    shutil.rmtree(run_dir, ignore_errors=True)
    env = dict(os.environ)
    env.update(
        {
            "EHR_STACK__RUN_DIR": str(run_dir),
            "EHR_STACK__KAFKA__PORT": "24092",
            "EHR_STACK__KAFKA__CONTROLLER_PORT": "24093",
            "EHR_STACK__GETH__SEALERS": "1",
            "EHR_STACK__GETH__P2P_PORT": "24311",
            "EHR_STACK__GETH__HTTP_PORT": "24545",
            "EHR_STACK__GETH__AUTHRPC_PORT": "24651",
            "EHR_STACK__GETH__METRICS_PORT": "24061",
            "EHR_STACK__POSTGRES__PORT": "24432",
            # Kafka, Geth and PostgreSQL only (the services are covered by test_services_stack)
            "EHR_STACK__COMPONENTS": '["postgres", "kafka", "geth"]',
        }
    )
    return env


def _make(target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["make", "--no-print-directory", target],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"make {target} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _status(env: dict[str, str]) -> list[dict]:
    result = subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "ehr-stack"), "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def test_make_up_status_down_twice_leaves_nothing_behind(lifecycle_env: dict[str, str]) -> None:
    run_dir = Path(lifecycle_env["EHR_STACK__RUN_DIR"])
    try:
        for _ in range(2):
            _make("up", lifecycle_env)
            servers = _status(lifecycle_env)
            assert [s["name"] for s in servers] == ["postgres", "kafka", "geth-0"]
            assert all(s["state"] == "running" for s in servers), servers
            pids = {s["name"]: s["pid"] for s in servers}

            # A second `make up` while running is harmless: same processes, still healthy.
            _make("up", lifecycle_env)
            again = _status(lifecycle_env)
            assert {s["name"]: s["pid"] for s in again} == pids
            assert all(s["state"] == "running" for s in again)

            status_text = _make("status", lifecycle_env).stdout
            assert "127.0.0.1:24092" in status_text and "running" in status_text

            _make("down", lifecycle_env)
            assert all(s["state"] == "stopped" for s in _status(lifecycle_env))
            assert not [pid for pid in pids.values() if pid_alive(pid)]
            assert _processes_using(run_dir) == []
        assert (run_dir / "logs" / "kafka.log").stat().st_size > 0
        assert (run_dir / "logs" / "geth-0.log").stat().st_size > 0
        assert (run_dir / "logs" / "postgres.log").stat().st_size > 0
    finally:
        subprocess.run(
            [str(PROJECT_ROOT / ".venv" / "bin" / "ehr-stack"), "down"],
            env=lifecycle_env,
            capture_output=True,
            check=False,
        )
