"""A client of the identity service. Private keys never leave this process: the
client sends public keys and signatures only.

    client = IdentityClient("http://127.0.0.1:8000")
    account = client.register(keys, name="Alice", role="patient")
    session = client.login(keys)             # signed challenge -> tokens
    client.whoami(session.token("identity"))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from ehr_protocol.identity import registration_text

from ehr_client.errors import ApiClient, IdentityClientError
from ehr_client.keys import UserKeys
from ehr_client.results import Account, Challenge, Jwks, SigningKeys

__all__ = ["IdentityClient", "IdentityClientError", "Session", "UnexpectedChallenge"]


class UnexpectedChallenge(Exception):
    """The login message is not for this account or this domain: not signed."""


@dataclass(frozen=True)
class Session:
    account_id: str
    role: str
    session_id: str
    tokens: dict[str, str]

    def token(self, audience: str = "identity") -> str:
        return self.tokens[audience]


class IdentityClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        expected_domain: str | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.api = ApiClient(base_url, timeout=timeout, http=http, family=IdentityClientError)
        self.http = self.api.http
        self.expected_domain = expected_domain

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> IdentityClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, *, token: str | None = None, json: Any = None) -> Any:
        return self.api.call(method, path, token=token, json=json)

    # -- accounts ------------------------------------------------------------------------
    def register(
        self, keys: UserKeys, *, name: str, role: str, admin_token: str | None = None
    ) -> Account:
        """Register ``keys`` (public halves only) with a signature proving possession."""
        public = keys.public()
        text = registration_text(name, role, public.address, public.encryption_key)
        body = {
            "name": name,
            "role": role,
            "signing_address": public.address,
            "encryption_key": public.encryption_key,
            "signature": "0x" + keys.sign_text(text).hex(),
        }
        result: Account = self._call("POST", "/accounts", token=admin_token, json=body)
        return result

    def account(self, token: str, account_id: str) -> Account:
        result: Account = self._call("GET", f"/accounts/{account_id}", token=token)
        return result

    def account_by_address(self, token: str, address: str) -> Account:
        result: Account = self._call("GET", f"/accounts/by-address/{address}", token=token)
        return result

    def whoami(self, token: str) -> Account:
        result: Account = self._call("GET", "/me", token=token)
        return result

    def jwks(self) -> Jwks:
        result: Jwks = self._call("GET", "/.well-known/jwks.json")
        return result

    # -- login ---------------------------------------------------------------------------
    def challenge(self, address: str) -> Challenge:
        result: Challenge = self._call("POST", "/auth/challenge", json={"signing_address": address})
        return result

    def sign_challenge(self, keys: UserKeys, challenge: Mapping[str, Any]) -> str:
        """Check the EIP-4361 message names this account (and domain), then sign it."""
        message = str(challenge["message"])
        lines = message.split("\n")
        if len(lines) < 2 or lines[1] != keys.address:
            raise UnexpectedChallenge("the login message is for another account")
        if f"Nonce: {challenge['nonce']}" not in lines:
            raise UnexpectedChallenge("the login message does not carry its nonce")
        if self.expected_domain and not lines[0].startswith(f"{self.expected_domain} "):
            raise UnexpectedChallenge("the login message is for another domain")
        return "0x" + keys.sign_text(message).hex()

    def submit_login(
        self, nonce: str, signature: str, audiences: list[str] | None = None
    ) -> Session:
        body: dict[str, Any] = {"nonce": nonce, "signature": signature}
        if audiences is not None:
            body["audiences"] = audiences
        result = self._call("POST", "/auth/login", json=body)
        return Session(
            account_id=result["account_id"],
            role=result["role"],
            session_id=result["session_id"],
            tokens={aud: t["access_token"] for aud, t in result["tokens"].items()},
        )

    def login(self, keys: UserKeys, audiences: list[str] | None = None) -> Session:
        """Challenge, sign locally, exchange for tokens."""
        challenge = self.challenge(keys.address)
        signature = self.sign_challenge(keys, challenge)
        return self.submit_login(str(challenge["nonce"]), signature, audiences)

    # -- providers (admin) ---------------------------------------------------------------
    def verify_provider(
        self, token: str, account_id: str, licence_hash: str, metadata_hash: str | None = None
    ) -> Account:
        body: dict[str, Any] = {"licence_hash": licence_hash}
        if metadata_hash:
            body["metadata_hash"] = metadata_hash
        result: Account = self._call(
            "POST", f"/providers/{account_id}/verify", token=token, json=body
        )
        return result

    def suspend_provider(self, token: str, account_id: str, reason_code: str) -> Account:
        result: Account = self._call(
            "POST",
            f"/providers/{account_id}/suspend",
            token=token,
            json={"reason_code": reason_code},
        )
        return result

    def reinstate_provider(self, token: str, account_id: str) -> Account:
        result: Account = self._call("POST", f"/providers/{account_id}/reinstate", token=token)
        return result

    def rotate_signing_key(self, token: str) -> SigningKeys:
        result: SigningKeys = self._call("POST", "/admin/signing-keys/rotate", token=token)
        return result
