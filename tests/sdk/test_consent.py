"""EIP-712 consent messages of the SDK: recovered locally and accepted by the real
ConsentRegistry on the in-process chain (through the chain port)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from ehr_client.consent import (
    ALL_CATEGORIES,
    IMAGING,
    LABS,
    RESEARCH,
    TREATMENT,
    ConsentMessageError,
    build_grant,
    build_revoke,
    is_signed_by_patient,
    recover_signer,
    sign_message,
)
from eth_account import Account
from eth_account.signers.local import LocalAccount

from services.platform.chain.artifacts import load_artifact
from services.platform.chain.inprocess import InProcessChain
from services.platform.chain.port import DeployedContract, TransactionReverted

FAR = int(time.time()) + 10 * 365 * 86400


@pytest.fixture(scope="module")
def chain() -> Iterator[InProcessChain]:
    with InProcessChain() as adapter:
        yield adapter


@pytest.fixture
def registry(chain: InProcessChain) -> DeployedContract:
    return chain.deploy(load_artifact("ConsentRegistry"), chain.new_account())


@pytest.fixture
def patient() -> LocalAccount:
    account: LocalAccount = Account.create()
    return account


def test_grant_signed_by_sdk_is_accepted_on_chain(
    chain: InProcessChain, registry: DeployedContract, patient: LocalAccount
) -> None:
    grantee = Account.create().address
    relay = chain.new_account()
    message = build_grant(
        patient.address.lower(),
        grantee,
        categories=LABS | IMAGING,
        purpose=TREATMENT,
        expires_at=FAR,
        nonce=int(chain.call(registry, "nonces", patient.address)),
        deadline=FAR,
    )
    signature = sign_message(
        patient, message, chain_id=chain.chain_id, verifying_contract=registry.address
    )
    assert len(signature) == 65
    assert (
        recover_signer(
            message, signature, chain_id=chain.chain_id, verifying_contract=registry.address
        )
        == patient.address
    )
    chain.transact(registry, "grant", *message.args(), signature, sender=relay)
    assert chain.call(registry, "isAuthorised", patient.address, grantee, LABS, TREATMENT)
    assert not chain.call(registry, "isAuthorised", patient.address, grantee, 4, TREATMENT)

    revoke = build_revoke(
        patient.address,
        grantee,
        categories=LABS,
        purpose=TREATMENT,
        nonce=int(chain.call(registry, "nonces", patient.address)),
        deadline=FAR,
    )
    rsig = sign_message(
        patient.key, revoke, chain_id=chain.chain_id, verifying_contract=registry.address
    )
    chain.transact(registry, "revoke", *revoke.args(), rsig, sender=relay)
    assert not chain.call(registry, "isAuthorised", patient.address, grantee, LABS, TREATMENT)
    assert chain.call(registry, "isAuthorised", patient.address, grantee, IMAGING, TREATMENT)


def test_signature_for_another_contract_is_refused(
    chain: InProcessChain, registry: DeployedContract, patient: LocalAccount
) -> None:
    other = Account.create().address
    message = build_grant(
        patient.address,
        Account.create().address,
        categories=ALL_CATEGORIES,
        purpose=RESEARCH,
        expires_at=FAR,
        nonce=0,
        deadline=FAR,
    )
    wrong = sign_message(patient, message, chain_id=chain.chain_id, verifying_contract=other)
    assert not is_signed_by_patient(
        message, wrong, chain_id=chain.chain_id, verifying_contract=registry.address
    )
    with pytest.raises(TransactionReverted) as caught:
        chain.transact(registry, "grant", *message.args(), wrong, sender=chain.new_account())
    assert caught.value.error_name == "ConsentRegistry__WrongSigner"


def test_other_key_and_tampered_message_do_not_recover_to_patient(
    patient: LocalAccount,
) -> None:
    contract = Account.create().address
    message = build_grant(
        patient.address,
        Account.create().address,
        categories=LABS,
        purpose=TREATMENT,
        expires_at=FAR,
        nonce=3,
        deadline=FAR,
    )
    good = sign_message(patient, message, chain_id=1337, verifying_contract=contract)
    assert is_signed_by_patient(message, good, chain_id=1337, verifying_contract=contract)
    assert not is_signed_by_patient(message, good, chain_id=1338, verifying_contract=contract)
    tampered = build_grant(
        patient.address,
        message.grantee,
        categories=ALL_CATEGORIES,
        purpose=TREATMENT,
        expires_at=FAR,
        nonce=3,
        deadline=FAR,
    )
    assert not is_signed_by_patient(tampered, good, chain_id=1337, verifying_contract=contract)
    with pytest.raises(ConsentMessageError):
        sign_message(Account.create(), message, chain_id=1337, verifying_contract=contract)
    with pytest.raises(ConsentMessageError):
        recover_signer(message, good[:64], chain_id=1337, verifying_contract=contract)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"categories": 0},
        {"categories": 0x20},
        {"purpose": 0},
        {"purpose": 6},
        {"nonce": -1},
        {"expires_at": 2**64},
        {"grantee": "0x1234"},
        {"grantee": "0x" + "00" * 20},
    ],
)
def test_build_refuses_what_the_contract_refuses(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {
        "grantee": Account.create().address,
        "categories": LABS,
        "purpose": TREATMENT,
        "expires_at": FAR,
        "nonce": 0,
        "deadline": FAR,
    }
    base.update(kwargs)
    grantee = base.pop("grantee")
    with pytest.raises(ConsentMessageError):
        build_grant(Account.create().address, grantee, **base)  # type: ignore[arg-type]
