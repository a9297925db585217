"""The committed artefacts are what the pinned compiler makes of the sources, and
their bytecode avoids PUSH0 (the Clique chain runs without Shanghai). That the
bytecode really deploys on Geth is shown by every ``[geth]`` test of this folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.platform.chain.artifacts import load_artifact

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ["ProviderRegistry", "ConsentRegistry", "AuditAnchor", "ConsentEventEmitter"]
PUSH0, PUSH1, PUSH32 = 0x5F, 0x60, 0x7F


def _opcodes(code: bytes) -> list[int]:
    """The opcodes of ``code``, skipping PUSH data."""
    opcodes, pc = [], 0
    while pc < len(code):
        op = code[pc]
        opcodes.append(op)
        pc += 1 + (op - PUSH1 + 1 if PUSH1 <= op <= PUSH32 else 0)
    return opcodes


def test_artifacts_match_a_fresh_compile() -> None:
    result = subprocess.run(
        ["node", "contracts/compile.js", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", CONTRACTS)
def test_bytecode_has_no_push0(name: str) -> None:
    artifact = load_artifact(name)
    for code in (artifact.bytecode, artifact.deployed_bytecode):
        raw = bytes.fromhex(code.removeprefix("0x"))
        assert raw, f"{name} has no bytecode"
        # Stop at the CBOR metadata trailer (its length is in the last two bytes).
        body = raw[: len(raw) - 2 - int.from_bytes(raw[-2:], "big")]
        assert PUSH0 not in _opcodes(body), f"{name} uses PUSH0"
