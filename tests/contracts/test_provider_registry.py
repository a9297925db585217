"""ProviderRegistry rules, each checked on the in-process EVM and on the Geth network."""

from __future__ import annotations

import os
from functools import partial

import pytest
from contracts.reverts import expect_revert
from contracts.roles import DEFAULT_ADMIN_ROLE, REGISTRAR_ROLE, UNAUTHORISED
from eth_account import Account
from eth_account.signers.local import LocalAccount

from services.platform.chain.port import (
    Artifact,
    Chain,
    DeployedContract,
    TransactionReverted,
)

ACTIVE, SUSPENDED = 1, 2
ZERO_ADDRESS = "0x" + "00" * 20


def _hash() -> bytes:
    return os.urandom(32)


def _register(
    chain: Chain, registry: DeployedContract, registrar: LocalAccount, provider: str
) -> bytes:
    licence = _hash()
    chain.transact(registry, "register", provider, licence, _hash(), sender=registrar)
    return licence


def test_deployer_is_admin_and_registrar_role_is_granted(
    chain: Chain,
    provider_registry: DeployedContract,
    admin: LocalAccount,
    registrar: LocalAccount,
) -> None:
    assert chain.call(provider_registry, "hasRole", DEFAULT_ADMIN_ROLE, admin.address)
    assert chain.call(provider_registry, "hasRole", REGISTRAR_ROLE, registrar.address)
    assert not chain.call(provider_registry, "hasRole", REGISTRAR_ROLE, admin.address)
    assert chain.call(provider_registry, "REGISTRAR_ROLE") == REGISTRAR_ROLE
    granted = chain.events(provider_registry, "RoleGranted", role=REGISTRAR_ROLE)
    assert [e.args["account"] for e in granted] == [registrar.address]


def test_registrar_registers_a_verified_provider(
    chain: Chain,
    provider_registry: DeployedContract,
    registrar: LocalAccount,
    outsider: LocalAccount,
) -> None:
    provider = outsider.address
    assert not chain.call(provider_registry, "isVerified", provider)
    licence, metadata = _hash(), _hash()

    receipt = chain.transact(
        provider_registry, "register", provider, licence, metadata, sender=registrar
    )

    assert chain.call(provider_registry, "isVerified", provider)
    entry = chain.call(provider_registry, "getProvider", provider)
    assert entry[0] == licence and entry[1] == metadata and entry[2] == ACTIVE
    assert entry[3] > 0 and entry[4] == entry[3]
    [event] = receipt.events
    assert event.name == "ProviderRegistered"
    assert dict(event.args) == {
        "provider": provider,
        "licenceHash": licence,
        "metadataHash": metadata,
        "by": registrar.address,
    }


def test_suspend_and_reinstate_toggle_verification(
    chain: Chain,
    provider_registry: DeployedContract,
    registrar: LocalAccount,
    outsider: LocalAccount,
) -> None:
    provider = outsider.address
    licence = _register(chain, provider_registry, registrar, provider)

    suspended = chain.transact(provider_registry, "suspend", provider, sender=registrar)
    assert not chain.call(provider_registry, "isVerified", provider)
    assert chain.call(provider_registry, "getProvider", provider)[2] == SUSPENDED
    assert [(e.name, dict(e.args)) for e in suspended.events] == [
        ("ProviderSuspended", {"provider": provider, "by": registrar.address})
    ]

    reinstated = chain.transact(provider_registry, "reinstate", provider, sender=registrar)
    assert chain.call(provider_registry, "isVerified", provider)
    entry = chain.call(provider_registry, "getProvider", provider)
    assert entry[0] == licence and entry[2] == ACTIVE
    assert [(e.name, dict(e.args)) for e in reinstated.events] == [
        ("ProviderReinstated", {"provider": provider, "by": registrar.address})
    ]


@pytest.mark.parametrize("fn", ["register", "suspend", "reinstate"])
def test_only_a_registrar_changes_providers(
    chain: Chain,
    provider_registry: DeployedContract,
    admin: LocalAccount,
    registrar: LocalAccount,
    outsider: LocalAccount,
    fn: str,
) -> None:
    provider = Account.create().address
    _register(chain, provider_registry, registrar, provider)
    args: tuple[object, ...] = (provider, _hash(), _hash()) if fn == "register" else (provider,)
    # Neither an outsider nor the admin (who lacks REGISTRAR_ROLE) may act.
    for caller in (outsider, admin):
        expect_revert(
            UNAUTHORISED,
            partial(chain.transact, provider_registry, fn, *args, sender=caller),
            account=caller.address,
            neededRole=REGISTRAR_ROLE,
        )
    assert chain.call(provider_registry, "isVerified", provider)


