"""The ``AccountDirectory`` port over identity's ``GET /accounts/{id}``.

Asked only when a provider calls before the record store has read the account's
registration from identity's events, so that a provider verified a moment ago is told
to retry instead of "not verified". Authenticated with the service account's
``identity`` token (``ServiceAccount``), renewed and retried once on a 401
(``BearerHttp``).
"""

from __future__ import annotations

from urllib.parse import quote

import httpx

from services.platform.app.service_token import BearerHttp, TokenSource
from services.record_store.domain.errors import DependencyUnavailable
from services.record_store.domain.model import DirectoryEntry


class HttpAccountDirectory:
    def __init__(self, identity_url: str, tokens: TokenSource, timeout_s: float = 5.0) -> None:
        self._http = BearerHttp(
            httpx.Client(base_url=identity_url.rstrip("/"), timeout=timeout_s), "identity", tokens
        )

    def close(self) -> None:
        self._http.close()

    def entry(self, account_id: str) -> DirectoryEntry | None:
        try:
            response = self._http.get(f"/accounts/{quote(account_id, safe='')}")
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(f"identity service unreachable: {exc}") from exc
        if response.status_code in (404, 422):
            return None
        if response.status_code != 200:
            raise DependencyUnavailable(
                f"identity answered {response.status_code}: {response.text[:200]}"
            )
        answer = response.json()
        return DirectoryEntry(
            str(answer["account_id"]),
            str(answer["role"]),
            str(answer["signing_address"]),
            answer.get("provider_status"),
        )
