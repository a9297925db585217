"""Least privilege on the contracts with roles (OpenZeppelin AccessControl), each
rule checked on ProviderRegistry and AuditAnchor and on both chain adapters.

Who holds what after deployment:

- the deployer (``admin``): DEFAULT_ADMIN_ROLE only, which grants and revokes
  roles and does nothing else; it can be handed over and renounced;
- identity's registrar: REGISTRAR_ROLE on ProviderRegistry only;
- the ledger relay's account: RELAY_ROLE on AuditAnchor only;
- the consent service's relayer: nothing, anywhere (ConsentRegistry has no roles:
  the patient's signature authorises).

A service account can neither grant itself (or anyone) a role nor take the admin
role. When a service deploys its own contract (identity and the relay without a
configured address), it renounces the admin role once it holds its own role.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from contracts.reverts import expect_revert
from contracts.roles import (
    BAD_CONFIRMATION,
    DEFAULT_ADMIN_ROLE,
    REGISTRAR_ROLE,
    RELAY_ROLE,
    UNAUTHORISED,
)
from eth_account import Account
from eth_account.signers.local import LocalAccount

from services.identity.adapters.provider_registry import ensure_provider_registry
from services.ledger_relay.adapters.anchor import AuditAnchorLedger
from services.platform.chain.artifacts import Artifact, load_artifact
from services.platform.chain.port import Chain, ContractRef, DeployedContract, Receipt

ROLE_FUNCTIONS = {"hasRole", "grantRole", "revokeRole", "renounceRole", "getRoleAdmin"}


@dataclass(frozen=True)
class Guarded:
    """A contract with roles: its fixture, its working role, the fixture of the
    account holding that role, and one action that needs the role."""

    contract: str
    role: bytes
    holder: str
    act: Callable[[Chain, ContractRef, LocalAccount], Receipt]


def _register(chain: Chain, registry: ContractRef, sender: LocalAccount) -> Receipt:
    provider = Account.create().address
    return chain.transact(
        registry, "register", provider, os.urandom(32), os.urandom(32), sender=sender
    )


def _anchor(chain: Chain, anchor: ContractRef, sender: LocalAccount) -> Receipt:
    """The first checkpoint (any root, no proof), else the latest one repeated."""
    if chain.call(anchor, "checkpointCount") == 0:
        return chain.transact(anchor, "anchor", 1, os.urandom(32), [], sender=sender)
    size, root = chain.call(anchor, "latestCheckpoint")
    return chain.transact(anchor, "anchor", size, root, [], sender=sender)


GUARDED = [
    Guarded("provider_registry", REGISTRAR_ROLE, "registrar", _register),
    Guarded("audit_anchor", RELAY_ROLE, "relay", _anchor),
]


@pytest.fixture(params=GUARDED, ids=lambda g: g.contract)
def guarded(request: pytest.FixtureRequest) -> tuple[Guarded, DeployedContract, LocalAccount]:
    spec: Guarded = request.param
    return spec, request.getfixturevalue(spec.contract), request.getfixturevalue(spec.holder)


def _holders(
    chain: Chain, contract: ContractRef, accounts: Mapping[str, str]
) -> set[tuple[str, str]]:
    """(account name, role name) for every role any of ``accounts`` holds."""
    roles = {"admin": DEFAULT_ADMIN_ROLE, "registrar": REGISTRAR_ROLE, "relay": RELAY_ROLE}
    return {
        (who, name)
        for who, address in accounts.items()
        for name, role in roles.items()
        if chain.call(contract, "hasRole", role, address)
    }


def test_after_deployment_each_account_holds_only_its_role(
    chain: Chain,
    guarded: tuple[Guarded, DeployedContract, LocalAccount],
    admin: LocalAccount,
    outsider: LocalAccount,
) -> None:
    spec, contract, holder = guarded
    accounts = {"deployer": admin.address, "service": holder.address, "outsider": outsider.address}
    role_name = "registrar" if spec.role == REGISTRAR_ROLE else "relay"
    assert _holders(chain, contract, accounts) == {("deployer", "admin"), ("service", role_name)}
    # Every role is administered by DEFAULT_ADMIN_ROLE; no role administers another.
    for role in (DEFAULT_ADMIN_ROLE, REGISTRAR_ROLE, RELAY_ROLE):
        assert chain.call(contract, "getRoleAdmin", role) == DEFAULT_ADMIN_ROLE
    granted = [(e.args["role"], e.args["account"]) for e in chain.events(contract, "RoleGranted")]
    assert granted == [(DEFAULT_ADMIN_ROLE, admin.address), (spec.role, holder.address)]


def test_a_service_account_cannot_grant_itself_more(
    chain: Chain,
    guarded: tuple[Guarded, DeployedContract, LocalAccount],
    admin: LocalAccount,
    outsider: LocalAccount,
) -> None:
    spec, contract, holder = guarded
    attempts: list[tuple[str, bytes, str]] = [
        ("grantRole", DEFAULT_ADMIN_ROLE, holder.address),  # take the admin role
        ("grantRole", spec.role, outsider.address),  # hand its own role on
        ("grantRole", REGISTRAR_ROLE if spec.role == RELAY_ROLE else RELAY_ROLE, holder.address),
        ("revokeRole", DEFAULT_ADMIN_ROLE, admin.address),  # remove the admin
    ]
    for fn, role, account in attempts:
        expect_revert(
            UNAUTHORISED,
            partial(chain.transact, contract, fn, role, account, sender=holder),
            account=holder.address,
            neededRole=DEFAULT_ADMIN_ROLE,
        )
    # renounceRole only ever removes a role from the caller itself.
    expect_revert(
        BAD_CONFIRMATION,
        lambda: chain.transact(
            contract, "renounceRole", DEFAULT_ADMIN_ROLE, admin.address, sender=holder
        ),
    )
    accounts = {"deployer": admin.address, "service": holder.address, "outsider": outsider.address}
    role_name = "registrar" if spec.role == REGISTRAR_ROLE else "relay"
    assert _holders(chain, contract, accounts) == {("deployer", "admin"), ("service", role_name)}
    # The admin role is no working role: the deployer cannot act in the service's place.
    expect_revert(
        UNAUTHORISED,
        partial(spec.act, chain, contract, admin),
        account=admin.address,
        neededRole=spec.role,
    )


def test_the_admin_role_is_handed_over(
    chain: Chain,
    guarded: tuple[Guarded, DeployedContract, LocalAccount],
    admin: LocalAccount,
    successor: LocalAccount,
    outsider: LocalAccount,
) -> None:
    """Handover in two steps: the admin grants the role to its successor, and the
    successor, by revoking the old admin, shows it controls its key before the old
    admin is gone."""
    spec, contract, holder = guarded
    chain.transact(contract, "grantRole", DEFAULT_ADMIN_ROLE, successor.address, sender=admin)
    revoked = chain.transact(
        contract, "revokeRole", DEFAULT_ADMIN_ROLE, admin.address, sender=successor
    )
    assert [(e.name, dict(e.args)) for e in revoked.events] == [
        (
            "RoleRevoked",
            {"role": DEFAULT_ADMIN_ROLE, "account": admin.address, "sender": successor.address},
        )
    ]
    assert not chain.call(contract, "hasRole", DEFAULT_ADMIN_ROLE, admin.address)
    expect_revert(
        UNAUTHORISED,
        lambda: chain.transact(contract, "grantRole", spec.role, outsider.address, sender=admin),
        account=admin.address,
        neededRole=DEFAULT_ADMIN_ROLE,
    )
    # The successor manages roles; the service keeps working throughout.
    chain.transact(contract, "revokeRole", spec.role, holder.address, sender=successor)
    chain.transact(contract, "grantRole", spec.role, holder.address, sender=successor)
    assert spec.act(chain, contract, holder).status == 1


def test_the_admin_role_can_be_renounced(
    chain: Chain,
    guarded: tuple[Guarded, DeployedContract, LocalAccount],
    admin: LocalAccount,
    outsider: LocalAccount,
) -> None:
    spec, contract, holder = guarded
    renounced = chain.transact(
        contract, "renounceRole", DEFAULT_ADMIN_ROLE, admin.address, sender=admin
    )
    assert [(e.name, dict(e.args)) for e in renounced.events] == [
        (
            "RoleRevoked",
            {"role": DEFAULT_ADMIN_ROLE, "account": admin.address, "sender": admin.address},
        )
    ]
    for caller, role in ((admin, spec.role), (admin, DEFAULT_ADMIN_ROLE), (holder, spec.role)):
        expect_revert(
            UNAUTHORISED,
            partial(chain.transact, contract, "grantRole", role, outsider.address, sender=caller),
            account=caller.address,
            neededRole=DEFAULT_ADMIN_ROLE,
        )
    # The roles are frozen as they were: the service keeps its role and its work.
    assert spec.act(chain, contract, holder).status == 1
    assert chain.call(contract, "hasRole", spec.role, holder.address)


def test_identity_deploys_its_registry_holding_only_the_registrar_role(
    chain: Chain, registrar: LocalAccount, outsider: LocalAccount, tmp_path: Path
) -> None:
    record = tmp_path / "contracts.json"
    registry = ensure_provider_registry(chain, registrar, None, record)
    accounts = {"identity": registrar.address, "outsider": outsider.address}
    assert _holders(chain, registry, accounts) == {("identity", "registrar")}
    expect_revert(
        UNAUTHORISED,
        lambda: chain.transact(
            registry, "grantRole", DEFAULT_ADMIN_ROLE, registrar.address, sender=registrar
        ),
        account=registrar.address,
        neededRole=DEFAULT_ADMIN_ROLE,
    )
    assert _register(chain, registry, registrar).status == 1
    # Started again, identity reuses the registry it recorded.
    again = ensure_provider_registry(chain, registrar, None, record)
    assert again.address == registry.address


def test_the_relay_deploys_its_anchor_holding_only_the_relay_role(
    chain: Chain, admin: LocalAccount, relay: LocalAccount, outsider: LocalAccount
) -> None:
    ledger = AuditAnchorLedger.deploy(chain, admin, relay)
    anchor = chain.contract(load_artifact("AuditAnchor"), ledger.address)
    accounts = {"deployer": admin.address, "relay": relay.address, "outsider": outsider.address}
    assert _holders(chain, anchor, accounts) == {("relay", "relay")}
    for caller in (admin, relay):
        expect_revert(
            UNAUTHORISED,
            partial(
                chain.transact,
                anchor,
                "grantRole",
                DEFAULT_ADMIN_ROLE,
                caller.address,
                sender=caller,
            ),
            account=caller.address,
            neededRole=DEFAULT_ADMIN_ROLE,
        )
    assert _anchor(chain, anchor, relay).status == 1


def test_consent_registry_has_no_roles_to_hold(consent_registry_artifact: Artifact) -> None:
    """The consent service relays patient-signed messages with an account that needs
    no role: the registry has neither roles nor an admin, so there is none to hold."""
    abi: list[Mapping[str, Any]] = list(consent_registry_artifact.abi)
    functions = {entry["name"] for entry in abi if entry.get("type") == "function"}
    assert functions & ROLE_FUNCTIONS == set()
    assert not any("ROLE" in name or "owner" in name.lower() for name in functions)
    constructor = [entry for entry in abi if entry.get("type") == "constructor"]
    assert all(entry["inputs"] == [] for entry in constructor)
