"""ConsentRegistry rules, each checked on the in-process EVM and on the Geth network.

Messages are signed on the client side with eth-account (``eip712.py``), as the
client SDK does; a different funded account relays them and pays the gas.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import pytest
from contracts.eip712 import (
    ALL_CATEGORIES,
    EMERGENCY,
    IMAGING,
    LABS,
    MENTAL_HEALTH,
    NOTES,
    RESEARCH,
    TREATMENT,
    GrantMessage,
    RevokeMessage,
    sign,
    signable,
)
from contracts.reverts import expect_revert
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_keys.constants import SECPK1_N
from eth_utils.address import to_checksum_address

from services.consent.domain.model import MAX_GRANT_HORIZON_SECONDS
from services.platform.chain.port import (
    Artifact,
    Chain,
    DeployedContract,
    TransactionReverted,
)

ZERO_ADDRESS = "0x" + "00" * 20
HOUR = 3600


def chain_time(chain: Chain, registry: DeployedContract, account: str) -> int:
    """The block time the contract sees in a call, read from its own error report
    (a grant that has already expired reports ``nowTime``)."""
    with pytest.raises(TransactionReverted) as caught:
        chain.call(
            registry, "grant", account, account, LABS, TREATMENT, 0, 0, 0, b"", sender=account
        )
    assert caught.value.error_name == "ConsentRegistry__InvalidExpiry"
    return int(caught.value.error_args["nowTime"])


class Patient:
    """A patient's key plus what it needs to sign for one registry."""

    def __init__(self, chain: Chain, registry: DeployedContract, account: LocalAccount) -> None:
        self.chain = chain
        self.registry = registry
        self.account = account

    @property
    def address(self) -> str:
        return self.account.address

    def nonce(self) -> int:
        return int(self.chain.call(self.registry, "nonces", self.address))

    def now(self) -> int:
        return chain_time(self.chain, self.registry, self.address)

    def grant_message(
        self,
        grantee: str,
        categories: int = LABS | IMAGING,
        purpose: int = TREATMENT,
        expires_in: int = HOUR,
    ) -> GrantMessage:
        now = self.now()
        return GrantMessage(
            patient=self.address,
            grantee=grantee,
            categories=categories,
            purpose=purpose,
            expiresAt=now + expires_in,
            nonce=self.nonce(),
            deadline=now + HOUR,
        )

    def revoke_message(
        self, grantee: str, categories: int = LABS | IMAGING, purpose: int = TREATMENT
    ) -> RevokeMessage:
        return RevokeMessage(
            patient=self.address,
            grantee=grantee,
            categories=categories,
            purpose=purpose,
            nonce=self.nonce(),
            deadline=self.now() + HOUR,
        )

    def sign(
        self,
        message: GrantMessage | RevokeMessage,
        signer: LocalAccount | None = None,
        chain_id: int | None = None,
        verifying_contract: str | None = None,
    ) -> bytes:
        return bytes(
            sign(
                signer or self.account,
                message,
                chain_id=self.chain.chain_id if chain_id is None else chain_id,
                verifying_contract=verifying_contract or self.registry.address,
            )
        )


@pytest.fixture
def patient(chain: Chain, consent_registry: DeployedContract) -> Patient:
    """A patient key: it signs but never sends a transaction (it holds no ether)."""
    return Patient(chain, consent_registry, Account.create())


@pytest.fixture
def grantee() -> LocalAccount:
    """The reader a patient grants access to (it never sends a transaction here)."""
    account: LocalAccount = Account.create()
    return account


@pytest.fixture
def relayer(outsider: LocalAccount) -> LocalAccount:
    """The consent service: submits the patient's signed messages and pays gas
    (an account holding no role: anyone may relay)."""
    return outsider


def _submit_grant(
    chain: Chain,
    registry: DeployedContract,
    relayer: LocalAccount,
    message: GrantMessage,
    signature: bytes,
) -> Callable[[], object]:
    return lambda: chain.transact(registry, "grant", *message.args(), signature, sender=relayer)


def _submit_revoke(
    chain: Chain,
    registry: DeployedContract,
    relayer: LocalAccount,
    message: RevokeMessage,
    signature: bytes,
) -> Callable[[], object]:
    return lambda: chain.transact(registry, "revoke", *message.args(), signature, sender=relayer)


