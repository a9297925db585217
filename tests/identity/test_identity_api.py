"""Identity through the client SDK, on the embedded default and on the real stack."""

from __future__ import annotations

import hashlib

import pytest
from ehr.identity.v1 import identity_pb2
from ehr.vocabulary.v1 import vocabulary_pb2
from ehr_client.identity import IdentityClientError
from ehr_client.keys import UserKeys
from identity.conftest import Served
from jose import jwt

from services.platform.events import envelope as events

LICENCE = "0x" + hashlib.sha256(b"licence GMC 1234567").hexdigest()


def test_register_login_verify_suspend_reinstate(served: Served) -> None:
    client, admin_token = served.client, served.admin_session.token()
    patient, provider = UserKeys.generate(), UserKeys.generate()
    patient_account = client.register(patient, name="Pat Patient", role="patient")
    provider_account = client.register(provider, name="Dr Who", role="provider")
    assert provider_account["provider_status"] == "unverified"

    session = client.login(patient)
    me = client.whoami(session.token())
    assert me["account_id"] == patient_account["account_id"]
    assert me["encryption_key"] == patient.public().encryption_key
    assert set(session.tokens) >= {"identity", "consent"}
    looked_up = client.account_by_address(session.token(), provider.address)
    assert looked_up["encryption_key"] == provider.public().encryption_key

    provider_id = provider_account["account_id"]
    registry = served.runtime.registry
    assert not registry.is_verified(provider.address)
    verified = client.verify_provider(admin_token, provider_id, LICENCE)
    assert verified["provider_status"] == "verified"
    assert registry.is_verified(provider.address)
    assert (
        client.suspend_provider(admin_token, provider_id, "licence_expired")["provider_status"]
        == "suspended"
    )
    assert not registry.is_verified(provider.address)
    client.reinstate_provider(admin_token, provider_id)
    assert registry.is_verified(provider.address)

    provider_events = served.bus_events(provider_id, lambda seen: len(seen) >= 4)
    assert [e.type for e in provider_events] == [
        "ehr.identity.account_registered.v1",
        "ehr.identity.provider_verified.v1",
        "ehr.identity.provider_suspended.v1",
        "ehr.identity.provider_reinstated.v1",
    ]
    registered = events.payload(provider_events[0], identity_pb2.AccountRegistered)
    assert registered.role == vocabulary_pb2.ROLE_PROVIDER
    assert registered.registered_by == ""  # self-service
    proof = events.payload(provider_events[1], identity_pb2.ProviderVerified)
    assert proof.licence_sha256.hex() == LICENCE[2:]
    assert proof.receipt.contract_address == registry.contract.address
    assert proof.receipt.transaction_hash.startswith("0x")
    assert provider_events[1].actor.id == served.admin_session.account_id
    suspended = events.payload(provider_events[2], identity_pb2.ProviderSuspended)
    assert suspended.reason_code == "licence_expired"
    reinstated = events.payload(provider_events[3], identity_pb2.ProviderReinstated)
    assert reinstated.account_id == provider_id
    assert reinstated.provider_address == provider.address
    assert reinstated.licence_sha256.hex() == LICENCE[2:]
    assert reinstated.receipt.contract_address == registry.contract.address
    assert reinstated.receipt.transaction_hash not in {
        proof.receipt.transaction_hash,
        suspended.receipt.transaction_hash,
    }
    assert provider_events[3].actor.id == served.admin_session.account_id

    patient_events = served.bus_events(patient_account["account_id"], lambda seen: len(seen) >= 2)
    # two topics (accounts, sessions): no order between them
    by_type = {e.type: e for e in patient_events}
    assert set(by_type) == {
        "ehr.identity.account_registered.v1",
        "ehr.identity.login_succeeded.v1",
    }
    login = events.payload(by_type["ehr.identity.login_succeeded.v1"], identity_pb2.LoginSucceeded)
    assert login.session_id == session.session_id


def test_signing_key_rotation_keeps_old_tokens_valid(served: Served) -> None:
    client = served.client
    user = UserKeys.generate()
    client.register(user, name="Rotating", role="patient")
    before = client.login(user)
    old_kid = served.runtime.keys.active_kid
    rotated = client.rotate_signing_key(served.admin_session.token())
    assert rotated["active_kid"] != old_kid and old_kid in rotated["kids"]
    assert {k["kid"] for k in client.jwks()["keys"]} >= {old_kid, rotated["active_kid"]}
    after = client.login(user)
    assert client.whoami(before.token())["account_id"] == client.whoami(after.token())["account_id"]


def test_only_admin_registers_auditors(served: Served) -> None:
    client = served.client
    auditor = UserKeys.generate()
    with pytest.raises(IdentityClientError) as refused:
        client.register(auditor, name="Aud", role="auditor")
    assert refused.value.status == 403
    created = client.register(
        auditor, name="Aud", role="auditor", admin_token=served.admin_session.token()
    )
    assert created["role"] == "auditor"
    assert client.login(auditor).role == "auditor"

    # The event shows who registered the auditor, in the payload and as the actor.
    admin_id = served.admin_session.account_id
    seen = served.bus_events(
        created["account_id"],
        lambda s: any(e.type == "ehr.identity.account_registered.v1" for e in s),
    )
    envelope = next(e for e in seen if e.type == "ehr.identity.account_registered.v1")
    registered = events.payload(envelope, identity_pb2.AccountRegistered)
    assert registered.role == vocabulary_pb2.ROLE_AUDITOR
    assert registered.registered_by == admin_id
    assert envelope.actor.id == admin_id
    assert envelope.actor.role == vocabulary_pb2.ROLE_ADMINISTRATOR


def test_an_admin_registers_a_service_account_that_logs_in_by_signed_challenge(
    served: Served,
) -> None:
    client = served.client
    service = UserKeys.generate()
    created = client.register(
        service, name="record-store", role="service", admin_token=served.admin_session.token()
    )
    assert created["role"] == "service"
    session = client.login(service)
    assert session.role == "service"
    assert client.whoami(session.token("identity"))["role"] == "service"
    claims = jwt.get_unverified_claims(session.token("consent"))
    assert (claims["role"], claims["aud"], claims["sub"]) == (
        "service",
        "consent",
        created["account_id"],
    )
    seen = served.bus_events(
        created["account_id"],
        lambda s: any(e.type == "ehr.identity.account_registered.v1" for e in s),
    )
    envelope = next(e for e in seen if e.type == "ehr.identity.account_registered.v1")
    registered = events.payload(envelope, identity_pb2.AccountRegistered)
    assert registered.role == vocabulary_pb2.ROLE_SERVICE
    assert registered.registered_by == served.admin_session.account_id


def test_the_bootstrap_admin_registered_itself(served: Served) -> None:
    admin_id = served.admin_session.account_id
    seen = served.bus_events(
        admin_id, lambda s: any(e.type == "ehr.identity.account_registered.v1" for e in s)
    )
    envelope = next(e for e in seen if e.type == "ehr.identity.account_registered.v1")
    registered = events.payload(envelope, identity_pb2.AccountRegistered)
    assert registered.role == vocabulary_pb2.ROLE_ADMINISTRATOR
    assert registered.registered_by == ""
    assert envelope.actor.id == admin_id
