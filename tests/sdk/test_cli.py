"""The ``ehr`` command line: keys create/show with --json (no service needed)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from ehr_client.cli import app
from typer.testing import CliRunner


def test_keys_create_and_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHR_PASSPHRASE", "pw for tests")
    store = tmp_path / "ks.json"
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--keystore", str(store), "--json"])
    assert created.exit_code == 0, created.output
    body = json.loads(created.output)
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    shown = runner.invoke(app, ["keys", "show", "--keystore", str(store), "--json"])
    assert json.loads(shown.output)["address"] == body["address"]
    again = runner.invoke(app, ["keys", "create", "--keystore", str(store), "--json"])
    assert again.exit_code == 1