def test_registration_input_is_validated(
    chain: Chain,
    provider_registry: DeployedContract,
    registrar: LocalAccount,
    outsider: LocalAccount,
) -> None:
    provider = outsider.address
    expect_revert(
        "ProviderRegistry__ZeroAddress",
        lambda: chain.transact(
            provider_registry, "register", ZERO_ADDRESS, _hash(), _hash(), sender=registrar
        ),
    )
    expect_revert(
        "ProviderRegistry__EmptyLicenceHash",
        lambda: chain.transact(
            provider_registry, "register", provider, b"\x00" * 32, _hash(), sender=registrar
        ),
    )
    licence = _register(chain, provider_registry, registrar, provider)
    expect_revert(
        "ProviderRegistry__AlreadyRegistered",
        lambda: chain.transact(
            provider_registry, "register", provider, _hash(), _hash(), sender=registrar
        ),
        provider=provider,
    )
    assert chain.call(provider_registry, "getProvider", provider)[0] == licence


def test_status_changes_follow_the_lifecycle(
    chain: Chain,
    provider_registry: DeployedContract,
    registrar: LocalAccount,
    outsider: LocalAccount,
) -> None:
    provider = outsider.address
    for fn in ("suspend", "reinstate"):
        expect_revert(
            "ProviderRegistry__NotRegistered",
            partial(chain.transact, provider_registry, fn, provider, sender=registrar),
            provider=provider,
        )
    _register(chain, provider_registry, registrar, provider)
    expect_revert(
        "ProviderRegistry__NotSuspended",
        lambda: chain.transact(provider_registry, "reinstate", provider, sender=registrar),
        provider=provider,
    )
    chain.transact(provider_registry, "suspend", provider, sender=registrar)
    expect_revert(
        "ProviderRegistry__AlreadySuspended",
        lambda: chain.transact(provider_registry, "suspend", provider, sender=registrar),
        provider=provider,
    )
    # A suspended provider cannot be registered again either.
    expect_revert(
        "ProviderRegistry__AlreadyRegistered",
        lambda: chain.transact(
            provider_registry, "register", provider, _hash(), _hash(), sender=registrar
        ),
        provider=provider,
    )
    assert not chain.call(provider_registry, "isVerified", provider)


def test_admin_grants_and_revokes_roles(
    chain: Chain,
    provider_registry: DeployedContract,
    admin: LocalAccount,
    registrar: LocalAccount,
    outsider: LocalAccount,
) -> None:
    revoked = chain.transact(
        provider_registry, "revokeRole", REGISTRAR_ROLE, registrar.address, sender=admin
    )
    assert [(e.name, dict(e.args)) for e in revoked.events] == [
        (
            "RoleRevoked",
            {"role": REGISTRAR_ROLE, "account": registrar.address, "sender": admin.address},
        )
    ]
    assert not chain.call(provider_registry, "hasRole", REGISTRAR_ROLE, registrar.address)
    expect_revert(
        UNAUTHORISED,
        lambda: chain.transact(
            provider_registry, "register", outsider.address, _hash(), _hash(), sender=registrar
        ),
        account=registrar.address,
        neededRole=REGISTRAR_ROLE,
    )
    # Revoking a role the account no longer holds changes nothing and emits nothing.
    again = chain.transact(
        provider_registry, "revokeRole", REGISTRAR_ROLE, registrar.address, sender=admin
    )
    assert again.events == []
    expect_revert(
        "ProviderRegistry__ZeroAddress",
        lambda: chain.transact(
            provider_registry, "grantRole", REGISTRAR_ROLE, ZERO_ADDRESS, sender=admin
        ),
    )
    assert chain.events(provider_registry, "RoleGranted", account=ZERO_ADDRESS) == []


def test_a_mined_failed_transaction_changes_nothing(
    chain: Chain,
    provider_registry: DeployedContract,
    outsider: LocalAccount,
) -> None:
    """With explicit gas there is no estimate: the revert happens in a mined block."""
    provider = Account.create().address
    with pytest.raises(TransactionReverted) as caught:
        chain.transact(
            provider_registry, "register", provider, _hash(), _hash(), sender=outsider, gas=200_000
        )
    assert caught.value.tx_hash is not None
    assert not chain.call(provider_registry, "isVerified", provider)
    assert chain.events(provider_registry, "ProviderRegistered") == []


def test_deployment_refuses_a_zero_admin(
    chain: Chain, provider_registry_artifact: Artifact, admin: LocalAccount
) -> None:
    expect_revert(
        "ProviderRegistry__ZeroAddress",
        lambda: chain.deploy(provider_registry_artifact, admin, ZERO_ADDRESS),
    )
