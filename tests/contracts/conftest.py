"""Deployed-contract fixtures of the contract tests.

Every test takes the ``chain`` fixture (tests/fixtures/chain.py), which is
parametrized over the in-process EVM and the real Geth Clique network, so each
rule below is checked on both adapters. Contracts are deployed afresh per test, so
no test depends on another's state; the funded accounts are made once per module
(funding one costs a block on Geth).
"""

from __future__ import annotations

import time

import pytest
from contracts.roles import REGISTRAR_ROLE, RELAY_ROLE
from eth_account.signers.local import LocalAccount
from web3.exceptions import TransactionIndexingInProgress

from services.platform.chain.artifacts import Artifact, load_artifact
from services.platform.chain.port import Chain, DeployedContract


@pytest.fixture(scope="session")
def provider_registry_artifact() -> Artifact:
    return load_artifact("ProviderRegistry")


@pytest.fixture(scope="session")
def consent_registry_artifact() -> Artifact:
    return load_artifact("ConsentRegistry")


@pytest.fixture(scope="session")
def audit_anchor_artifact() -> Artifact:
    return load_artifact("AuditAnchor")


def _new_account(chain: Chain, timeout_s: float = 120) -> LocalAccount:
    """``chain.new_account()``, polled while a freshly started Geth node still
    answers receipt queries with "transaction indexing is in progress" (the port
    does not yet treat that answer as "no receipt yet")."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return chain.new_account()
        except TransactionIndexingInProgress:
            if time.monotonic() > deadline:
                raise


@pytest.fixture(scope="module")
def admin(chain: Chain) -> LocalAccount:
    """Deployer and first DEFAULT_ADMIN_ROLE holder (funded once per module)."""
    return _new_account(chain)


@pytest.fixture(scope="module")
def registrar(chain: Chain) -> LocalAccount:
    return _new_account(chain)


@pytest.fixture(scope="module")
def relay(chain: Chain) -> LocalAccount:
    return _new_account(chain)


@pytest.fixture(scope="module")
def successor(chain: Chain) -> LocalAccount:
    """A funded account the admin role is handed over to."""
    return _new_account(chain)


@pytest.fixture(scope="module")
def outsider(chain: Chain) -> LocalAccount:
    """A funded account holding no role."""
    return _new_account(chain)


@pytest.fixture
def provider_registry(
    chain: Chain,
    provider_registry_artifact: Artifact,
    admin: LocalAccount,
    registrar: LocalAccount,
) -> DeployedContract:
    """A ProviderRegistry with ``registrar`` holding REGISTRAR_ROLE."""
    registry = chain.deploy(provider_registry_artifact, admin, admin.address)
    chain.transact(registry, "grantRole", REGISTRAR_ROLE, registrar.address, sender=admin)
    return registry


@pytest.fixture
def consent_registry(
    chain: Chain, consent_registry_artifact: Artifact, admin: LocalAccount
) -> DeployedContract:
    return chain.deploy(consent_registry_artifact, admin)


@pytest.fixture
def audit_anchor(
    chain: Chain, audit_anchor_artifact: Artifact, admin: LocalAccount, relay: LocalAccount
) -> DeployedContract:
    """An AuditAnchor with ``relay`` holding RELAY_ROLE."""
    anchor = chain.deploy(audit_anchor_artifact, admin, admin.address)
    chain.transact(anchor, "grantRole", RELAY_ROLE, relay.address, sender=admin)
    return anchor
