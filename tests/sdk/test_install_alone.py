"""The SDK installs alone: ``protocol/`` and ``sdk/`` into a fresh virtualenv bring none of
the services' dependencies (web framework, database, bus, in-process chain), and the
client works there (its modules import, ``ehr --help`` runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = ROOT / ".cache" / "bootstrap" / "bin" / "uv"

SERVICE_DISTRIBUTIONS = (
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "psycopg",
    "psycopg-binary",
    "aiokafka",
    "py-evm",
    "eth-tester",
)
"""Distributions only the services need; none may come with the client."""

SERVICE_MODULES = ("fastapi", "sqlalchemy", "aiokafka", "uvicorn", "psycopg", "eth", "services")
"""Their import names (``eth`` is py-evm's), and the services' own package."""


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **env},
    )


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding only ``protocol/`` and ``sdk/`` and what they depend on."""
    venv = tmp_path_factory.mktemp("sdk-alone") / "venv"
    if UV.is_file():
        made = _run([str(UV), "venv", "--quiet", "--python", sys.executable, str(venv)])
        assert made.returncode == 0, made.stderr
        installed = _run(
            [
                str(UV),
                "pip",
                "install",
                "--quiet",
                "--python",
                str(venv / "bin" / "python"),
                str(ROOT / "protocol"),
                str(ROOT / "sdk"),
            ],
            UV_CACHE_DIR=str(ROOT / ".cache" / "uv"),
            UV_PYTHON_DOWNLOADS="never",
        )
    else:
        made = _run([sys.executable, "-m", "venv", str(venv)])
        assert made.returncode == 0, made.stderr
        installed = _run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                str(ROOT / "protocol"),
                str(ROOT / "sdk"),
            ]
        )
    assert installed.returncode == 0, installed.stderr
    return venv


def _python(venv: Path, code: str) -> subprocess.CompletedProcess[str]:
    # Run outside the repository so nothing is imported from the working tree.
    return subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=venv,
    )


def test_no_service_dependency_comes_with_the_client(client_venv: Path) -> None:
    listed = _python(
        client_venv,
        "import importlib.metadata as m, json;"
        "print(json.dumps(sorted({d.metadata['Name'].lower() for d in m.distributions()})))",
    )
    assert listed.returncode == 0, listed.stderr
    installed = set(json.loads(listed.stdout))
    assert {"ehr-client", "ehr-protocol", "httpx", "eth-account"} <= installed
    assert installed.isdisjoint(SERVICE_DISTRIBUTIONS), installed & set(SERVICE_DISTRIBUTIONS)
    found = _python(
        client_venv,
        "import importlib.util, json;"
        f"print(json.dumps([n for n in {SERVICE_MODULES!r} if importlib.util.find_spec(n)]))",
    )
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == []


def test_the_client_imports_and_runs_alone(client_venv: Path) -> None:
    imported = _python(
        client_venv,
        "import ehr_protocol, ehr_client;"
        "import ehr_protocol.consent, ehr_protocol.crypto, ehr_protocol.identity;"
        "import ehr_protocol.merkle, ehr_protocol.records, ehr_protocol.verify;"
        "import ehr_client.cli, ehr_client.consent, ehr_client.records, ehr_client.audit;"
        "import ehr_client.demo.scenario, sys;"
        "print(ehr_client.__file__)",
    )
    assert imported.returncode == 0, imported.stderr
    assert str(client_venv) in imported.stdout  # the installed copy, not the working tree
    helped = subprocess.run(
        [str(client_venv / "bin" / "ehr"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=client_venv,
    )
    assert helped.returncode == 0, helped.stderr
    assert "Usage" in helped.stdout
