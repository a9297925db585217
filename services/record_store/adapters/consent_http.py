"""The ``ConsentCheck`` port over the consent service's HTTP ``check`` endpoint.

The record store calls it with the access token identity issued to its service account
(role ``service``, audience ``consent``; ``ServiceAccount``), so consent trusts only
identity's keys.
"""

from __future__ import annotations

from typing import Protocol

import httpx

from services.record_store.domain.errors import DependencyUnavailable
from services.record_store.domain.model import AuthorisedGrantee


class TokenSource(Protocol):
    """Where the service's own access tokens come from (``ServiceAccount``)."""

    def token(self, audience: str) -> str: ...


class HttpConsentCheck:
    """Asks consent on every call (``GET /consent/check``, ``GET /consent/patients/{id}/
    grantees``; no caching: a revocation counts for every read that starts after the
    revoke call returned)."""

    def __init__(self, base_url: str, tokens: TokenSource, timeout_s: float = 5.0) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self._tokens = tokens

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, params: dict[str, str | int]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._tokens.token('consent')}"}
        try:
            return self._http.get(path, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(f"consent service unreachable: {exc}") from exc

    def authorising_grant(
        self, patient_id: str, grantee_id: str, category_bit: int, purpose: int
    ) -> str | None:
        response = self._get(
            "/consent/check",
            {
                "patient": patient_id,
                "grantee": grantee_id,
                "category": category_bit,
                "purpose": purpose,
            },
        )
        if response.status_code == 404:
            return None  # an account consent does not know holds no grant
        if response.status_code != 200:
            raise DependencyUnavailable(
                f"consent check answered {response.status_code}: {response.text[:200]}"
            )
        answer = response.json()
        if not answer.get("authorised"):
            return None
        return str(answer.get("grant_id") or "")

    def authorised_grantees(self, patient_id: str, category_bit: int) -> list[AuthorisedGrantee]:
        response = self._get(f"/consent/patients/{patient_id}/grantees", {"category": category_bit})
        if response.status_code == 404:
            return []  # a patient consent does not know has granted nothing
        if response.status_code != 200:
            raise DependencyUnavailable(
                f"consent grantees answered {response.status_code}: {response.text[:200]}"
            )
        return [
            AuthorisedGrantee(str(g["grantee_id"]), str(g["grant_id"]), int(g["purpose"]))
            for g in response.json()
        ]
