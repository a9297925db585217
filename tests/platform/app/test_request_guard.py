"""The request guard, on the wire: every class of hostile request gets its 4xx and code.

Each row is one class of input (not one reproducer): the body, headers and path are
varied within the class, and each must be refused before the route runs (the route
counts its calls).
"""

from __future__ import annotations

import gzip
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel

from services.platform.app.factory import create_app
from services.platform.app.loopback import serve_in_thread
from services.platform.app.request_guard import (
    RECURSION_LIMIT,
    RequestLimits,
    RequestRefused,
    check_json_structure,
    parse_json_body,
)
from services.platform.app.settings import ServiceSettings

JSON = {"Content-Type": "application/json"}


class Note(BaseModel):
    text: str
    tags: list[Any] = []


@dataclass
class Calls:
    count: int = 0
    bodies: list[Note] = field(default_factory=list)


def _router(calls: Calls) -> APIRouter:
    router = APIRouter()

    @router.post("/notes")
    async def add_note(note: Note) -> dict[str, int]:
        calls.count += 1
        calls.bodies.append(note)
        return {"length": len(note.text)}

    @router.get("/notes/{name}")
    async def get_note(name: str) -> dict[str, str]:
        calls.count += 1
        return {"name": name}

    return router


@dataclass
class Served:
    url: str
    calls: Calls


@pytest.fixture
def served(settings_factory: Callable[..., ServiceSettings]) -> Iterator[Served]:
    calls = Calls()
    settings = settings_factory(
        jwks={"keys": []}, max_body_bytes=64 * 1024, body_timeout_seconds=1.5
    )
    with serve_in_thread(create_app(settings, [_router(calls)])) as url:
        yield Served(url, calls)


