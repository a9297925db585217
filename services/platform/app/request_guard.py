"""What a request may be before any service code reads it.

Every service app runs :class:`RequestGuardMiddleware` first (after the request id), so a
hostile request is refused with a 4xx JSON error before a route, a parser or the storage
sees it:

- the URL: no NUL or other control characters, valid UTF-8 after percent-decoding;
- the body: read with a deadline (a body sent too slowly answers 408), at most
  ``max_body_bytes`` whether or not a length was declared (413), no ``Content-Encoding``
  (compressed bodies answer 415: the services never inflate what a client sends);
- a JSON body: ``application/json`` (415 otherwise), strict UTF-8, nesting at most
  ``max_depth``, at most ``max_items`` values, numbers of at most ``max_number_chars``
  characters, no duplicate object keys, no NUL characters or lone surrogates in strings,
  no ``NaN``/``Infinity`` (all 400 or 413, each with its own ``code``).

The structure is checked by a flat tokenizer before the document is parsed, so a body
nested a million levels deep never reaches a recursive parser. :func:`cap_recursion_limit`
undoes the process-wide recursion limit that the EVM libraries raise on import, so that
no other recursive code can overrun the C stack either.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.platform.app.errors import (
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    UnsupportedMediaType,
)

RECURSION_LIMIT = 4_000
"""The recursion limit every service runs with. The EVM libraries (``eth``, ``py_ecc``)
raise it to 12,288 and 100,000 on import, which lets recursive C code (the JSON parser
among it) overrun the thread's stack and kill the process instead of raising."""

_LIBRARIES_RAISING_THE_LIMIT = ("eth", "py_ecc")


def cap_recursion_limit(limit: int = RECURSION_LIMIT) -> int:
    """Imports the libraries that raise the recursion limit, then sets it to ``limit``.

    Importing them first means a later import cannot raise it again (a module runs once).
    Returns the limit now in force.
    """
    for name in _LIBRARIES_RAISING_THE_LIMIT:
        with contextlib.suppress(ImportError):  # both come with web3[tester]
            importlib.import_module(name)
    sys.setrecursionlimit(limit)
    return sys.getrecursionlimit()


@dataclass(frozen=True)
class RequestLimits:
    """The bounds a request must keep. Every service takes them from its settings."""

    max_body_bytes: int = 1_048_576
    body_timeout_seconds: float = 30.0
    max_depth: int = 32
    max_items: int = 10_000
    max_number_chars: int = 100
    max_url_bytes: int = 8_192


class RequestRefused(BadRequest):
    """A request that breaks one of the :class:`RequestLimits` (400)."""


# One JSON token: a string (escapes kept), a structural character, or a bare scalar
# (number, true, false, null or garbage, which the parser then refuses).
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]|[^\s\[\]{},:"]+|[,:]', re.DOTALL)
_JSON_MEDIA = re.compile(r"^application/(?:[\w.+-]+\+)?json$")


def check_json_structure(body: bytes, limits: RequestLimits) -> None:
    """Refuses ``body`` when it is nested or sized beyond ``limits``, without parsing it.

    A flat scan: it cannot recurse, and stops at the first bound broken.
    """
    depth = 0
    items = 0
    for match in _TOKEN.finditer(body):
        token = match.group()
        first = token[:1]
        if first in (b"[", b"{"):
            depth += 1
            if depth > limits.max_depth:
                raise RequestRefused(
                    f"JSON nested deeper than {limits.max_depth} levels",
                    code="json_too_deep",
                    details={"max_depth": limits.max_depth},
                )
        elif first in (b"]", b"}"):
            depth -= 1
            continue
        elif first in (b",", b":"):
            continue
        elif first != b'"' and len(token) > limits.max_number_chars:
            raise RequestRefused(
                f"a JSON number or literal longer than {limits.max_number_chars} characters",
                code="json_number_too_long",
                details={"max_number_chars": limits.max_number_chars},
            )
        items += 1
        if items > limits.max_items:
            raise PayloadTooLarge(
                f"JSON document with more than {limits.max_items} values",
                code="json_too_many_items",
                details={"max_items": limits.max_items},
            )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise RequestRefused(
            f"duplicate key {duplicate!r} in a JSON object",
            code="json_duplicate_key",
            details={"key": duplicate[:100]},
        )
    return document


def _check_text(value: str, where: str) -> None:
    if "\x00" in value:
        raise RequestRefused(f"NUL character in a JSON {where}", code="json_nul_character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestRefused(
            f"lone surrogate in a JSON {where}", code="json_invalid_unicode"
        ) from None


def parse_json_body(body: bytes, limits: RequestLimits) -> Any:
    """``body`` parsed, once every bound and rule of the module docstring holds."""
    check_json_structure(body, limits)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestRefused("request body is not UTF-8", code="malformed_json") from None
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_refuse_constant)
    except RequestRefused:
        raise
    except ValueError as error:
        message = f"request body is not valid JSON: {error}"
        raise RequestRefused(message, code="malformed_json") from None
    # every value once, without recursion (bounded by max_items)
    pending: list[Any] = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            _check_text(value, "string")
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, "key")
                pending.append(item)
        elif isinstance(value, list):
            pending.extend(value)
    return document