def _authorised(
    chain: Chain,
    registry: DeployedContract,
    patient: str,
    grantee: str,
    category: int,
    purpose: int,
) -> bool:
    return bool(chain.call(registry, "isAuthorised", patient, grantee, category, purpose))


def test_domain_separator_matches_the_client_encoding(
    chain: Chain, consent_registry: DeployedContract, patient: Patient, grantee: LocalAccount
) -> None:
    encoded = signable(
        patient.grant_message(grantee.address),
        chain_id=chain.chain_id,
        verifying_contract=consent_registry.address,
    )
    assert chain.call(consent_registry, "domainSeparator") == encoded.header


def test_patient_signed_grant_authorises_exactly_its_scope(
    chain: Chain,
    consent_registry: DeployedContract,
    patient: Patient,
    grantee: LocalAccount,
    relayer: LocalAccount,
) -> None:
    message = patient.grant_message(grantee.address, categories=LABS | IMAGING)
    assert message.nonce == 0
    assert not _authorised(
        chain, consent_registry, patient.address, grantee.address, LABS, TREATMENT
    )

    receipt = chain.transact(
        consent_registry, "grant", *message.args(), patient.sign(message), sender=relayer
    )

    [event] = receipt.events
    assert event.name == "ConsentGranted"
    assert dict(event.args) == {
        "patient": patient.address,
        "grantee": grantee.address,
        "purpose": TREATMENT,
        "categories": LABS | IMAGING,
        "expiresAt": message.expiresAt,
        "nonce": 0,
    }
    assert patient.nonce() == 1
    assert tuple(
        chain.call(consent_registry, "getGrant", patient.address, grantee.address, TREATMENT)
    ) == (LABS | IMAGING, message.expiresAt)

    def authorised(category: int, purpose: int = TREATMENT, reader: str = grantee.address) -> bool:
        return _authorised(chain, consent_registry, patient.address, reader, category, purpose)

    assert authorised(LABS) and authorised(IMAGING) and authorised(LABS | IMAGING)
    assert not authorised(MENTAL_HEALTH)
    assert not authorised(LABS | NOTES)  # every requested bit must be granted
    assert not authorised(0)
    assert not authorised(LABS, purpose=RESEARCH)
    assert not authorised(LABS, reader=relayer.address)  # relaying grants nothing


def test_a_new_grant_replaces_the_previous_one_for_that_purpose(
    chain: Chain,
    consent_registry: DeployedContract,
    patient: Patient,
    grantee: LocalAccount,
    relayer: LocalAccount,
) -> None:
    for categories in (LABS | IMAGING, NOTES):
        message = patient.grant_message(grantee.address, categories=categories)
        chain.transact(
            consent_registry, "grant", *message.args(), patient.sign(message), sender=relayer
        )
    assert _authorised(chain, consent_registry, patient.address, grantee.address, NOTES, TREATMENT)
    assert not _authorised(
        chain, consent_registry, patient.address, grantee.address, LABS, TREATMENT
    )
    assert patient.nonce() == 2


def test_replayed_and_out_of_order_nonces_are_rejected(
    chain: Chain,
    consent_registry: DeployedContract,
    patient: Patient,
    grantee: LocalAccount,
    relayer: LocalAccount,
) -> None:
    message = patient.grant_message(grantee.address)
    signature = patient.sign(message)
    _submit_grant(chain, consent_registry, relayer, message, signature)()
    expect_revert(
        "ConsentRegistry__InvalidNonce",
        _submit_grant(chain, consent_registry, relayer, message, signature),
        patient=patient.address,
        expected=1,
        given=0,
    )
    ahead = replace(patient.grant_message(grantee.address), nonce=5)
    expect_revert(
        "ConsentRegistry__InvalidNonce",
        _submit_grant(chain, consent_registry, relayer, ahead, patient.sign(ahead)),
        expected=1,
        given=5,
    )
    # A revocation signed once cannot be replayed either.
    revoke = patient.revoke_message(grantee.address)
    revoke_signature = patient.sign(revoke)
    _submit_revoke(chain, consent_registry, relayer, revoke, revoke_signature)()
    expect_revert(
        "ConsentRegistry__InvalidNonce",
        _submit_revoke(chain, consent_registry, relayer, revoke, revoke_signature),
        expected=2,
        given=1,
    )
    assert patient.nonce() == 2


