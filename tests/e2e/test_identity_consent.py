"""Identity and consent end to end, through the client SDK and through the ``ehr``
command line: registration, login, provider verification on chain, a patient-signed
grant and its revocation; every step checked on chain, through the API and on the bus.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from e2e.harness import Deployment, types_in_order
from ehr.consent.v1 import consent_pb2
from ehr.identity.v1 import identity_pb2
from ehr.vocabulary.v1 import vocabulary_pb2
from ehr_client import cli
from ehr_client.consent import LABS, TREATMENT
from ehr_client.consent_client import ConsentClient, ConsentClientError
from ehr_client.identity import IdentityClient
from ehr_client.keys import UserKeys
from ehr_client.keystore import Keystore
from typer.testing import CliRunner

from services.platform.events import envelope as codec

LICENCE = "0x" + hashlib.sha256(b"licence GMC 7654321").hexdigest()
MONTH = 30 * 86400

T = TypeVar("T")


def eventually(attempt: Callable[[], T], what: str, timeout_s: float = 30.0) -> T:
    """``attempt()`` once it no longer raises a 404 (the account is not known yet)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return attempt()
        except ConsentClientError as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise AssertionError(f"{what}: {exc}") from exc
        time.sleep(0.05)


def test_register_verify_grant_revoke_through_the_sdk(deployment: Deployment) -> None:
    d = deployment
    patient, provider = UserKeys.generate(), UserKeys.generate()
    with IdentityClient(d.identity_url) as identity, ConsentClient(d.consent_url) as consent:
        # 1. the bootstrap admin registers and logs in
        admin_id = identity.register(d.admin, name="Admin", role="admin")["account_id"]
        admin = identity.login(d.admin)
        # 2. a patient and a provider register and log in
        patient_id = identity.register(patient, name="Pat", role="patient")["account_id"]
        provider_id = identity.register(provider, name="Dr Lee", role="provider")["account_id"]
        patient_session, provider_session = identity.login(patient), identity.login(provider)
        patient_token = patient_session.token("consent")
        provider_token = provider_session.token("consent")

        # 3. the admin verifies the provider: on chain
        assert not d.identity.registry.is_verified(provider.address)
        verified = identity.verify_provider(admin.token(), provider_id, LICENCE)
        assert verified["provider_status"] == "verified"
        assert d.identity.registry.is_verified(provider.address)

        # consent learns both accounts from identity's events (and accepts its tokens)
        assert eventually(lambda: consent.nonce(patient_token, patient_id), "patient") == 0
        assert eventually(lambda: consent.grants_naming(provider_token, provider_id), "prov") == []

        # 4. the patient grants the provider labs for treatment
        registry = d.consent.registry
        assert not registry.is_authorised(patient.address, provider.address, LABS, TREATMENT)
        grant = consent.grant(
            patient,
            patient_token,
            patient_id=patient_id,
            grantee=provider.address,
            categories=LABS,
            purpose=TREATMENT,
            expires_in=MONTH,
        )
        assert grant["active"] and grant["grantee_id"] == provider_id
        assert grant["receipt"]["contract_address"] == registry.address
        assert registry.is_authorised(patient.address, provider.address, LABS, TREATMENT)
        assert consent.check(
            patient_token, patient=patient_id, grantee=provider_id, category=LABS, purpose=TREATMENT
        )
        assert [g["grant_id"] for g in consent.grants_naming(provider_token, provider_id)] == [
            grant["grant_id"]
        ]
        assert consent.nonce(patient_token, patient_id) == 1

        # 5. the patient revokes it
        revoked = consent.revoke(
            patient,
            patient_token,
            patient_id=patient_id,
            grantee=provider.address,
            categories=LABS,
            purpose=TREATMENT,
        )
        assert revoked["grant_id"] == grant["grant_id"] and not revoked["active"]
        assert not registry.is_authorised(patient.address, provider.address, LABS, TREATMENT)
        assert not consent.check(
            patient_token, patient=patient_id, grantee=provider_id, category=LABS, purpose=TREATMENT
        )
        assert consent.my_grants(patient_token, patient_id) == []
        assert consent.grants_naming(provider_token, provider_id) == []

    # 6. every step is an event on the bus, in the order the steps happened
    expected = [
        ("ehr.identity.account_registered.v1", admin_id),
        ("ehr.identity.login_succeeded.v1", admin_id),
        ("ehr.identity.account_registered.v1", patient_id),
        ("ehr.identity.account_registered.v1", provider_id),
        ("ehr.identity.login_succeeded.v1", patient_id),
        ("ehr.identity.login_succeeded.v1", provider_id),
        ("ehr.identity.provider_verified.v1", provider_id),
        ("ehr.consent.granted.v1", patient_id),
        ("ehr.consent.revoked.v1", patient_id),
    ]
    seen = d.events({admin_id, patient_id, provider_id}, lambda found: len(found) >= len(expected))
    assert types_in_order(seen) == expected

    by_type = {e.type: e for e in seen}  # one event of each type below
    proof = codec.payload(
        by_type["ehr.identity.provider_verified.v1"], identity_pb2.ProviderVerified
    )
    assert proof.provider_address.lower() == provider.address.lower()
    assert proof.licence_sha256.hex() == LICENCE[2:]
    assert proof.receipt.contract_address.lower() == d.identity.registry.contract.address.lower()

    granted = codec.payload(by_type["ehr.consent.granted.v1"], consent_pb2.ConsentGranted)
    assert granted.grant_id == grant["grant_id"] and granted.patient_id == patient_id
    assert granted.scope.grantee_id == provider_id
    assert list(granted.scope.categories) == [vocabulary_pb2.RECORD_CATEGORY_LABORATORY]
    assert granted.scope.purpose == vocabulary_pb2.PURPOSE_OF_USE_TREATMENT
    assert granted.receipt.transaction_hash == grant["receipt"]["transaction_hash"]

    gone = codec.payload(by_type["ehr.consent.revoked.v1"], consent_pb2.ConsentRevoked)
    assert gone.grant_id == grant["grant_id"] and gone.nonce == 1
    assert list(gone.scope.categories) == [vocabulary_pb2.RECORD_CATEGORY_LABORATORY]
    assert gone.scope.grantee_id == provider_id and len(gone.remaining_categories) == 0
    assert codec.event_time(by_type["ehr.consent.revoked.v1"]) >= codec.event_time(
        by_type["ehr.consent.granted.v1"]
    )


