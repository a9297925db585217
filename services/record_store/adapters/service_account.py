"""The record store's own account at identity (role ``service``).

The service holds a secp256k1 signing key (``EHR_SERVICE_SIGNING_KEY``, else generated
into the data dir, 0600). An administrator registers the account once: the service
publishes its signed registration (``GET /records/service-registration``: name, role
``service``, signing address, the escrow key as its encryption key, EIP-191 signature of
identity's registration text), the administrator submits it to ``POST /accounts`` with
an admin token. From then on the service logs in like any user, by signing identity's
EIP-4361 challenge, and sends the tokens it gets to consent. No shared secret.

The tokens are kept by ``ServiceTokens`` (``services.platform.app.service_token``): renewed
before they expire, and after a peer refused one (identity retired the key that signed
it), with one login shared by the requests that wait for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from ehr_protocol.identity import registration_text
from eth_account import Account
from eth_account.messages import encode_defunct
from prometheus_client import CollectorRegistry, Counter

from services.platform.app.service_token import REFRESH_MARGIN_S, ServiceTokens
from services.platform.chain.keyfile import load_or_create_account
from services.record_store.domain.errors import DependencyUnavailable

SERVICE_NAME = "record-store"
AUDIENCES = ("consent", "identity")


def load_or_create_signing_key(path: Path) -> str:
    """The hex signing key in ``path``, generated there (0600) when missing."""
    return "0x" + load_or_create_account(path).key.hex().removeprefix("0x")


class ServiceAccount:
    """Logs in to identity with the service's key and keeps its tokens fresh (a
    ``TokenSource`` for the adapters that call consent and identity)."""

    def __init__(
        self,
        identity_url: str,
        signing_key_hex: str,
        encryption_key_hex: str,
        *,
        name: str = SERVICE_NAME,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._account = Account.from_key(signing_key_hex)
        self.address = str(self._account.address)
        self.encryption_key = encryption_key_hex
        self.name = name
        self._http = httpx.Client(base_url=identity_url.rstrip("/"), timeout=timeout_s)
        self._tokens = ServiceTokens(
            self._login, refresh_margin_s=REFRESH_MARGIN_S, clock=clock, on_login=self._counted
        )
        self._counters: list[Counter] = []

    @property
    def logins(self) -> int:
        """How many times the service logged in (first token, renewals, after refusals)."""
        return self._tokens.logins

    def count_logins_on(self, registry: CollectorRegistry) -> None:
        """Exposes ``service_token_logins_total{reason}`` on ``registry`` (``/metrics``):
        a rise with reason ``refused`` means a peer refused the service's token."""
        self._counters.append(
            Counter(
                "service_token_logins",
                "logins of the record store's service account, by reason",
                ["reason"],
                registry=registry,
            )
        )

    def _counted(self, reason: str) -> None:
        for counter in self._counters:
            counter.labels(reason).inc()

    def close(self) -> None:
        self._http.close()

    def _sign(self, text: str) -> str:
        signed = self._account.sign_message(encode_defunct(text=text))
        return "0x" + bytes(signed.signature).hex()

    def registration(self) -> dict[str, str]:
        """The signed registration an administrator submits to identity's ``/accounts``."""
        text = registration_text(self.name, "service", self.address, self.encryption_key)
        return {
            "name": self.name,
            "role": "service",
            "signing_address": self.address,
            "encryption_key": self.encryption_key,
            "signature": self._sign(text),
        }

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(f"identity service unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise DependencyUnavailable(
                f"identity refused the service login ({response.status_code}): "
                f"{response.text[:200]}; is the service account registered?"
            )
        answer: dict[str, Any] = response.json()
        return answer

    def _login(self) -> dict[str, str]:
        challenge = self._post("/auth/challenge", {"signing_address": self.address})
        message = str(challenge["message"])
        lines = message.split("\n")
        if len(lines) < 2 or lines[1] != self.address:
            raise DependencyUnavailable("identity's login message names another account")
        answer = self._post(
            "/auth/login",
            {
                "nonce": str(challenge["nonce"]),
                "signature": self._sign(message),
                "audiences": list(AUDIENCES),
            },
        )
        if answer.get("role") != "service":
            raise DependencyUnavailable(f"the service account has role {answer.get('role')!r}")
        return {
            audience: str(issued["access_token"]) for audience, issued in answer["tokens"].items()
        }

    def token(self, audience: str) -> str:
        """A token for ``audience``; logs in again when it is missing, about to expire,
        or was refused."""
        try:
            return self._tokens.token(audience)
        except LookupError as exc:
            raise DependencyUnavailable(f"identity issued no token for {audience!r}") from exc

    def refused(self, audience: str, token: str) -> None:
        """A peer answered 401 to ``token``: the next ``token(audience)`` logs in again."""
        self._tokens.refused(audience, token)
