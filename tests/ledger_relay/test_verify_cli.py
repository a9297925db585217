"""The standalone verifier's every way to fail: one line and an exit code, never a traceback.

1 ``INVALID``: the proof does not hold (a checkpoint the chain does not hold, a malformed
proof, other bytes); 2 ``ERROR``: the inputs cannot be read; 3 ``ERROR``: the chain
cannot be read. ``check`` is the CLI's behaviour over any checkpoint reader (the
in-process chain's too); the command itself runs in a child process.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ledger_relay.conftest import RelayEnv, make_event
from ledger_relay.test_relay import _publish, _run_until_anchored

from services.ledger_relay.adapters.sql import SqlLogRepository
from services.ledger_relay.domain.errors import ProofInvalid
from services.ledger_relay.domain.proofs import ProofService
from services.ledger_relay.verify import (
    BAD_INPUT,
    CHAIN_UNREADABLE,
    INVALID,
    OK,
    check,
    inclusion_to_json,
    verify_event,
)
from services.platform.events.envelope import decode, event_hash

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = "0x" + "11" * 20


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.ledger_relay.verify", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _files(tmp_path: Path, raw: bytes, proof: Any) -> tuple[Path, Path]:
    event_file, proof_file = tmp_path / "event.bin", tmp_path / "proof.json"
    event_file.write_bytes(raw)
    proof_file.write_text(json.dumps(proof))
    return event_file, proof_file


def _malformed(document: dict[str, Any]) -> list[Any]:
    """Proof documents that are JSON but not proofs (each field's type and range)."""
    checkpoint = document["checkpoint"]
    return [
        [],
        "proof",
        {**document, "checkpoint": None},
        {k: v for k, v in document.items() if k != "leaf_index"},
        {**document, "leaf_index": True},
        {**document, "leaf_index": -1},
        {**document, "leaf_index": checkpoint["tree_size"]},
        {**document, "leaf_index": "0"},
        {**document, "event_hash": "zz" * 32},
        {**document, "event_hash": "ab"},
        {**document, "proof": "ab" * 32},
        {**document, "proof": [1]},
        {**document, "proof": ["ab" * 32] * 65},
        {**document, "checkpoint": {**checkpoint, "index": 2**63}},
        {**document, "checkpoint": {**checkpoint, "index": -1}},
        {**document, "checkpoint": {**checkpoint, "tree_size": 0}},
        {**document, "checkpoint": {**checkpoint, "tree_size": 2**64}},
        {**document, "checkpoint": {**checkpoint, "block_number": 1.5}},
        {**document, "checkpoint": {**checkpoint, "tx_hash": None}},
    ]


async def test_a_checkpoint_the_chain_does_not_hold_is_invalid(
    relay_env: RelayEnv, tmp_path: Path
) -> None:
    events = [make_event(i) for i in range(40)]
    await _publish(relay_env, events)
    relay, _ = await relay_env.relay()
    await _run_until_anchored(relay, len(events))
    proofs = ProofService(SqlLogRepository(relay_env.engine))
    raw = events[5]
    document = inclusion_to_json(proofs.inclusion(decode(raw).id))
    count = relay_env.anchor.count()
    elsewhere = {**document, "checkpoint": {**document["checkpoint"], "index": count}}

    def reader() -> Any:
        return relay_env.anchor

    assert check(*_files(tmp_path, raw, document), reader)[0] == OK
    code, line = check(*_files(tmp_path, raw, elsewhere), reader)
    assert code == INVALID, line
    assert line.startswith("INVALID: ") and f"checkpoint {count} is not on chain" in line
    for bad in _malformed(document):
        code, line = check(*_files(tmp_path, raw, bad), reader)
        assert (code, line.split(":")[0]) == (INVALID, "INVALID"), (bad, line)
        if isinstance(bad, dict):  # the library refuses it the same way
            with pytest.raises(ProofInvalid):
                verify_event(raw, bad, relay_env.anchor)

    if relay_env.name == "real":  # the command itself, reading the chain over JSON-RPC
        chain = ["--rpc-url", relay_env.chain.current_url, "--contract", relay_env.anchor.address]
        good = _cli(*_files(tmp_path, raw, document), *chain)
        assert good.returncode == OK and good.stdout.startswith("OK: "), good.stderr
        refused = _cli(*_files(tmp_path, raw, elsewhere), *chain)
        assert refused.returncode == INVALID, refused.stderr
        assert refused.stderr.startswith("INVALID: ") and "Traceback" not in refused.stderr


def test_unreadable_inputs_and_an_unreachable_chain_are_errors_not_tracebacks(
    tmp_path: Path,
) -> None:
    raw = make_event(1)
    document = {
        "event_id": decode(raw).id,
        "event_hash": event_hash(raw).hex(),  # so the chain is asked
        "leaf_index": 0,
        "proof": [],
        "checkpoint": {
            "index": 0,
            "tree_size": 1,
            "root": "00" * 32,
            "tx_hash": "0x" + "00" * 32,
            "block_number": 1,
        },
    }
    event_file, proof_file = _files(tmp_path, raw, document)
    not_json = tmp_path / "not.json"
    not_json.write_bytes(b"\xff{")
    unreachable = f"http://127.0.0.1:{_closed_port()}"
    for args, code, words in (
        ((tmp_path / "missing.bin", proof_file), BAD_INPUT, "cannot read"),
        ((event_file, tmp_path), BAD_INPUT, "cannot read"),
        ((event_file, not_json), BAD_INPUT, "is not JSON"),
        ((event_file, proof_file, "--contract", "not-an-address"), BAD_INPUT, "not a contract"),
        ((event_file, proof_file), CHAIN_UNREADABLE, "cannot read"),
    ):
        options = ("--rpc-url", unreachable, "--contract", ADDRESS)
        result = _cli(*options, *args)  # a later --contract wins over the first
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.startswith("ERROR: ") and words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr + result.stdout
