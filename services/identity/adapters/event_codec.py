"""Identity's domain events as protobuf envelopes on their topics."""

from __future__ import annotations

import hashlib

from ehr.identity.v1 import identity_pb2
from ehr.vocabulary.v1 import vocabulary_pb2
from google.protobuf.message import Message as ProtoMessage

from services.identity.domain.events import (
    AccountRegistered,
    LoginFailed,
    LoginFailure,
    LoginSucceeded,
    ProviderReinstated,
    ProviderSuspended,
    ProviderVerified,
    Recorded,
)
from services.identity.domain.model import ChainReceipt
from services.platform.bus.port import Message
from services.platform.events import envelope as events
from services.platform.events.vocabulary import ROLE_CODES

SOURCE = "identity"

FAILURE_CODES = {
    LoginFailure.UNKNOWN_ACCOUNT: identity_pb2.LOGIN_FAILURE_REASON_UNKNOWN_ACCOUNT,
    LoginFailure.BAD_SIGNATURE: identity_pb2.LOGIN_FAILURE_REASON_BAD_SIGNATURE,
    LoginFailure.EXPIRED_CHALLENGE: identity_pb2.LOGIN_FAILURE_REASON_EXPIRED_CHALLENGE,
    LoginFailure.REPLAYED_CHALLENGE: identity_pb2.LOGIN_FAILURE_REASON_REPLAYED_CHALLENGE,
}


def _receipt(receipt: ChainReceipt) -> vocabulary_pb2.ChainReceipt:
    return vocabulary_pb2.ChainReceipt(
        chain_id=receipt.chain_id,
        transaction_hash=receipt.transaction_hash,
        block_number=receipt.block_number,
        contract_address=receipt.contract_address,
        gas_used=receipt.gas_used,
    )


def payload_of(recorded: Recorded) -> ProtoMessage:
    event = recorded.event
    match event:
        case AccountRegistered():
            return identity_pb2.AccountRegistered(
                account_id=event.account_id,
                role=ROLE_CODES[event.role],
                signing_address=event.signing_address,
                encryption_key_sha256=hashlib.sha256(bytes.fromhex(event.encryption_key)).digest(),
                registered_by=event.registered_by or "",
            )
        case ProviderVerified():
            return identity_pb2.ProviderVerified(
                account_id=event.account_id,
                provider_address=event.provider_address,
                licence_sha256=event.licence_hash,
                receipt=_receipt(event.receipt),
            )
        case ProviderReinstated():
            return identity_pb2.ProviderReinstated(
                account_id=event.account_id,
                provider_address=event.provider_address,
                licence_sha256=event.licence_hash,
                receipt=_receipt(event.receipt),
            )
        case ProviderSuspended():
            return identity_pb2.ProviderSuspended(
                account_id=event.account_id,
                provider_address=event.provider_address,
                reason_code=event.reason_code,
                receipt=_receipt(event.receipt),
            )
        case LoginSucceeded():
            message = identity_pb2.LoginSucceeded(
                account_id=event.account_id,
                role=ROLE_CODES[event.role],
                session_id=event.session_id,
                token_id=event.token_id,
            )
            message.token_expires_at.FromDatetime(event.token_expires_at)
            return message
        case LoginFailed():
            return identity_pb2.LoginFailed(
                account_id=event.account_id,
                reason=FAILURE_CODES[event.reason],
                outcome=vocabulary_pb2.OUTCOME_MINOR_FAILURE,
            )
    raise TypeError(f"not an identity event: {event!r}")


def to_message(recorded: Recorded) -> Message:
    """The bus message (topic, key, exact bytes) of one recorded event."""
    actor = recorded.actor
    envelope = events.new_envelope(
        payload_of(recorded),
        source=SOURCE,
        actor=events.Actor(
            id=actor.id,
            role=ROLE_CODES[actor.role] if actor.role else vocabulary_pb2.ROLE_SERVICE,
            token_id=actor.token_id or "",
        ),
        correlation_id=actor.correlation_id,
    )
    return Message(
        events.topic_of(envelope).name, events.partition_key(envelope), events.encode(envelope)
    )
