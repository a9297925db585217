"""Identity rotates its signing key and retires the old one while a provider uploads and
reads: the record store, whose cached service token the retired key signed, is refused
by consent (401), logs in again and retries, and never answers 5xx.

On both stacks: the embedded default composed in this process, and the real stack's
separate processes behind nginx (the record store process keeps its token in memory;
its logins are read from ``/metrics`` on its metrics port). Users whose own tokens the
retired key signed are refused with 401 (an expected answer) and log in again, as
clients do.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from devstack.stack import Stack
from ehr_client.identity import IdentityClient, Session
from ehr_client.keys import UserKeys, read_key_file
from ehr_client.records import IdentityKeyDirectory, Recipient, RecordsClient, RecordsClientError
from jose import jwt
from prometheus_client.parser import text_string_to_metric_families
from record_store.test_records_flow import observation

from services.embedded.main import EmbeddedSettings, EmbeddedSystem, compose
from services.platform.app.loopback import bind_loopback, serve_in_thread

TREATMENT = 1
T = TypeVar("T")


def poll(attempt: Callable[[], T | None], what: str, timeout_s: float = 90.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        answer = attempt()
        if answer is not None:
            return answer
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(0.2)


@dataclass
class Person:
    """A user of the gateway who logs in again when a service refuses its token."""

    gateway: str
    identity: IdentityClient
    keys: UserKeys
    account_id: str = ""
    session: Session | None = None
    relogins: int = 0

    def login(self) -> None:
        self.session = self.identity.login(self.keys)
        self.account_id = self.session.account_id

    def token(self, audience: str) -> str:
        assert self.session is not None
        return str(self.session.token(audience))

    def records(self) -> RecordsClient:
        return RecordsClient(
            self.gateway,
            token=self.token("records"),
            keys=self.keys,
            account_id=self.account_id,
            directory=IdentityKeyDirectory(self.identity, self.token("identity")),
        )

    def recipient(self) -> Recipient:
        return Recipient(self.account_id, self.keys.public().encryption_key)


@dataclass
class Traffic:
    """A provider uploading and another provider's consent-gated reads, in a loop."""

    author: Person
    reader: Person
    patient: Person
    answers: list[tuple[str, int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def _call(self, what: str, person: Person, action: Callable[[RecordsClient], object]) -> None:
        with person.records() as client:
            try:
                action(client)
                self.answers.append((what, 200, ""))
            except RecordsClientError as error:
                self.answers.append((what, error.status, error.code))
                if error.status == 401:  # the user's own token: the retired key signed it
                    person.login()
                    person.relogins += 1

    def once(self) -> None:
        record_id = str(uuid.uuid4())

        def upload(client: RecordsClient) -> None:
            client.upload(
                observation(self.patient.account_id),
                patient=self.patient.recipient(),
                category="labs",
                record_id=record_id,
            )

        self._call("upload", self.author, upload)
        if self.answers[-1][1] == 200:
            self._call(
                "read", self.reader, lambda client: client.fetch(record_id, purpose=TREATMENT)
            )

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.once()
        except BaseException as error:  # reported by the test, not lost in the thread
            self.errors.append(error)

    def successes(self, what: str) -> int:
        return sum(1 for w, status, _ in self.answers if w == what and status == 200)


def _admin_call(gateway: str, admin: Person, method: str, path: str) -> dict[str, object]:
    response = httpx.request(
        method,
        f"{gateway}/identity{path}",
        headers={"Authorization": f"Bearer {admin.token('identity')}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def _consent_status(gateway: str, token: str, patient_id: str) -> int:
    return httpx.get(
        f"{gateway}/consent/patients/{patient_id}/nonce",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).status_code


def rotate_and_retire_under_traffic(
    gateway: str, admin_keys: UserKeys, refused_logins: Callable[[], float], *, register: bool
) -> Traffic:
    """The scenario of both tests; returns the traffic it observed."""
    identity = IdentityClient(f"{gateway}/identity")
    if register:
        identity.register(admin_keys, name="Rotating Admin", role="admin")
        registration = httpx.get(f"{gateway}/records/service-registration", timeout=60)
        created = httpx.post(
            f"{gateway}/identity/accounts",
            json=registration.json(),
            headers={"Authorization": f"Bearer {identity.login(admin_keys).token('identity')}"},
            timeout=60,
        )
        assert created.status_code == 201, created.text
    admin = Person(gateway, identity, admin_keys)
    admin.login()

    def person(role: str, verified: bool = False) -> Person:
        someone = Person(gateway, identity, UserKeys.generate())
        registered = identity.register(
            someone.keys, name=f"{role} {uuid.uuid4().hex[:6]}", role=role
        )
        if verified:
            identity.verify_provider(
                admin.token("identity"), str(registered["account_id"]), "0x" + "cd" * 32
            )
        someone.login()
        return someone

    traffic = Traffic(person("provider", True), person("provider", True), person("patient"))

    def warm() -> bool | None:  # until the record store has read the three accounts
        traffic.once()
        return True if traffic.answers[-1][0] == "read" else None  # the upload went in

    poll(warm, "a first upload and read")
    assert traffic.answers[-1] == ("read", 403, traffic.answers[-1][2])  # no grant: consent
    retired_kid = str(jwt.get_unverified_header(admin.token("identity"))["kid"])
    before = refused_logins()
    traffic.answers.clear()

    worker = threading.Thread(target=traffic.run, daemon=True)
    worker.start()
    try:
        rotated = _admin_call(gateway, admin, "POST", "/admin/signing-keys/rotate")
        assert rotated["active_kid"] != retired_kid
        left = _admin_call(gateway, admin, "DELETE", f"/admin/signing-keys/{retired_kid}")
        assert retired_kid not in left["kids"]  # type: ignore[operator]

        # A user logs in after the retirement: consent fetches the JWKS for the new key,
        # and with it learns that the old key is gone.
        newcomer = person("patient")
        assert jwt.get_unverified_header(newcomer.token("consent"))["kid"] == rotated["active_kid"]
        poll(
            lambda: (
                _consent_status(gateway, newcomer.token("consent"), newcomer.account_id) == 200
                or None
            ),
            "consent to accept the new key",
        )
        # ... and refuses every token the retired key signed (the record store's cached
        # one among them; an old user token stands for it here).
        old_token = traffic.patient.token("consent")
        assert jwt.get_unverified_header(old_token)["kid"] == retired_kid
        assert _consent_status(gateway, old_token, traffic.patient.account_id) == 401

        def relogged() -> bool | None:
            failed = [a for a in traffic.answers if a[1] >= 500]
            assert not failed, failed[:5]  # today's failure: 503 until the token expires
            return refused_logins() > before or None

        poll(relogged, "the record store to log in again")
        after_relogin = traffic.successes("upload")
        poll(
            lambda: traffic.successes("upload") >= after_relogin + 3 or None,
            "uploads after the record store logged in again",
        )
    finally:
        traffic.stop.set()
        worker.join(timeout=120)
        identity.close()
    assert not traffic.errors, traffic.errors
    assert not worker.is_alive()
    return traffic


def assert_no_5xx(traffic: Traffic) -> None:
    unexpected = [a for a in traffic.answers if a[1] >= 500]
    assert not unexpected, unexpected[:10]
    expected_4xx = {(w, s) for w, s, _ in traffic.answers if 400 <= s < 500}
    assert expected_4xx <= {("read", 403), ("upload", 401), ("read", 401)}, expected_4xx
    assert traffic.successes("upload") >= 3
    assert ("read", 403) in expected_4xx  # consent was asked, and said no grant


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[str, EmbeddedSystem, UserKeys]]:
    admin = UserKeys.generate()
    settings = EmbeddedSettings(data_dir=tmp_path / "embedded", admin_address=admin.address)
    sock = bind_loopback()
    system = compose(settings, sock)
    try:
        with serve_in_thread(system.app, sock) as url:
            yield url, system, admin
    finally:
        system.close()


def test_rotation_and_retirement_on_the_embedded_default(
    embedded: tuple[str, EmbeddedSystem, UserKeys],
) -> None:
    url, system, admin = embedded
    registry = system.records.app.state.metrics_registry

    def refused_logins() -> float:
        value = registry.get_sample_value("service_token_logins_total", {"reason": "refused"})
        return float(value or 0.0)

    logins_before = system.records.account.logins
    traffic = rotate_and_retire_under_traffic(url, admin, refused_logins, register=True)
    assert_no_5xx(traffic)
    assert refused_logins() >= 1
    assert system.records.account.logins > logins_before


def _metric(url: str, name: str, labels: dict[str, str]) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


@pytest.mark.kafka
@pytest.mark.geth
@pytest.mark.postgres
def test_rotation_and_retirement_on_the_real_stack(services_stack: Stack) -> None:
    manifest = json.loads(services_stack.services.manifest_file.read_text())
    records = services_stack.services.metrics_url("record-store")

    def refused_logins() -> float:
        return _metric(records, "service_token_logins_total", {"reason": "refused"})

    admin = read_key_file(Path(manifest["admin_key_file"]))
    traffic = rotate_and_retire_under_traffic(
        manifest["gateway_url"].rstrip("/"), admin, refused_logins, register=False
    )
    assert_no_5xx(traffic)
    assert refused_logins() >= 1
