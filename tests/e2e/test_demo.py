"""The scenario of ``make demo`` on the embedded default: run as a newcomer runs it (a
separate process, exit status, printed report path), and its failure path (a step
that fails makes the run fail)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from e2e.embedded import scenario_on
from ehr_client.keys import UserKeys

from services.embedded.main import EmbeddedSettings

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_all_six_steps_in_one_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_")}
    completed = subprocess.run(
        [sys.executable, "-m", "services.embedded", "demo", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    for number in range(1, 7):
        assert f"Step {number}/6" in output, output
    assert "All six steps passed." in output
    reported = re.search(r"Compliance report \(HTML\): (\S+)", output)
    assert reported is not None, output
    html = Path(reported.group(1)).read_text()
    assert "<svg" in html and "break" in html.lower()

    summary = json.loads((tmp_path / "report" / "scenario.json").read_text())
    assert summary["ok"] is True and [s["ok"] for s in summary["steps"]] == [True] * 6
    data_sharing = summary["steps"][5]["facts"]
    assert data_sharing["events_verified"] >= 25 and data_sharing["checkpoints"]
    compliance = summary["steps"][4]["facts"]
    assert "access_without_consent" in {f["rule"] for f in compliance["findings"]}
    assert compliance["attestation"]["events_failed"] == 0
    report = json.loads((tmp_path / "report" / "compliance-report.json").read_text())
    assert [b["review_status"] for b in report["break_glass"]] == ["reviewed"]
    # the scenario's state is on disk: the durable log, the chain, one SQLite file per service
    state = tmp_path / "state"
    assert sorted(str(p.relative_to(state)) for p in state.rglob("*.sqlite3")) == [
        "audit-analytics/audit.sqlite3",
        "bus/log.sqlite3",
        "chain/chain.sqlite3",
        "consent/consent.sqlite3",
        "identity/identity.sqlite3",
        "ledger-relay/ledger.sqlite3",
        "record-store/records.sqlite3",
    ]


def test_a_failing_step_fails_the_run(tmp_path: Path) -> None:
    """Identity trusts another administrator: step 1 fails, nothing after it runs."""
    trusted, impostor = UserKeys.generate(), UserKeys.generate()
    settings = EmbeddedSettings(data_dir=tmp_path / "state", admin_address=trusted.address)
    with scenario_on(settings, impostor, tmp_path / "report") as (_, result):
        assert not result.ok
    assert len(result.steps) == 1 and not result.steps[0].ok
    assert "role_not_permitted" in result.steps[0].error
    assert result.report_html is None
    assert json.loads((tmp_path / "report" / "scenario.json").read_text())["ok"] is False
