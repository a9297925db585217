"""The ``ConsentCheck`` port over the consent service's HTTP ``check`` endpoint.

The record store calls it with the access token identity issued to its service account
(role ``service``, audience ``consent``; ``ServiceAccount``), so consent trusts only
identity's keys. A 401 from consent (the token's key was retired) gets one retry with
a new token (``BearerHttp``); only a second refusal is "consent unavailable".
"""

from __future__ import annotations

import httpx

from services.platform.app.service_token import BearerHttp, TokenSource
from services.record_store.domain.errors import DependencyUnavailable
from services.record_store.domain.model import AuthorisedGrantee, ConsentDecision

REFUSAL_REASONS = frozenset({"no_grant", "revoked", "expired"})
"""The refusal reasons of consent's check answer the record store records; an absent or
other reason is read as ``no_grant``."""


class HttpConsentCheck:
    """Asks consent on every call (``GET /consent/check``, ``GET /consent/patients/{id}/
    grantees``; no caching: a revocation counts for every read that starts after the
    revoke call returned)."""

    def __init__(self, base_url: str, tokens: TokenSource, timeout_s: float = 5.0) -> None:
        self._http = BearerHttp(
            httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s), "consent", tokens
        )

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, params: dict[str, str | int]) -> httpx.Response:
        try:
            return self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(f"consent service unreachable: {exc}") from exc

    def decision(
        self, patient_id: str, grantee_id: str, category_bit: int, purpose: int
    ) -> ConsentDecision:
        """Consent's ``check`` answer: the authorising grant, or the refusal ``reason``
        (``no_grant``, ``revoked``, ``expired``; absent is read as ``no_grant``)."""
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
            return ConsentDecision(None)  # an account consent does not know holds no grant
        if response.status_code != 200:
            raise DependencyUnavailable(
                f"consent check answered {response.status_code}: {response.text[:200]}"
            )
        answer = response.json()
        if not answer.get("authorised"):
            reason = answer.get("reason")
            return ConsentDecision(None, reason if reason in REFUSAL_REASONS else "no_grant")
        return ConsentDecision(str(answer.get("grant_id") or ""), "granted")

    def authorising_grant(
        self, patient_id: str, grantee_id: str, category_bit: int, purpose: int
    ) -> str | None:
        """The id of the grant that lets ``grantee`` read now, or None."""
        return self.decision(patient_id, grantee_id, category_bit, purpose).grant_id

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
