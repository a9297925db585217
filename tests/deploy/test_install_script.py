"""Checks of deploy/local/install.sh's own logic, run against stand-in binaries."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "local" / "install.sh"

# Prints the version line first, then more lines after a pause: a reader that
# stops at the match has closed the pipe by the time the rest is written.
FAKE_GETH = """#!/usr/bin/env bash
echo Geth
echo "Version: $FAKE_VERSION-stable"
sleep 0.2
for i in $(seq 50); do echo "Detail $i"; done
"""


def geth_is_pinned(binary: Path, reported: str) -> int:
    script = (
        f'set -euo pipefail; source "{INSTALL}"; GETH_VERSION=1.13.15; geth_is_pinned "{binary}"'
    )
    return subprocess.run(
        ["bash", "-c", script],
        env={"PATH": "/usr/bin:/bin", "FAKE_VERSION": reported},
        capture_output=True,
        timeout=30,
        check=False,
    ).returncode


@pytest.fixture
def fake_geth(tmp_path: Path) -> Path:
    path = tmp_path / "geth"
    path.write_text(FAKE_GETH)
    path.chmod(0o755)
    return path


def test_the_pinned_version_is_recognised_when_output_follows_the_version_line(
    fake_geth: Path,
) -> None:
    # `geth version | grep -q` under pipefail fails here with 141 (SIGPIPE).
    assert geth_is_pinned(fake_geth, "1.13.15") == 0


def test_another_version_is_not_taken_for_the_pinned_one(fake_geth: Path) -> None:
    assert geth_is_pinned(fake_geth, "1.14.0") == 1


def test_a_missing_binary_is_not_pinned(tmp_path: Path) -> None:
    assert geth_is_pinned(tmp_path / "absent", "1.13.15") == 1


def test_sourcing_the_script_runs_no_step() -> None:
    result = subprocess.run(
        ["bash", "-c", f'source "{INSTALL}"; declare -F install_geth main'],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "[install]" not in result.stdout
    assert result.stdout.split() == ["install_geth", "main"]