def test_expired_messages_are_rejected(
    chain: Chain,
    consent_registry: DeployedContract,
    patient: Patient,
    grantee: LocalAccount,
    relayer: LocalAccount,
) -> None:
    now = patient.now()
    stale = replace(patient.grant_message(grantee.address), deadline=now - 1)
    expect_revert(
        "ConsentRegistry__SignatureExpired",
        _submit_grant(chain, consent_registry, relayer, stale, patient.sign(stale)),
        deadline=now - 1,
    )
    stale_revoke = replace(patient.revoke_message(grantee.address), deadline=now - 1)
    expect_revert(
        "ConsentRegistry__SignatureExpired",
        _submit_revoke(chain, consent_registry, relayer, stale_revoke, patient.sign(stale_revoke)),
        deadline=now - 1,
    )
    assert patient.nonce() == 0


@pytest.mark.parametrize("forgery", ["other signer", "wrong chain", "other contract", "tampered"])
def test_signatures_other_than_the_patients_are_rejected(
    chain: Chain,
    consent_registry: DeployedContract,
    consent_registry_artifact: Artifact,
    patient: Patient,
    grantee: LocalAccount,
    relayer: LocalAccount,
    forgery: str,
) -> None:
    message = patient.grant_message(grantee.address, categories=LABS)
    submitted = message
    if forgery == "other signer":
        signature = patient.sign(message, signer=grantee)
    elif forgery == "wrong chain":
        signature = patient.sign(message, chain_id=chain.chain_id + 1)
    elif forgery == "other contract":
        twin = chain.deploy(consent_registry_artifact, relayer)
        signature = patient.sign(message, verifying_contract=twin.address)
    else:  # signed for labs, submitted for every category
        signature = patient.sign(message)
        submitted = replace(message, categories=ALL_CATEGORIES)

    error = expect_revert(
        "ConsentRegistry__WrongSigner",
        _submit_grant(chain, consent_registry, relayer, submitted, signature),
        patient=patient.address,
    )
    recovered = to_checksum_address(error.error_args["recovered"])
    assert recovered != patient.address
    if forgery == "other signer":
        assert recovered == grantee.address
    assert patient.nonce() == 0
    assert not _authorised(
        chain, consent_registry, patient.address, grantee.address, LABS, TREATMENT
    )


def test_revocation_needs_the_patients_signature_too(
    chain: Chain,
    consent_registry: DeployedContract,
    patient: Patient,
    grantee: LocalAccount,
    relayer: LocalAccount,
) -> None:
    message = patient.grant_message(grantee.address)
    _submit_grant(chain, consent_registry, relayer, message, patient.sign(message))()
    revoke = patient.revoke_message(grantee.address)
    expect_revert(
        "ConsentRegistry__WrongSigner",
        _submit_revoke(
            chain, consent_registry, relayer, revoke, patient.sign(revoke, signer=grantee)
        ),
        recovered=grantee.address,
        patient=patient.address,
    )
    assert _authorised(chain, consent_registry, patient.address, grantee.address, LABS, TREATMENT)


@pytest.mark.parametrize("kind", ["short", "high s", "bad v"])
def test_malformed_signatures_are_rejected(
    chain: Chain,
    consent_registry: DeployedContract,
    patient: Patient,
    grantee: LocalAccount,
    relayer: LocalAccount,
    kind: str,
) -> None:
    message = patient.grant_message(grantee.address)
    good = patient.sign(message)
    r, s, v = good[:32], int.from_bytes(good[32:64], "big"), good[64]
    if kind == "short":
        bad = good[:64]
    elif kind == "high s":  # the same signature in its malleable twin form
        bad = r + (SECPK1_N - s).to_bytes(32, "big") + bytes([55 - v])
    else:
        bad = r + good[32:64] + bytes([v - 27])
    expect_revert(
        "ConsentRegistry__MalformedSignature",
        _submit_grant(chain, consent_registry, relayer, message, bad),
    )
    assert patient.nonce() == 0


