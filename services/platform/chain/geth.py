"""Geth adapter: JSON-RPC over HTTP to a Clique network, failing over across nodes.

One web3 ``HTTPProvider`` per URL, each with ``ExtraDataToPOAMiddleware`` (Clique
puts the sealer's signature in ``extraData``). An operation runs on the node that
answered last; if it cannot be reached, the next URL is tried, and so on round
the list. Only connection failures fail over: a node's answer (even an error) is
final. When no URL answers, ``ChainUnavailable`` is raised.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ProviderConnectionError
from web3.middleware import ExtraDataToPOAMiddleware

from services.platform.chain.errors import ChainError, ChainUnavailable
from services.platform.chain.web3chain import Web3Chain

T = TypeVar("T")

CONNECTION_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    ProviderConnectionError,
    ConnectionError,
)


def _node(url: str, session: requests.Session, timeout_s: float) -> Web3:
    provider = Web3.HTTPProvider(
        url,
        request_kwargs={"timeout": timeout_s},
        session=session,
        exception_retry_configuration=None,  # fail over at once instead of retrying
    )
    w3 = Web3(provider)
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return w3


class GethChain(Web3Chain):
    """The chain port on a Geth (Clique) network reached through ``rpc_urls``.

    ``funder_key`` is the hex private key of the account that ``fund`` and
    ``new_account`` pay from; it is used only to sign locally.
    """

    def __init__(
        self,
        rpc_urls: Sequence[str],
        chain_id: int,
        funder_key: str,
        *,
        request_timeout_s: float = 10,
        poll_interval_s: float = 0.1,
    ) -> None:
        if not rpc_urls:
            raise ChainError("GethChain needs at least one RPC URL")
        self._urls = list(rpc_urls)
        self._sessions = [requests.Session() for _ in self._urls]
        self._nodes = [
            _node(url, session, request_timeout_s)
            for url, session in zip(self._urls, self._sessions, strict=True)
        ]
        self._current = 0
        self._current_lock = threading.Lock()
        funder: LocalAccount = Account.from_key(funder_key)
        super().__init__(chain_id, funder, poll_interval_s=poll_interval_s)
        reported = self._run(lambda w3: int(w3.eth.chain_id))
        if reported != chain_id:
            raise ChainError(f"the nodes report chain id {reported}, expected {chain_id}")

    def new_client(self) -> GethChain:
        return GethChain(self._urls, self.chain_id, "0x" + bytes(self._funder.key).hex())

    @property
    def current_url(self) -> str:
        """The URL the next operation goes to first."""
        return self._urls[self._current]

    def _run(self, op: Callable[[Web3], T]) -> T:
        start = self._current
        failures: list[str] = []
        for step in range(len(self._nodes)):
            index = (start + step) % len(self._nodes)
            try:
                result = op(self._nodes[index])
            except CONNECTION_ERRORS as exc:
                failures.append(f"{self._urls[index]}: {type(exc).__name__}")
                continue
            if index != start:
                with self._current_lock:
                    self._current = index
            return result
        # A node that comes back may have lost its pool: the next send re-reads the count.
        self.nonces.forget_all()
        raise ChainUnavailable("no RPC endpoint answered (" + "; ".join(failures) + ")")

    def close(self) -> None:
        for session in self._sessions:
            session.close()
