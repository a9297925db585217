"""A service's own bearer tokens for calling its peers, renewed when a peer refuses them.

Identity rotates its signing key and later retires the old one; from then on every
token the old key signed is refused (401) by the services that have fetched the new
JWKS, however long before its ``exp`` that is. A service that calls a peer with a
cached token must therefore not trust the cache until ``exp``: on a 401 it drops the
token, gets a new one, and retries the request once, and only a second refusal becomes
its own error. ``ServiceTokens`` keeps the cache (one login shared by every request
that waits for it: no herd of logins after a rotation, and a refused token is dropped
only while it is still the cached one) and ``BearerHttp`` does the retry.

The tokens are also renewed shortly before ``exp`` (a quarter of their lifetime, at
most ``refresh_margin_s``), so an expiry is never what makes a peer refuse them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx
import structlog
from jose import jwt
from jose.exceptions import JOSEError

log = structlog.get_logger(__name__)

REFRESH_MARGIN_S = 60.0


class TokenSource(Protocol):
    """Where a caller's bearer tokens come from, by audience."""

    def token(self, audience: str) -> str:
        """A token for ``audience`` believed valid now."""
        ...

    def refused(self, audience: str, token: str) -> None:
        """A peer answered 401 to ``token``: forget it so ``token`` gets a new one."""
        ...


def _lifetime(token: str) -> tuple[float, float]:
    """``(iat, exp)`` of a token, read without checking it (the peer checks it)."""
    try:
        claims = jwt.get_unverified_claims(token)
        expires = float(claims["exp"])
    except (JOSEError, KeyError, TypeError, ValueError):
        return (0.0, 0.0)  # unreadable: used once, renewed on the next call
    issued = claims.get("iat")
    return (float(issued) if isinstance(issued, int | float) else expires, expires)


class ServiceTokens:
    """Tokens by audience from ``login()``, renewed before ``exp`` and after a refusal.

    ``login`` returns ``{audience: token}`` for every audience the service uses, or
    raises (its exception reaches the caller: the service's own "dependency unavailable"
    error). It runs under a lock, so concurrent callers wait for one login and share its
    tokens. ``logins`` counts the logins done; ``on_login`` is called after each one
    (a metric).
    """

    def __init__(
        self,
        login: Callable[[], Mapping[str, str]],
        *,
        refresh_margin_s: float = REFRESH_MARGIN_S,
        clock: Callable[[], float] = time.time,
        on_login: Callable[[str], None] | None = None,
    ) -> None:
        self._login = login
        self._margin = refresh_margin_s
        self._clock = clock
        self._on_login = on_login
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[float, str]] = {}  # audience -> (renew at, token)
        self.logins = 0

    def _fresh(self, audience: str) -> str | None:
        cached = self._tokens.get(audience)
        if cached is None or cached[0] <= self._clock():
            return None
        return cached[1]

    def token(self, audience: str) -> str:
        with self._lock:
            token = self._fresh(audience)
            if token is not None:
                return token
            cached = self._tokens.get(audience)
            reason = (
                "missing"
                if cached is None
                else "refused"
                if cached[0] == float("-inf")
                else "expiring"
            )
            renewed: dict[str, tuple[float, str]] = {}
            for issued_for, issued in self._login().items():
                issued_at, expires = _lifetime(issued)
                margin = min(self._margin, (expires - issued_at) / 4)
                renewed[issued_for] = (expires - margin, issued)
            self._tokens = renewed  # one login renews every audience's token
            self.logins += 1
            log.info("service_token_login", audience=audience, reason=reason)
            if self._on_login is not None:
                self._on_login(reason)
            token = self._fresh(audience)
            if token is None:
                raise LookupError(f"the login issued no usable token for {audience!r}")
            return token

    def refused(self, audience: str, token: str) -> None:
        with self._lock:
            cached = self._tokens.get(audience)
            if cached is not None and cached[1] == token:
                # still the refused one: make it due (a newer token another request
                # already got is kept)
                self._tokens[audience] = (float("-inf"), token)


class CallableTokens:
    """A ``TokenSource`` over a function that reads the current token (e.g. from a file
    an operator replaces): a refusal just means the function is asked again."""

    def __init__(self, read: Callable[[], str]) -> None:
        self._read = read

    def token(self, audience: str) -> str:
        return self._read()

    def refused(self, audience: str, token: str) -> None:
        return None


class BearerHttp:
    """Requests to one peer with a token of one audience, retried once after a 401 with
    a new token. ``httpx.HTTPError`` reaches the caller (it knows its own error)."""

    def __init__(self, client: httpx.Client, audience: str, tokens: TokenSource) -> None:
        self.client = client
        self._audience = audience
        self._tokens = tokens

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        token = self._tokens.token(self._audience)
        response = self._send(method, path, token, kwargs)
        if response.status_code != 401:
            return response
        log.info("service_token_refused", audience=self._audience, path=path)
        self._tokens.refused(self._audience, token)
        return self._send(method, path, self._tokens.token(self._audience), kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def _send(self, method: str, path: str, token: str, kwargs: dict[str, Any]) -> httpx.Response:
        headers = {**kwargs.get("headers", {}), "Authorization": f"Bearer {token}"}
        return self.client.request(method, path, **{**kwargs, "headers": headers})
