"""The protocol's copy of the ``AuditAnchor`` members a verifier reads is the compiled one
(a client verifies without the build directory, so the copy must not drift)."""

from __future__ import annotations

from ehr_protocol.verify import AUDIT_ANCHOR_READ_ABI

from services.platform.chain.artifacts import load_artifact


def test_the_read_abi_is_the_compiled_contracts() -> None:
    compiled = {
        entry["name"]: dict(entry)
        for entry in load_artifact("AuditAnchor").abi
        if entry.get("name") in {"checkpointAt", "checkpointCount", "CheckpointAnchored"}
    }
    assert {entry["name"]: entry for entry in AUDIT_ANCHOR_READ_ABI} == compiled
