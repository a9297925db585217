"""EIP-712 digests and signer recovery with the protocol's encoding (the one the client signs)."""

from __future__ import annotations

import ehr_protocol.consent as sdk
from eth_utils.crypto import keccak

from services.consent.domain.model import GrantMessage, Signed


def sdk_message(signed: Signed) -> sdk.ConsentMessage:
    """The protocol's message for a domain message (same fields, same encoding)."""
    m = signed.message
    if isinstance(m, GrantMessage):
        return sdk.GrantMessage(
            m.patient, m.grantee, m.categories, m.purpose, m.expires_at, m.nonce, m.deadline
        )
    return sdk.RevokeMessage(m.patient, m.grantee, m.categories, m.purpose, m.nonce, m.deadline)


class Eip712SignatureVerifier:
    """The ``SignatureVerifier`` port over ``ehr_protocol.consent``."""

    def digest(self, signed: Signed, chain_id: int, contract: str) -> bytes:
        encoded = sdk.signable(sdk_message(signed), chain_id=chain_id, verifying_contract=contract)
        return bytes(keccak(b"\x19" + encoded.version + encoded.header + encoded.body))

    def signer(self, signed: Signed, chain_id: int, contract: str) -> str | None:
        try:
            return str(
                sdk.recover_signer(
                    sdk_message(signed),
                    signed.signature,
                    chain_id=chain_id,
                    verifying_contract=contract,
                )
            )
        except sdk.ConsentMessageError:
            return None