def test_the_revoked_event_names_the_revocation_transaction(deployment: Deployment) -> None:
    d = deployment
    patient, provider = UserKeys.generate(), UserKeys.generate()
    with IdentityClient(d.identity_url) as identity, ConsentClient(d.consent_url) as consent:
        patient_id = identity.register(patient, name="Pat", role="patient")["account_id"]
        provider_id = identity.register(provider, name="Dr Ng", role="provider")["account_id"]
        token = identity.login(patient).token("consent")
        provider_token = identity.login(provider).token("consent")
        # consent learns both accounts from identity's events: wait for each
        eventually(lambda: consent.nonce(token, patient_id), "patient")
        eventually(lambda: consent.grants_naming(provider_token, provider_id), "provider")
        scope: dict[str, Any] = {
            "patient_id": patient_id,
            "grantee": provider.address,
            "categories": LABS,
            "purpose": TREATMENT,
        }
        consent.grant(patient, token, expires_in=MONTH, **scope)
        revoked = consent.revoke(patient, token, **scope)
    seen = d.events({patient_id}, lambda found: any(e.type.endswith("revoked.v1") for e in found))
    event = next(e for e in seen if e.type == "ehr.consent.revoked.v1")
    gone = codec.payload(event, consent_pb2.ConsentRevoked)
    assert gone.scope.grantee_id == provider_id
    assert gone.receipt.transaction_hash == revoked["receipt"]["transaction_hash"]


# -- the same workflow through the `ehr` command line (embedded default) ------------------


