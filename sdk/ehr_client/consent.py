"""EIP-712 consent messages of ``ConsentRegistry`` (contracts/src/ConsentRegistry.sol).

The formats are ``ehr_protocol.consent`` (the consent service checks the same ones);
this module re-exports them under the SDK's name.

The typed data here matches the contract exactly: domain ``EHR Ledger
ConsentRegistry`` version ``1`` with ``chainId`` and ``verifyingContract``, and
the ``Grant`` / ``Revoke`` struct types of ``GRANT_TYPEHASH`` / ``REVOKE_TYPEHASH``.
The patient signs on the client with a local key (:func:`sign_message`); a
server may pre-check a signature with :func:`recover_signer` before relaying it.

Usage::

    message = build_grant(patient, grantee, categories=LABS | IMAGING,
                          purpose=TREATMENT, expires_at=t + 3600, nonce=n,
                          deadline=t + 600)
    signature = sign_message(patient_account, message,
                             chain_id=chain_id, verifying_contract=registry)
    assert recover_signer(message, signature, chain_id=chain_id,
                          verifying_contract=registry) == patient
"""

from __future__ import annotations

from ehr_protocol.consent import (
    DOMAIN_NAME,
    DOMAIN_VERSION,
    EIP712_DOMAIN_TYPE,
    EMERGENCY,
    GRANT_TYPE,
    IMAGING,
    LABS,
    MEDICATIONS,
    MENTAL_HEALTH,
    NOTES,
    OPERATIONS,
    PAYMENT,
    RESEARCH,
    REVOKE_TYPE,
    SECP256K1_HALF_N,
    TREATMENT,
    UINT32_MAX,
    UINT64_MAX,
    UINT256_MAX,
    ConsentMessage,
    ConsentMessageError,
    GrantMessage,
    RevokeMessage,
    build_grant,
    build_revoke,
    check_signature_shape,
    is_signed_by_patient,
    recover_signer,
    sign_message,
    signable,
    typed_data,
)
from ehr_protocol.vocabulary import ALL_CATEGORIES, Purpose
from ehr_protocol.vocabulary import CategoryBits as Category

__all__ = [
    "ALL_CATEGORIES",
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "EIP712_DOMAIN_TYPE",
    "EMERGENCY",
    "GRANT_TYPE",
    "IMAGING",
    "LABS",
    "MEDICATIONS",
    "MENTAL_HEALTH",
    "NOTES",
    "OPERATIONS",
    "PAYMENT",
    "RESEARCH",
    "REVOKE_TYPE",
    "SECP256K1_HALF_N",
    "TREATMENT",
    "UINT32_MAX",
    "UINT64_MAX",
    "UINT256_MAX",
    "Category",
    "ConsentMessage",
    "ConsentMessageError",
    "GrantMessage",
    "Purpose",
    "RevokeMessage",
    "build_grant",
    "build_revoke",
    "check_signature_shape",
    "is_signed_by_patient",
    "recover_signer",
    "sign_message",
    "signable",
    "typed_data",
]
