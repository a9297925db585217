"""``ProviderRegistry.isVerified`` through the chain port (read-only calls)."""

from __future__ import annotations

from services.platform.chain.artifacts import load_artifact
from services.platform.chain.port import Chain, ChainError
from services.record_store.domain.errors import DependencyUnavailable


class ChainProviderVerification:
    """The ``ProviderVerification`` port on the ``ProviderRegistry`` contract."""

    def __init__(self, chain: Chain, registry_address: str) -> None:
        self.chain = chain
        self.contract = chain.contract(load_artifact("ProviderRegistry"), registry_address)

    def is_verified(self, address: str) -> bool:
        try:
            return bool(self.chain.call(self.contract, "isVerified", address))
        except ChainError as exc:
            raise DependencyUnavailable(f"ProviderRegistry unreachable: {exc}") from exc