@pytest.fixture
def ehr_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("EHR_PASSPHRASE", "a passphrase for tests")
    monkeypatch.setattr(cli, "SESSION_FILE", tmp_path / "session.json")
    yield tmp_path


def _ehr(*args: str, env: dict[str, str]) -> Any:
    result = CliRunner().invoke(cli.app, [*args, "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # The servers run in this process, so their log lines share the captured stdout:
    # the command's JSON is the document that starts a line with "{" or "[".
    lines = result.stdout.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line[:1] in "{[")
    document, _ = json.JSONDecoder().raw_decode("".join(lines[start:]))
    return document


def test_register_verify_grant_revoke_through_the_cli(
    embedded_deployment: Deployment, ehr_home: Path
) -> None:
    d = embedded_deployment
    env = {"EHR_IDENTITY_URL": d.identity_url, "EHR_CONSENT_URL": d.consent_url}
    admin_store = ehr_home / "admin.json"
    Keystore(admin_store).create("a passphrase for tests", keys=d.admin)
    stores = {who: str(ehr_home / f"{who}.json") for who in ("patient", "provider")}
    addresses = {
        who: _ehr("keys", "create", "--keystore", store, env=env)["address"]
        for who, store in stores.items()
    }
    admin = _ehr(
        "register", "--name", "Admin", "--role", "admin", "--keystore", str(admin_store), env=env
    )
    _ehr("login", "--keystore", str(admin_store), env=env)
    patient = _ehr("register", "--name", "Pat", "--keystore", stores["patient"], env=env)
    provider = _ehr(
        "register",
        "--name",
        "Dr Lee",
        "--role",
        "provider",
        "--keystore",
        stores["provider"],
        env=env,
    )
    verified = _ehr(
        "provider", "verify", provider["account_id"], "--licence-hash", LICENCE, env=env
    )
    assert verified["provider_status"] == "verified"
    assert d.identity.registry.is_verified(addresses["provider"])

    _ehr("login", "--keystore", stores["patient"], env=env)
    deadline = time.monotonic() + 30
    while d.consent.repository.account(provider["account_id"]) is None:
        assert time.monotonic() < deadline, "consent did not learn the provider's account"
        time.sleep(0.05)
    granted = _ehr(
        "consent",
        "grant",
        "--to",
        provider["account_id"],
        "-c",
        "labs",
        "--purpose",
        "treatment",
        "--expires",
        "30d",
        "--keystore",
        stores["patient"],
        env=env,
    )
    assert granted["category_names"] == "labs" and granted["purpose_name"] == "treatment"
    assert granted["expires_at"] >= time.time() + MONTH - 120
    registry = d.consent.registry
    assert registry.is_authorised(addresses["patient"], addresses["provider"], LABS, TREATMENT)
    check = ["consent", "check", "--grantee", provider["account_id"], "-c", "labs"]
    assert _ehr(*check, env=env)["authorised"] is True
    listed = _ehr("consent", "list", env=env)
    assert [g["grant_id"] for g in listed] == [granted["grant_id"]]

    revoked = _ehr(
        "consent",
        "revoke",
        "--to",
        addresses["provider"],
        "-c",
        "labs",
        "--keystore",
        stores["patient"],
        env=env,
    )
    assert revoked["active"] is False
    assert not registry.is_authorised(addresses["patient"], addresses["provider"], LABS, TREATMENT)
    assert _ehr(*check, env=env)["authorised"] is False
    assert _ehr("consent", "list", env=env) == []

    _ehr("login", "--keystore", stores["provider"], env=env)
    assert _ehr("consent", "list", "--received", env=env) == []

    seen = d.events({patient["account_id"]}, lambda found: len(found) >= 4)
    assert [t for t, _ in types_in_order(seen)] == [
        "ehr.identity.account_registered.v1",
        "ehr.identity.login_succeeded.v1",
        "ehr.consent.granted.v1",
        "ehr.consent.revoked.v1",
    ]
    assert admin["role"] == "admin"
