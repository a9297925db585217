"""The record store and identity as users reach them: ``python -m services.embedded serve``
in its own process, behind its gateway (identity's prefix stripped, the record store's
kept).

- Each documented path, joined to the document's ``servers`` URL (identity: ``/identity``;
  the record store: none, its paths carry ``/records``), reaches the route it documents.
- A verification and an upload raced for real: an upload never hears "not verified"
  once the verification has returned; it hears "retry" (503
  ``provider_verification_pending`` with ``Retry-After``) until the record store has read
  the account, then succeeds.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ehr_client.identity import IdentityClient
from ehr_client.keys import UserKeys
from ehr_client.records import IdentityKeyDirectory, Recipient, RecordsClient, RecordsClientError
from fixtures.served_embedded import ServedEmbedded, served_embedded
from record_store.test_records_flow import observation

SAMPLES = {
    "record_id": lambda: str(uuid.uuid4()),
    "version": lambda: "1",
    "holder_id": lambda: "someone",
    "account_id": lambda: str(uuid.uuid4()),
    "address": lambda: UserKeys.generate().address,
    "kid": lambda: str(uuid.uuid4()),
}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedEmbedded]:
    """The served embedded default with the record store's service account registered
    (what an administrator does once, so the record store can ask consent and identity)."""
    for served in served_embedded(tmp_path_factory.mktemp("records-gateway")):
        registration = httpx.get(f"{served.url}/records/service-registration", timeout=60)
        assert registration.status_code == 200, registration.text
        created = httpx.post(
            f"{served.url}/identity/accounts",
            json=registration.json(),
            headers=served.accounts["admin"].headers("identity"),
            timeout=60,
        )
        assert created.status_code == 201, created.text
        yield served


def _filled(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)](), path)


def _reached_route(response: httpx.Response) -> bool:
    """Whether a service app answered from one of its routes: the gateway's own 404 has
    no request id, and a service's unmatched path is a bare ``not_found`` (a route's own
    404 names what is missing)."""
    if "x-request-id" not in response.headers or response.status_code == 405:
        return False
    return not (response.status_code == 404 and response.json()["error"]["code"] == "not_found")


def _unreached(base: str, document: dict[str, Any]) -> list[str]:
    prefix = document["servers"][0]["url"] if document.get("servers") else ""
    missed = []
    with httpx.Client(base_url=base, timeout=60) as http:
        for path, item in document["paths"].items():
            for method in item:
                url = prefix + _filled(path)
                body = {} if method in ("post", "put", "patch") else None
                response = http.request(method.upper(), url, json=body)
                if not _reached_route(response):
                    missed.append(f"{method.upper()} {url}: {response.status_code}")
    return missed


@pytest.mark.parametrize(
    ("service", "servers"),
    [("identity", [{"url": "/identity"}]), ("records", None)],
)
def test_every_documented_path_reaches_its_route_through_the_gateway(
    embedded: ServedEmbedded, service: str, servers: list[dict[str, str]] | None
) -> None:
    fetched = httpx.get(f"{embedded.url}/{service}/openapi.json", timeout=60)
    assert fetched.status_code == 200
    document = fetched.json()
    assert document.get("servers") == servers
    assert len(document["paths"]) >= 8
    assert _unreached(embedded.url, document) == []


def test_a_doubled_prefix_would_not_reach_the_record_store(embedded: ServedEmbedded) -> None:
    """What the check above tells apart: ``/records`` as a servers entry would double."""
    doubled = httpx.get(f"{embedded.url}/records/records/escrow-key", timeout=60)
    assert not _reached_route(doubled)
    direct = httpx.get(f"{embedded.url}/records/escrow-key", timeout=60)
    assert _reached_route(direct) and direct.status_code == 401


def _recorded_headers(seen: list[httpx.Response]) -> httpx.Client:
    def keep(response: httpx.Response) -> None:
        seen.append(response)

    return httpx.Client(timeout=60, event_hooks={"response": [keep]})


ALLOWED_BEFORE = {(403, "provider_not_verified")}
RETRY = (503, "provider_verification_pending")
STILL_READING = {(422, "unknown_patient")}  # the patient's registration, same lag


def test_racing_a_verification_and_an_upload(embedded: ServedEmbedded) -> None:
    admin, patient = embedded.accounts["admin"], embedded.accounts["patient"]
    recipient = Recipient(patient.account_id, patient.keys.public().encryption_key)
    seen_outcomes: dict[tuple[int, str], int] = {}
    for race in range(5):
        keys = UserKeys.generate()
        with (
            IdentityClient(f"{embedded.url}/identity") as identity,
            IdentityClient(f"{embedded.url}/identity") as admin_side,
        ):
            account_id = str(
                identity.register(keys, name=f"Dr Race {race}", role="provider")["account_id"]
            )
            session = identity.login(keys, ["identity", "records"])
            verified_at: list[float] = []

            def verify(
                admin_side: IdentityClient = admin_side,
                account_id: str = account_id,
                verified_at: list[float] = verified_at,
            ) -> None:
                admin_side.verify_provider(admin.tokens["identity"], account_id, "0x" + "cd" * 32)
                verified_at.append(time.monotonic())

            responses: list[httpx.Response] = []
            http = _recorded_headers(responses)
            http.base_url = httpx.URL(embedded.url)
            uploader = RecordsClient(
                embedded.url,
                token=session.token("records"),
                keys=keys,
                account_id=account_id,
                directory=IdentityKeyDirectory(identity, session.token("identity")),
                http=http,
            )
            verifier = threading.Thread(target=verify)
            attempts: list[tuple[float, int, str, str | None]] = []
            deadline = time.monotonic() + 90
            verifier.start()
            try:
                while True:
                    started = time.monotonic()
                    try:
                        uploader.upload(
                            observation(patient.account_id), patient=recipient, category="labs"
                        )
                        break
                    except RecordsClientError as refused:
                        retry_after = responses[-1].headers.get("Retry-After")
                        attempts.append((started, refused.status, refused.code, retry_after))
                    assert time.monotonic() < deadline, attempts[-5:]
                    time.sleep(0.02)
            finally:
                verifier.join(timeout=120)
                uploader.close()
        assert verified_at, "the verification did not return"
        for started, status, code, retry_after in attempts:
            outcome = (status, code)
            seen_outcomes[outcome] = seen_outcomes.get(outcome, 0) + 1
            if outcome == RETRY:
                assert retry_after is not None and int(retry_after) >= 1
            elif outcome in ALLOWED_BEFORE:
                assert started < verified_at[0], (
                    f"told 'not verified' {started - verified_at[0]:.3f} s after the "
                    "verification returned"
                )
            else:
                assert outcome in STILL_READING, outcome
    assert seen_outcomes.get((403, "provider_not_verified"), 0) >= 1, seen_outcomes