def test_revocation_removes_access_for_the_revoked_categories(
    chain: Chain,
    consent_registry: DeployedContract,
    patient: Patient,
    grantee: LocalAccount,
    relayer: LocalAccount,
) -> None:
    message = patient.grant_message(grantee.address, categories=LABS | IMAGING | NOTES)
    _submit_grant(chain, consent_registry, relayer, message, patient.sign(message))()

    def authorised(category: int) -> bool:
        return _authorised(
            chain, consent_registry, patient.address, grantee.address, category, TREATMENT
        )

    partial = patient.revoke_message(grantee.address, categories=LABS)
    receipt = chain.transact(
        consent_registry, "revoke", *partial.args(), patient.sign(partial), sender=relayer
    )
    [event] = receipt.events
    assert event.name == "ConsentRevoked"
    assert dict(event.args) == {
        "patient": patient.address,
        "grantee": grantee.address,
        "purpose": TREATMENT,
        "categories": LABS,
        "remaining": IMAGING | NOTES,
        "nonce": 1,
    }
    assert not authorised(LABS)
    assert authorised(IMAGING) and authorised(NOTES)

    rest = patient.revoke_message(grantee.address, categories=ALL_CATEGORIES)
    receipt = chain.transact(
        consent_registry, "revoke", *rest.args(), patient.sign(rest), sender=relayer
    )
    assert receipt.events[0].args["remaining"] == 0
    assert not authorised(IMAGING) and not authorised(NOTES)
    assert tuple(
        chain.call(consent_registry, "getGrant", patient.address, grantee.address, TREATMENT)
    ) == (0, 0)
    assert patient.nonce() == 3


def test_an_expired_grant_stops_authorising(
    chain: Chain,
    consent_registry: DeployedContract,
    patient: Patient,
    grantee: LocalAccount,
    relayer: LocalAccount,
) -> None:
    message = patient.grant_message(
        grantee.address, categories=LABS, purpose=EMERGENCY, expires_in=10
    )
    _submit_grant(chain, consent_registry, relayer, message, patient.sign(message))()

    def authorised() -> bool:
        return _authorised(
            chain, consent_registry, patient.address, grantee.address, LABS, EMERGENCY
        )

    assert authorised()  # just granted; the expiry is seconds away
    deadline = time.monotonic() + 60
    while authorised():
        assert time.monotonic() < deadline, "chain time did not pass the grant's expiry"
        chain.fund(relayer.address, 1)  # a new block moves chain time on either adapter
    # Refused only once the grant expired (chain time read after the refusal only grows).
    assert patient.now() >= message.expiresAt
    assert not authorised()
    # The grant is still stored: it is its expiry, not a revocation, that refuses.
    assert tuple(
        chain.call(consent_registry, "getGrant", patient.address, grantee.address, EMERGENCY)
    ) == (LABS, message.expiresAt)


def test_scope_and_expiry_are_validated(
    chain: Chain,
    consent_registry: DeployedContract,
    patient: Patient,
    grantee: LocalAccount,
    relayer: LocalAccount,
) -> None:
    base = patient.grant_message(grantee.address)
    cases: list[tuple[GrantMessage, str, dict[str, object]]] = [
        (replace(base, categories=0), "ConsentRegistry__InvalidCategories", {"categories": 0}),
        (replace(base, categories=32), "ConsentRegistry__InvalidCategories", {"categories": 32}),
        (replace(base, purpose=0), "ConsentRegistry__InvalidPurpose", {"purpose": 0}),
        (replace(base, purpose=6), "ConsentRegistry__InvalidPurpose", {"purpose": 6}),
        (replace(base, grantee=ZERO_ADDRESS), "ConsentRegistry__ZeroAddress", {}),
        (
            replace(base, expiresAt=base.expiresAt - 2 * HOUR),
            "ConsentRegistry__InvalidExpiry",
            {"expiresAt": base.expiresAt - 2 * HOUR},
        ),
    ]
    for message, error_name, args in cases:
        # Correctly signed by the patient, yet outside what the contract accepts.
        expect_revert(
            error_name,
            _submit_grant(chain, consent_registry, relayer, message, patient.sign(message)),
            **args,
        )
    bad_revoke = replace(patient.revoke_message(grantee.address), purpose=9)
    expect_revert(
        "ConsentRegistry__InvalidPurpose",
        _submit_revoke(chain, consent_registry, relayer, bad_revoke, patient.sign(bad_revoke)),
        purpose=9,
    )
    assert patient.nonce() == 0


