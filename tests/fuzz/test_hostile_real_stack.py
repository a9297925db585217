"""Hostile bodies against every service process of the real stack (Kafka, Geth,
PostgreSQL), straight to each process and through the nginx gateway: refused with the
guard's answer, and every process is still the same one afterwards (none crashed and
was restarted), ready, and serving."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import httpx
import pytest
from devstack.processes import pid_alive
from devstack.service_group import SERVICES
from devstack.stack import Stack

pytestmark = [pytest.mark.kafka, pytest.mark.geth, pytest.mark.postgres]

JSON = {"Content-Type": "application/json"}
# a body route of each service (the guard runs before routing, so any path would do;
# these are the routes a client really posts to)
BODY_ROUTE = {
    "identity": "/auth/challenge",
    "consent": "/consent/grants",
    "record-store": "/records",
    "ledger-relay": "/checkpoints",
    "audit-analytics": "/reconciliation",
}


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _chunked_oversize() -> Iterator[bytes]:
    yield b'{"x": "'
    for _ in range(40):  # 2.5 MB without a Content-Length
        yield b"a" * 65536
    yield b'"}'


CASES = [
    ("100k nested arrays", lambda: _deep(100_000), JSON, 400, "json_too_deep"),
    (
        "gzip body",
        lambda: gzip.compress(b"{}"),
        {**JSON, "Content-Encoding": "gzip"},
        415,
        "unsupported_content_encoding",
    ),
    ("chunked, no length, oversize", _chunked_oversize, JSON, 413, "payload_too_large"),
    ("duplicate keys", lambda: b'{"a": 1, "a": 2}', JSON, 400, "json_duplicate_key"),
]


def _service_pids(stack: Stack) -> list[int]:
    return [pid for c in stack.components(["services"]) for pid in c.pids()]


def test_every_service_process_refuses_hostile_bodies_and_survives(
    services_stack: Stack,
) -> None:
    pids = _service_pids(services_stack)
    assert pids and all(pid_alive(pid) for pid in pids)
    gateway = services_stack.gateway.url
    answers: dict[tuple[str, str, str], tuple[int, str]] = {}
    expected: dict[tuple[str, str, str], tuple[int, str]] = {}
    for spec in SERVICES:
        route = BODY_ROUTE[spec.name]
        targets = {
            "direct": services_stack.services.url(spec.name) + route,
            "gateway": gateway + (spec.path if spec.strip_prefix else "") + route,
        }
        for name, body, headers, status, code in CASES:
            for via, url in targets.items():
                if via == "gateway" and status == 413:
                    continue  # nginx bounds bodies itself (client_max_body_size)
                reply = httpx.post(url, content=body(), headers=headers, timeout=60)
                key = (spec.name, name, via)
                answers[key] = (reply.status_code, reply.json()["error"]["code"])
                expected[key] = (status, code)
    assert answers == expected
    assert _service_pids(services_stack) == pids
    assert all(pid_alive(pid) for pid in pids)
    for spec in SERVICES:
        ready = httpx.get(services_stack.services.url(spec.name) + "/readyz", timeout=10)
        assert ready.status_code == 200, (spec.name, ready.text)
