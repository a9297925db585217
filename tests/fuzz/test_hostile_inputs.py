"""Hostile requests against the embedded default served in its own process: each gets its
exact status and error code, the process survives, and nothing is written.

"Nothing written" is checked on everything the system keeps: the row count of every
table of every SQLite database in the data dir (the five services' stores, the embedded
event log with its offsets, the in-process chain's blocks) and the patient's consent
nonce on chain. Afterwards the same data dir restarts and passes the demo scenario,
reconciliation included.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.embedded import scenario_on
from ehr_client import consent as eip712
from ehr_client.keys import read_key_file
from fixtures.served_embedded import ServedEmbedded, poll, served_embedded

from services.embedded.main import EmbeddedSettings

Snapshot = dict[str, int]


def _sqlite_files(data_dir: Path) -> list[Path]:
    files = []
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and not path.name.endswith(("-wal", "-shm", "-journal")):
            with open(path, "rb") as handle:
                if handle.read(16) == b"SQLite format 3\x00":
                    files.append(path)
    return files


def snapshot(data_dir: Path) -> Snapshot:
    """Rows per table of every SQLite database under ``data_dir`` (read-only)."""
    counts: Snapshot = {}
    for path in _sqlite_files(data_dir):
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            tables = [
                name
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            ]
            for table in tables:
                (count,) = connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()
                counts[f"{path.relative_to(data_dir)}:{table}"] = int(count)
        finally:
            connection.close()
    return counts


def settled(data_dir: Path, timeout_s: float = 60) -> Snapshot:
    """A snapshot once background work (outbox, consumers, anchoring) has gone quiet:
    two snapshots a second apart that agree."""
    previous: list[Snapshot] = [snapshot(data_dir)]

    def quiet() -> Snapshot | None:
        time.sleep(1.0)
        current = snapshot(data_dir)
        same = current == previous[0]
        previous[0] = current
        return current if same else None

    return poll(quiet, "the embedded default quiet", timeout_s)


@dataclass(frozen=True)
class Hostile:
    """One hostile request and the exact answer it must get."""

    name: str
    method: str
    path: str
    status: int
    code: str
    caller: str | None = None  # the role whose token is sent
    content: bytes | None = None
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    json_body: Callable[[ServedEmbedded], Any] | None = None


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _signed_grant(
    expires_at: int, *, good_signature: bool = True
) -> Callable[[ServedEmbedded], Any]:
    """A grant the patient really signed (or one with a broken signature)."""

    def body(served: ServedEmbedded) -> Any:
        patient, provider = served.accounts["patient"], served.accounts["provider"]
        registry = httpx.get(
            f"{served.url}/consent/registry", headers=patient.headers("consent"), timeout=30
        ).json()
        message = eip712.GrantMessage(
            patient=patient.keys.address,
            grantee=provider.keys.address,
            categories=1,
            purpose=1,
            expires_at=expires_at,
            nonce=_nonce(served),
            deadline=int(time.time()) + 600,
        )
        signature = eip712.sign_message(
            patient.keys.account,
            message,
            chain_id=registry["chain_id"],
            verifying_contract=registry["verifying_contract"],
        )
        if not good_signature:
            signature = signature[:10] + bytes([signature[10] ^ 1]) + signature[11:]
        fields = dict(message.typed_message())
        fields["expires_at"] = fields.pop("expiresAt")
        return {"message": fields, "signature": "0x" + signature.hex()}

    return body


def _nonce(served: ServedEmbedded) -> int:
    patient = served.accounts["patient"]
    answer = httpx.get(
        f"{served.url}/consent/patients/{patient.account_id}/nonce",
        headers=patient.headers("consent"),
        timeout=30,
    )
    answer.raise_for_status()
    return int(answer.json()["nonce"])


JSON = (("Content-Type", "application/json"),)
HUGE = 2**63
CYRILLIC_A = "\u0430"  # looks like the Latin a
HOSTILE: list[Hostile] = [
    # bodies that used to crash the process (the recursion limit raised by the EVM libraries)
    Hostile(
        "100k nested arrays to login",
        "POST",
        "/identity/auth/challenge",
        400,
        "json_too_deep",
        content=_deep(100_000),
    ),
    Hostile(
        "100k nested arrays to grants",
        "POST",
        "/consent/grants",
        400,
        "json_too_deep",
        caller="patient",
        content=_deep(100_000),
    ),
    Hostile(
        "100k nested objects to records",
        "POST",
        "/records/records",
        400,
        "json_too_deep",
        caller="provider",
        content=b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    ),
    Hostile(
        "nested to the audit API",
        "POST",
        "/audit/reconciliation",
        400,
        "json_too_deep",
        caller="auditor",
        content=_deep(5_000),
    ),
    # encodings and framing
    Hostile(
        "NUL byte in a string",
        "POST",
        "/identity/auth/challenge",
        400,
        "json_nul_character",
        content=b'{"signing_address": "0x\\u0000"}',
    ),
    Hostile(
        "invalid UTF-8",
        "POST",
        "/identity/auth/challenge",
        400,
        "malformed_json",
        content=b'{"signing_address": "\xff\xfe"}',
    ),
    Hostile(
        "duplicate keys",
        "POST",
        "/identity/auth/challenge",
        400,
        "json_duplicate_key",
        content=b'{"signing_address": "0x1", "signing_address": "0x2"}',
    ),
    Hostile(
        "10 MB body",
        "POST",
        "/identity/auth/challenge",
        413,
        "payload_too_large",
        content=b'{"signing_address": "' + b"a" * 10_000_000 + b'"}',
    ),
    Hostile(
        "form body",
        "POST",
        "/identity/auth/challenge",
        415,
        "unsupported_media_type",
        content=b"signing_address=0x1",
        headers=(("Content-Type", "application/x-www-form-urlencoded"),),
    ),
    Hostile(
        "gzip body",
        "POST",
        "/consent/grants",
        415,
        "unsupported_content_encoding",
        caller="patient",
        content=b"\x1f\x8b\x08\x00",
        headers=(*JSON, ("Content-Encoding", "gzip")),
    ),
    Hostile("NUL in a path", "GET", "/identity/accounts/a%00b", 400, "invalid_url", caller="admin"),
    Hostile(
        "NUL in a query", "GET", "/audit/events?actor_id=%00", 400, "invalid_url", caller="auditor"
    ),
    Hostile(
        "look-alike address",
        "POST",
        "/identity/auth/challenge",
        422,
        "validation_failed",
        content=('{"signing_address": "0x' + CYRILLIC_A * 40 + '"}').encode(),
    ),
    Hostile(
        "full-width digits in an address",
        "POST",
        "/identity/auth/challenge",
        422,
        "validation_failed",
        content=('{"signing_address": "0x' + "\uff11" * 40 + '"}').encode(),
    ),
    # numbers and times beyond what storage, the contract or Python hold
    Hostile(
        "grant expiring at 2**64-1 (signed)",
        "POST",
        "/consent/grants",
        422,
        "validation_failed",
        caller="patient",
        json_body=_signed_grant(2**64 - 1),
    ),
    Hostile(
        "grant expiring in 2**40 s (signed)",
        "POST",
        "/consent/grants",
        422,
        "validation_failed",
        caller="patient",
        json_body=_signed_grant(int(time.time()) + 2**40),
    ),
    Hostile(
        "same grant, bad signature",
        "POST",
        "/consent/grants",
        422,
        "validation_failed",
        caller="patient",
        json_body=_signed_grant(2**64 - 1, good_signature=False),
    ),
    Hostile(
        "audit cursor 2**63",
        "GET",
        f"/audit/events?cursor={HUGE}",
        422,
        "validation_failed",
        caller="auditor",
    ),
    Hostile(
        "checkpoint index 2**63",
        "GET",
        f"/ledger/checkpoints?from_index={HUGE}",
        422,
        "validation_failed",
        caller="auditor",
    ),
    Hostile(
        "consistency to 2**63",
        "GET",
        f"/ledger/proofs/consistency?from_size=1&to_size={HUGE}",
        422,
        "validation_failed",
        caller="auditor",
    ),
    Hostile(
        "report since year 0 in UTC",
        "GET",
        "/audit/reports/compliance?since=0001-01-01T00:00:00%2B01:00&until=2020-01-01T00:00:00Z",
        422,
        "validation_failed",
        caller="auditor",
    ),
    Hostile(
        "report until year 10000 in UTC",
        "GET",
        "/audit/reports/compliance?until=9999-12-31T23:59:59-01:00",
        422,
        "validation_failed",
        caller="auditor",
    ),
    Hostile(
        "access report since year 0 in UTC",
        "GET",
        "/audit/me/access-report?since=0001-01-01T00:00:00%2B01:00",
        422,
        "validation_failed",
        caller="patient",
    ),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedEmbedded]:
    yield from served_embedded(tmp_path_factory.mktemp("hostile"))


def _send(served: ServedEmbedded, case: Hostile) -> httpx.Response:
    headers = dict(case.headers)
    if case.caller is not None:
        audience = case.path.split("/")[1]  # each gateway prefix is its audience
        headers.update(served.accounts[case.caller].headers(audience))
    content = case.content
    if case.json_body is not None:
        content = json.dumps(case.json_body(served)).encode()
    return httpx.request(
        case.method, served.url + case.path, content=content, headers=headers, timeout=60
    )


def test_each_hostile_request_gets_its_answer_and_writes_nothing(
    served: ServedEmbedded, tmp_path: Path
) -> None:
    nonce_before = _nonce(served)
    before = settled(served.data_dir)
    answers: dict[str, tuple[int, str]] = {}
    for case in HOSTILE:
        response = _send(served, case)
        assert served.alive(), f"{case.name}: the server died: {served.log()}"
        code = response.json().get("error", {}).get("code") if response.content else None
        answers[case.name] = (response.status_code, str(code))
    expected = {case.name: (case.status, case.code) for case in HOSTILE}
    assert answers == expected
    assert settled(served.data_dir) == before
    assert _nonce(served) == nonce_before


def test_the_data_dir_still_starts_and_passes_the_scenario(
    served: ServedEmbedded, tmp_path: Path
) -> None:
    for case in HOSTILE:  # (again, in case this test runs alone)
        _send(served, case)
    # interrupted as a user does: a clean exit, or the interrupt's own status
    assert served.stop() in (0, 130, -signal.SIGINT), served.log()
    admin = read_key_file(served.data_dir / "admin-key.json")
    settings = EmbeddedSettings(data_dir=served.data_dir, admin_address=admin.address)
    with scenario_on(settings, admin, tmp_path / "report", timeout_s=60) as (_, result):
        assert result.ok, [step.error for step in result.steps if not step.ok]