def test_a_mined_failed_grant_changes_nothing(
    chain: Chain,
    consent_registry: DeployedContract,
    patient: Patient,
    grantee: LocalAccount,
    relayer: LocalAccount,
) -> None:
    message = patient.grant_message(grantee.address)
    with pytest.raises(TransactionReverted):
        chain.transact(
            consent_registry,
            "grant",
            *message.args(),
            patient.sign(message, signer=grantee),
            sender=relayer,
            gas=300_000,
        )
    assert patient.nonce() == 0
    assert chain.events(consent_registry, "ConsentGranted") == []


def test_the_grant_horizon_is_the_consent_services(
    chain: Chain, consent_registry: DeployedContract
) -> None:
    assert chain.call(consent_registry, "MAX_GRANT_HORIZON") == MAX_GRANT_HORIZON_SECONDS


@pytest.mark.parametrize(
    "beyond", [HOUR, 2**63 - 1, 2**64 - 1], ids=["horizon+1h", "2^63-1", "2^64-1"]
)
def test_a_grant_beyond_the_horizon_is_refused(
    chain: Chain,
    consent_registry: DeployedContract,
    patient: Patient,
    grantee: LocalAccount,
    relayer: LocalAccount,
    beyond: int,
) -> None:
    """Nothing on chain can carry an expiry the services' projection cannot hold."""
    now = patient.now()
    expires = min(now + MAX_GRANT_HORIZON_SECONDS + beyond, 2**64 - 1)
    message = replace(patient.grant_message(grantee.address), expiresAt=expires)
    error = expect_revert(
        "ConsentRegistry__ExpiryTooFar",
        _submit_grant(chain, consent_registry, relayer, message, patient.sign(message)),
        expiresAt=expires,
    )
    assert error.error_args["latest"] >= now + MAX_GRANT_HORIZON_SECONDS
    assert patient.nonce() == 0
    assert chain.events(consent_registry, "ConsentGranted") == []


def test_the_horizon_is_exact_to_the_second(
    chain: Chain,
    consent_registry: DeployedContract,
    patient: Patient,
    grantee: LocalAccount,
    relayer: LocalAccount,
) -> None:
    """Within one block time ``t``: an expiry of ``t + H`` passes, ``t + H + 1`` is
    refused (checked with calls, which run on the latest block without mining); then a
    transaction just inside the horizon records its grant."""
    for _attempt in range(10):
        t = patient.now()
        at_horizon = replace(
            patient.grant_message(grantee.address), expiresAt=t + MAX_GRANT_HORIZON_SECONDS
        )
        past_horizon = replace(at_horizon, expiresAt=at_horizon.expiresAt + 1)
        chain.call(
            consent_registry,
            "grant",
            *at_horizon.args(),
            patient.sign(at_horizon),
            sender=relayer.address,
        )
        refused: TransactionReverted | None = None
        try:
            chain.call(
                consent_registry,
                "grant",
                *past_horizon.args(),
                patient.sign(past_horizon),
                sender=relayer.address,
            )
        except TransactionReverted as error:
            refused = error
        if patient.now() == t:  # the time did not move in between: all three saw time t
            break
        # a call may run in a later second than ``t`` (the in-process chain's calls run at
        # the current second): then ``t + H + 1`` is rightly inside; try again
    else:
        pytest.fail("the chain's time moved during every attempt")
    assert refused is not None, "an expiry one second past the horizon was accepted"
    assert refused.error_name == "ConsentRegistry__ExpiryTooFar"
    assert refused.error_args["latest"] == t + MAX_GRANT_HORIZON_SECONDS

    inside = replace(
        patient.grant_message(grantee.address),
        expiresAt=patient.now() + MAX_GRANT_HORIZON_SECONDS - 60,
    )
    _submit_grant(chain, consent_registry, relayer, inside, patient.sign(inside))()
    assert tuple(
        chain.call(consent_registry, "getGrant", patient.address, grantee.address, TREATMENT)
    ) == (inside.categories, inside.expiresAt)
    assert patient.nonce() == 1