def check_url(scope: Scope, limits: RequestLimits) -> None:
    """Refuses a path or query string that is too long, not UTF-8, or has control
    characters (NUL among them) once percent-decoded."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    query: bytes = scope.get("query_string", b"")
    if len(raw_path) + len(query) > limits.max_url_bytes:
        raise RequestRefused(f"URL longer than {limits.max_url_bytes} bytes", code="url_too_long")
    for part, name in ((raw_path, "path"), (query.replace(b"+", b" "), "query string")):
        decoded = unquote_to_bytes(part)
        try:
            text = decoded.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestRefused(f"the {name} is not UTF-8", code="invalid_url") from None
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            raise RequestRefused(f"control character in the {name}", code="invalid_url")


async def _read_body(receive: Receive, limits: RequestLimits) -> tuple[list[bytes], Message | None]:
    """The body's chunks, read within the deadline; a non-request message (the client
    went away) is returned to be passed on."""
    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + limits.body_timeout_seconds
    while True:
        remaining = deadline - time.monotonic()
        try:
            message = await asyncio.wait_for(receive(), max(remaining, 0.0))
        except TimeoutError:
            raise RequestTimeout(
                f"request body not received within {limits.body_timeout_seconds:g} s"
            ) from None
        if message["type"] != "http.request":
            return chunks, message
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise PayloadTooLarge(f"request body exceeds {limits.max_body_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks, None


def _check_headers(headers: Headers, limits: RequestLimits) -> None:
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not accepted; send the body uncompressed",
            code="unsupported_content_encoding",
        )
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestRefused("Content-Length is not a number", code="bad_content_length")
        if int(declared) > limits.max_body_bytes:
            raise PayloadTooLarge(f"request body exceeds {limits.max_body_bytes} bytes")


def _check_media_type(headers: Headers) -> None:
    content_type = headers.get("content-type")
    if content_type is None:
        raise UnsupportedMediaType(
            "a request body needs Content-Type: application/json", code="unsupported_media_type"
        )
    media, _, parameters = content_type.partition(";")
    if not _JSON_MEDIA.match(media.strip().lower()):
        raise UnsupportedMediaType(
            f"Content-Type {media.strip()!r} is not accepted; send application/json",
            code="unsupported_media_type",
        )
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise UnsupportedMediaType("a JSON body must be UTF-8", code="unsupported_media_type")


ErrorSender = Callable[[Scope, Receive, Send, ServiceError], Awaitable[None]]


class RequestGuardMiddleware:
    """Applies :class:`RequestLimits` to every HTTP request before the app sees it.

    The body is read here (bounded in size and time), checked, and handed to the app
    unchanged.
    """

    def __init__(self, app: ASGIApp, limits: RequestLimits, send_error: ErrorSender) -> None:
        self.app = app
        self.limits = limits
        self.send_error = send_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            check_url(scope, self.limits)
            _check_headers(headers, self.limits)
            chunks, pending = await _read_body(receive, self.limits)
            body = b"".join(chunks)
            if body and pending is None:
                _check_media_type(headers)
                parse_json_body(body, self.limits)
        except ServiceError as error:
            await self.send_error(scope, receive, send, error)
            return
        await self.app(scope, _replay(body, pending, receive), send)


def _replay(body: bytes, pending: Message | None, receive: Receive) -> Receive:
    """A receive callable that first gives back the buffered body, then the real stream."""
    queue: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    if pending is not None:
        queue = [pending] if not body else [*queue, pending]

    async def replayed() -> Message:
        if queue:
            return queue.pop(0)
        return await receive()

    return replayed
