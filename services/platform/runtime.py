"""How a service process is composed and started, the same way in every service.

A composition root (``services/<name>/main.py``) builds a runtime from its settings with
the choosers here (``database_engine``, ``chain_account``, ``chain_or_inprocess``, beside
``services.platform.bus.choose.kafka_or_embedded``) and starts its process with
``run_service``.

Fail closed: a service's own process (``python -m services.<name>``, the devstack, the
chart) refuses to start when a setting of its ``deployed_requires`` is missing: one line
on stderr naming the setting, exit status 2, no traceback. It never falls back to the
in-process chain, the embedded log or SQLite; only ``services.embedded`` (and tests that
compose runtimes themselves) pass those in or let the choosers make them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn, Protocol, TypeVar

import sqlalchemy as sa
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from pydantic import ValidationError

from services.platform.app.factory import serve
from services.platform.app.logging import configure_logging
from services.platform.app.settings import ServiceSettings, env_name
from services.platform.chain.geth import GethChain
from services.platform.chain.inprocess import InProcessChain
from services.platform.chain.keyfile import load_or_create_account
from services.platform.chain.port import Chain

#: Exit status of a service that refuses to start for its settings.
REFUSED_EXIT_STATUS = 2
#: What an account paying gas gets on an in-process chain.
INPROCESS_FUNDING_WEI = 10**21

S = TypeVar("S", bound=ServiceSettings)


class Runtime(Protocol):
    """What ``run_service`` serves and releases."""

    app: FastAPI

    def close(self) -> None: ...


R = TypeVar("R", bound=Runtime)


class SettingRefused(ValueError):
    """A setting the composition cannot use (``run_service`` turns it into a refusal)."""


def database_engine(settings: ServiceSettings, sqlite_file: str) -> sa.Engine:
    """``settings.database_url``, else SQLite in ``<data_dir>/<sqlite_file>`` (embedded)."""
    url = settings.database_url or f"sqlite:///{settings.data_dir / sqlite_file}"
    return sa.create_engine(url, pool_pre_ping=True)


def chain_account(
    settings: ServiceSettings, default_key_file: str, *, embedded: bool
) -> LocalAccount:
    """The account that pays this service's gas: ``chain_private_key``, else the key in
    ``chain_key_file``; on an in-process chain (``embedded``) a key generated into
    ``<data_dir>/<default_key_file>`` (mode 0600) when neither is set."""
    if settings.chain_private_key is not None:
        account: LocalAccount = Account.from_key(settings.chain_private_key.get_secret_value())
        return account
    if settings.chain_key_file is not None:
        account = Account.from_key(settings.chain_key_file.read_text().strip())
        return account
    if not embedded:
        raise SettingRefused(
            "EHR_CHAIN_KEY_FILE (or EHR_CHAIN_PRIVATE_KEY) is required with EHR_CHAIN_RPC_URLS"
        )
    return load_or_create_account(settings.data_dir / default_key_file)


def geth_chain(settings: ServiceSettings, private_key_hex: str) -> GethChain:
    """The chain at ``chain_rpc_urls`` (failover in order), signing with the given key."""
    if not settings.chain_rpc_urls:
        raise SettingRefused("EHR_CHAIN_RPC_URLS is required")
    if settings.chain_id is None:
        raise SettingRefused("EHR_CHAIN_ID is required with EHR_CHAIN_RPC_URLS")
    return GethChain(settings.chain_rpc_urls, settings.chain_id, private_key_hex)


def chain_or_inprocess(
    settings: ServiceSettings, account: LocalAccount, chain: Chain | None = None
) -> tuple[Chain, bool]:
    """The chain a runtime uses and whether the runtime owns (closes) it.

    ``chain`` when one is passed in (the embedded default shares one in-process chain;
    an in-process one funds ``account``), else Geth at ``chain_rpc_urls``, else a new
    in-process chain funding ``account`` (tests composing one service alone; a service
    process never gets here without ``chain_rpc_urls``: ``run_service`` refuses)."""
    if chain is not None:
        if isinstance(chain, InProcessChain):
            chain.fund(account.address, INPROCESS_FUNDING_WEI)
        return chain, False
    if settings.chain_rpc_urls:
        return geth_chain(settings, "0x" + bytes(account.key).hex()), True
    inprocess = InProcessChain()
    inprocess.fund(account.address, INPROCESS_FUNDING_WEI)
    return inprocess, True


def is_embedded_chain(settings: ServiceSettings, chain: Chain | None) -> bool:
    """Whether the runtime will run on an in-process chain (passed in or made)."""
    if chain is not None:
        return isinstance(chain, InProcessChain)
    return not settings.chain_rpc_urls


def refuse(service: str, reason: str) -> NoReturn:
    """Ends the process: one line on stderr, exit status 2."""
    print(f"{service}: refusing to start: {reason}", file=sys.stderr, flush=True)
    raise SystemExit(REFUSED_EXIT_STATUS)


def _service_name(settings_type: type[ServiceSettings]) -> str:
    default = settings_type.model_fields["service_name"].default
    return default if isinstance(default, str) else settings_type.__name__


def _validation_line(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        name = env_name(".".join(str(part) for part in item["loc"]))
        problems.append("not set" if item["type"] == "missing" else item["msg"])
        problems[-1] = f"{name}: {problems[-1]}"
    return "; ".join(problems)


def load_service_settings(settings_type: type[S]) -> S:
    """The settings of a service's own process, or a refusal naming what is missing or
    invalid (see the module's docstring)."""
    service = _service_name(settings_type)
    try:
        settings = settings_type()
    except ValidationError as error:
        refuse(service, _validation_line(error))
    missing = settings.missing_for_service()
    if missing:
        refuse(
            settings.service_name,
            f"{', '.join(missing)} not set (a service process needs its own database, "
            "Kafka and chain; only `python -m services.embedded` runs in-process ones)",
        )
    return settings


def run_service(
    settings_type: type[S],
    compose: Callable[[S], R],
    after: Callable[[R], None] | None = None,
) -> None:
    """Loads the settings (refusing without the required ones), composes the runtime,
    serves its app until stopped, then closes it; ``after`` runs after serving."""
    settings = load_service_settings(settings_type)
    configure_logging(settings.service_name, settings.log_level)
    try:
        runtime = compose(settings)
    except SettingRefused as refusal:
        refuse(settings.service_name, str(refusal))
    try:
        serve(runtime.app, settings)
        if after is not None:
            after(runtime)
    finally:
        runtime.close()
