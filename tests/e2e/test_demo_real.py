"""The scenario of ``make demo-real``: the same six steps through the real stack's nginx
gateway (five service processes on Kafka, the Geth Clique network and PostgreSQL),
verified against Geth over JSON-RPC. Run as a user runs it: ``ehr demo`` with the
values of the stack's ``services.json``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from devstack.settings import PROJECT_ROOT
from devstack.stack import Stack

pytestmark = [pytest.mark.kafka, pytest.mark.geth, pytest.mark.postgres]


def test_the_scenario_passes_through_the_gateway(services_stack: Stack, tmp_path: Path) -> None:
    manifest = json.loads(services_stack.services.manifest_file.read_text())
    gateway = manifest["gateway_url"]
    assert all(s["gateway_url"].startswith(gateway) for s in manifest["services"].values())
    completed = subprocess.run(
        [
            str(PROJECT_ROOT / ".venv" / "bin" / "ehr"),
            "demo",
            "--gateway", gateway,
            "--chain-rpc", manifest["chain"]["rpc_urls"][-1],
            "--admin-key-file", manifest["admin_key_file"],
            "--out", str(tmp_path),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    assert "All six steps passed." in output

    summary = json.loads((tmp_path / "scenario.json").read_text())
    assert [s["ok"] for s in summary["steps"]] == [True] * 6
    assert summary["gateway"] == gateway.rstrip("/")
    anchored = summary["steps"][5]["facts"]
    assert anchored["events_verified"] >= 25
    assert anchored["anchor_contract"].lower() == manifest["contracts"]["audit_anchor"].lower()
    # every proof was checked against the relay's AuditAnchor on Geth
    auditor = summary["steps"][3]["facts"]
    assert all(v["verified"] for v in auditor["verified"])
    report = json.loads((tmp_path / "compliance-report.json").read_text())
    assert report["attestation"]["checkpoint_matches_chain"] is True
    assert report["attestation"]["events_failed"] == 0
    assert [b["review_status"] for b in report["break_glass"]] == ["reviewed"]
    assert "<svg" in (tmp_path / "compliance-report.html").read_text()
