"""``ServiceTokens`` and ``BearerHttp``: a caller whose token a peer refuses (identity
retired the key that signed it) drops it, logs in once, retries once, and only a second
refusal reaches its own caller; concurrent refusals share one login; tokens are renewed
before ``exp``, by a quarter of their lifetime at most."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from jose import jwt

from services.platform.app.service_token import (
    BearerHttp,
    CallableTokens,
    ServiceTokens,
)

NOW = 1_800_000_000.0


def _token(serial: int, lifetime_s: int = 900, issued: float = NOW) -> str:
    claims = {"sub": "svc", "n": serial, "iat": int(issued), "exp": int(issued) + lifetime_s}
    return str(jwt.encode(claims, "k" * 32, algorithm="HS256"))


class Identity:
    """Issues a new token per login (for every audience) and counts the logins."""

    def __init__(self, lifetime_s: int = 900, clock: Callable[[], float] = lambda: NOW) -> None:
        self.issued: list[str] = []
        self.lifetime = lifetime_s
        self.clock = clock
        self.gate = threading.Event()
        self.gate.set()

    def login(self) -> dict[str, str]:
        self.gate.wait(10)
        token = _token(len(self.issued), self.lifetime, self.clock())
        self.issued.append(token)
        return {"consent": token, "identity": token}


class Peer:
    """A peer that accepts only the tokens in ``accepted`` (401 otherwise)."""

    def __init__(self) -> None:
        self.accepted: set[str] = set()
        self.seen: list[str] = []
        self.lock = threading.Lock()
        self.before_answer: Callable[[str], None] = lambda token: None

    def handle(self, request: httpx.Request) -> httpx.Response:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        with self.lock:
            self.seen.append(token)
        self.before_answer(token)
        if token in self.accepted:
            return httpx.Response(200, json={"ok": True})
        return httpx.Response(401, json={"error": {"code": "invalid_token"}})


def _client(peer: Peer, tokens: ServiceTokens | CallableTokens) -> BearerHttp:
    transport = httpx.MockTransport(peer.handle)
    return BearerHttp(httpx.Client(base_url="http://peer", transport=transport), "consent", tokens)


def test_a_refused_token_is_replaced_once_and_the_request_retried() -> None:
    identity, peer = Identity(), Peer()
    tokens = ServiceTokens(identity.login, clock=lambda: NOW)
    http = _client(peer, tokens)
    first = tokens.token("consent")
    peer.accepted = {first}
    assert http.get("/check").status_code == 200
    assert tokens.logins == 1

    peer.accepted = set()  # identity retired the key that signed ``first``

    def accept_new(token: str) -> None:
        if token != first:
            peer.accepted.add(token)

    peer.before_answer = accept_new
    assert http.get("/check").status_code == 200
    assert tokens.logins == 2
    assert peer.seen[-2:] == [first, identity.issued[1]]
    assert tokens.token("identity") == identity.issued[1]  # one login renews every audience


def test_a_second_refusal_is_answered_without_more_logins() -> None:
    identity, peer = Identity(), Peer()
    tokens = ServiceTokens(identity.login, clock=lambda: NOW)
    http = _client(peer, tokens)
    response = http.get("/check")
    assert response.status_code == 401
    assert tokens.logins == 2  # the first token, then one renewal for the retry
    assert len(peer.seen) == 2  # the request and exactly one retry


def test_concurrent_refusals_share_one_login() -> None:
    identity, peer = Identity(), Peer()
    tokens = ServiceTokens(identity.login, clock=lambda: NOW)
    http = _client(peer, tokens)
    stale = tokens.token("consent")
    callers = 8
    all_sent_stale = threading.Barrier(callers, timeout=10)

    def refuse_stale_after_all_sent(token: str) -> None:
        if token == stale:
            all_sent_stale.wait()  # every caller holds the stale token when it is refused
        else:
            peer.accepted.add(token)

    peer.before_answer = refuse_stale_after_all_sent
    with ThreadPoolExecutor(callers) as pool:
        statuses = list(pool.map(lambda _: http.get("/check").status_code, range(callers)))
    assert statuses == [200] * callers
    assert tokens.logins == 2
    assert set(peer.seen) == {stale, identity.issued[1]}


def test_a_late_refusal_keeps_the_newer_token() -> None:
    identity = Identity()
    tokens = ServiceTokens(identity.login, clock=lambda: NOW)
    old = tokens.token("consent")
    tokens.refused("consent", old)
    new = tokens.token("consent")
    tokens.refused("consent", old)  # another request's answer to the old token, late
    assert tokens.token("consent") == new
    assert tokens.logins == 2


@pytest.mark.parametrize(("lifetime_s", "renew_after_s"), [(900, 840), (40, 30), (3600, 3540)])
def test_tokens_are_renewed_shortly_before_they_expire(
    lifetime_s: int, renew_after_s: float
) -> None:
    now = [NOW]
    identity = Identity(lifetime_s, clock=lambda: now[0])
    tokens = ServiceTokens(identity.login, clock=lambda: now[0])
    first = tokens.token("consent")
    now[0] = NOW + renew_after_s - 1
    assert tokens.token("consent") == first
    now[0] = NOW + renew_after_s
    assert tokens.token("consent") != first
    assert tokens.logins == 2


def test_a_failed_login_reaches_the_caller_and_the_next_call_tries_again() -> None:
    calls = []

    def login() -> dict[str, str]:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("identity is down")
        return {"consent": _token(1)}

    tokens = ServiceTokens(login, clock=lambda: NOW)
    with pytest.raises(ConnectionError):
        tokens.token("consent")
    assert tokens.token("consent") == _token(1)
    assert tokens.logins == 1
    with pytest.raises(LookupError):
        tokens.token("records")  # never issued: not a token of another audience


def test_a_token_read_from_a_file_is_read_again_after_a_refusal(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old\n")
    peer = Peer()
    peer.accepted = {"new"}

    def operator_replaces_file(token: str) -> None:
        token_file.write_text("new\n")

    peer.before_answer = operator_replaces_file
    http = _client(peer, CallableTokens(lambda: token_file.read_text().strip()))
    assert http.get("/proofs").status_code == 200
    assert peer.seen == ["old", "new"]