def _code(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/json", response.text
    code: str = response.json()["error"]["code"]
    return code


def _deep(kind: str, depth: int) -> bytes:
    if kind == "arrays":
        return b"[" * depth + b"]" * depth
    if kind == "objects":
        return b'{"a":' * depth + b"1" + b"}" * depth
    # arrays and objects interleaved, inside a valid outer document
    inner = b'[{"a":' * (depth // 2) + b"1" + b"}]" * (depth // 2)
    return b'{"text": "x", "tags": ' + inner + b"}"


HOSTILE_BODIES: list[tuple[str, bytes, dict[str, str], int, str]] = [
    *(
        (f"{depth} nested {kind}", _deep(kind, depth), JSON, 400, "json_too_deep")
        for kind in ("arrays", "objects", "mixed")
        for depth in (33, 1_000, 10_000)
    ),
    ("unterminated 60k nesting", b"[" * 60_000, JSON, 400, "json_too_deep"),
    ("duplicate keys", b'{"text": "a", "text": "b"}', JSON, 400, "json_duplicate_key"),
    (
        "nested duplicate keys",
        b'{"text": "a", "tags": [{"k": 1, "k": 2}]}',
        JSON,
        400,
        "json_duplicate_key",
    ),
    ("NaN", b'{"text": "a", "tags": [NaN]}', JSON, 400, "malformed_json"),
    ("-Infinity", b'{"text": "a", "tags": [-Infinity]}', JSON, 400, "malformed_json"),
    ("escaped NUL", b'{"text": "a\\u0000b"}', JSON, 400, "json_nul_character"),
    ("NUL in a key", b'{"text": "a", "tags": [{"\\u0000": 1}]}', JSON, 400, "json_nul_character"),
    ("raw NUL", b'{"text": "a\x00b"}', JSON, 400, "malformed_json"),
    ("lone surrogate", b'{"text": "\\ud800"}', JSON, 400, "json_invalid_unicode"),
    ("invalid UTF-8", b'{"text": "\xff\xfe"}', JSON, 400, "malformed_json"),
    ("overlong UTF-8", b'{"text": "\xc0\xaf"}', JSON, 400, "malformed_json"),
    ("UTF-16 body", '{"text": "a"}'.encode("utf-16"), JSON, 400, "malformed_json"),
    (
        "5000-digit number",
        b'{"text": "a", "tags": [' + b"9" * 5000 + b"]}",
        JSON,
        400,
        "json_number_too_long",
    ),
    (
        "huge exponent",
        b'{"text": "a", "tags": [1e' + b"9" * 200 + b"]}",
        JSON,
        400,
        "json_number_too_long",
    ),
    (
        "20,000 values",
        b'{"text": "a", "tags": [' + b"1," * 20_000 + b"1]}",
        JSON,
        413,
        "json_too_many_items",
    ),
    ("not JSON at all", b"text=a", JSON, 400, "malformed_json"),
    (
        "form content type",
        b"text=a",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
    ),
    ("text/plain", b'{"text": "a"}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ("no content type", b'{"text": "a"}', {"Content-Type": ""}, 415, "unsupported_media_type"),
    (
        "latin-1 charset",
        b'{"text": "a"}',
        {"Content-Type": "application/json; charset=latin-1"},
        415,
        "unsupported_media_type",
    ),
    (
        "gzip body",
        gzip.compress(b'{"text": "a"}'),
        {**JSON, "Content-Encoding": "gzip"},
        415,
        "unsupported_content_encoding",
    ),
    (
        "deflate claimed",
        b'{"text": "a"}',
        {**JSON, "Content-Encoding": "deflate"},
        415,
        "unsupported_content_encoding",
    ),
    ("over the size limit", b'{"text": "' + b"x" * 70_000 + b'"}', JSON, 413, "payload_too_large"),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [row[1:] for row in HOSTILE_BODIES],
    ids=[row[0] for row in HOSTILE_BODIES],
)
def test_hostile_bodies_are_refused_before_the_route(
    served: Served, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as client:
        response = client.post("/notes", content=body, headers=headers)
        assert (response.status_code, _code(response)) == (status, code)
        assert served.calls.count == 0
        # the process and the connection go on serving
        ok = client.post("/notes", json={"text": "fine", "tags": [[[1]]]})
        assert ok.status_code == 200
        assert served.calls.count == 1


def test_a_document_at_the_bounds_is_accepted(served: Served) -> None:
    limits = RequestLimits()
    nested: Any = 1
    for _ in range(limits.max_depth - 2):  # the object and the list hold two levels
        nested = [nested]
    with httpx.Client(base_url=served.url, timeout=10) as client:
        response = client.post(
            "/notes",
            json={"text": "\u00e9\u4e2d\U0001f600 \\u0000 as text", "tags": [nested, 2**255]},
        )
        assert response.status_code == 200, response.text
    assert served.calls.bodies[0].tags[1] == 2**255


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/notes/a%00b", "invalid_url"),
        ("/notes/a%01b", "invalid_url"),
        ("/notes/%ff%fe", "invalid_url"),
        ("/notes/a?x=%00", "invalid_url"),
        ("/notes/a?x=%c0%af", "invalid_url"),
        ("/notes/" + "a" * 9_000, "url_too_long"),
    ],
)
def test_hostile_urls_are_refused(served: Served, path: str, code: str) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as client:
        response = client.get(path)
        assert (response.status_code, _code(response)) == (400, code)
    assert served.calls.count == 0


def _raw(url: str, request: bytes, *, pause_after: int | None = None) -> bytes:
    """Sends ``request`` on a raw socket (optionally stopping after ``pause_after``
    bytes, as a slow client does) and returns what the server answered."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request if pause_after is None else request[:pause_after])
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b'"error"' in b"".join(chunks):
                break
        return b"".join(chunks)


def test_a_slow_body_is_cut_off_with_408_and_others_are_served_meanwhile(
    served: Served,
) -> None:
    body = b'{"text": "slow"}'
    request = (
        b"POST /notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    started = time.monotonic()
    with httpx.Client(base_url=served.url, timeout=10) as client:
        # the slow client holds its connection; another client is served at once
        import threading

        answer: list[bytes] = []
        slow = threading.Thread(
            target=lambda: answer.append(_raw(served.url, request, pause_after=len(request) - 3))
        )
        slow.start()
        assert client.post("/notes", json={"text": "fast"}).status_code == 200
        slow.join(timeout=10)
    assert answer and answer[0].startswith(b"HTTP/1.1 408"), answer
    assert b'"request_timeout"' in answer[0]
    assert time.monotonic() - started < 8
    assert [note.text for note in served.calls.bodies] == ["fast"]


def test_chunked_bodies_without_a_length_are_bounded(served: Served) -> None:
    chunk = b"x" * 8192
    body = b'{"text": "' + chunk * 10 + b'"}'

    def chunked() -> Iterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    with httpx.Client(base_url=served.url, timeout=10) as client:
        response = client.post("/notes", content=chunked(), headers=JSON)
        assert (response.status_code, _code(response)) == (413, "payload_too_large")
        small = client.post("/notes", content=iter([b'{"text": ', b'"ok"}']), headers=JSON)
        assert small.status_code == 200
    assert served.calls.count == 1


def test_huge_headers_are_refused_without_harm(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as client:
        try:
            response = client.get("/notes/a", headers={"X-Padding": "p" * 200_000})
        except httpx.TransportError:
            pass  # the HTTP server (h11) dropped the connection: also a refusal
        else:
            assert 400 <= response.status_code < 500
        assert client.get("/notes/a").status_code == 200


def test_the_structure_check_never_recurses() -> None:
    limits = RequestLimits(max_depth=10**9, max_items=10**9)
    # a million levels pass the flat scan without touching the recursion limit
    check_json_structure(b"[" * 1_000_000 + b"]" * 1_000_000, limits)
    with pytest.raises(RequestRefused) as refused:
        parse_json_body(b"[" * 1_000_000 + b"]" * 1_000_000, RequestLimits())
    assert refused.value.code == "json_too_deep"


def test_services_run_with_a_bounded_recursion_limit(
    settings_factory: Callable[..., ServiceSettings],
) -> None:
    import eth  # noqa: F401  (raises the limit on import)

    sys.setrecursionlimit(100_000)
    create_app(settings_factory(jwks={"keys": []}))
    assert sys.getrecursionlimit() == RECURSION_LIMIT
