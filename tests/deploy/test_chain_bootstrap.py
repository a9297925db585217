"""The chart's chain bootstrap makes a genesis that the pinned geth accepts."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
from devstack.settings import GethSettings
from eth_account import Account

SCRIPT = Path(__file__).resolve().parents[2] / "deploy/helm/ehr-ledger/files/bootstrap_chain.py"


def _bootstrap() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bootstrap_chain", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_geth_initialises_a_clique_chain_from_the_chart_genesis(tmp_path: Path) -> None:
    geth = GethSettings().binary
    if not geth.exists():
        pytest.fail(f"{geth} is missing: run `make install`")
    sealers = [Account.create().address for _ in range(3)]
    funded = [Account.create().address for _ in range(2)]
    genesis = _bootstrap().genesis(4242, 1, sealers, funded)
    genesis_file = tmp_path / "genesis.json"
    genesis_file.write_text(json.dumps(genesis))

    result = subprocess.run(
        [str(geth), "--datadir", str(tmp_path / "node"), "init", str(genesis_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Successfully wrote genesis state" in result.stderr

    # The signers geth reads back from the genesis are exactly the chart's sealers.
    dumped = subprocess.run(
        [str(geth), "--datadir", str(tmp_path / "node"), "dumpgenesis"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    extra = bytes.fromhex(json.loads(dumped.stdout)["extraData"][2:])
    count = (len(extra) - 32 - 65) // 20  # 32 vanity bytes, signers, 65 seal bytes
    signers = {"0x" + extra[32 + 20 * i : 52 + 20 * i].hex() for i in range(count)}
    assert signers == {s.lower() for s in sealers}
