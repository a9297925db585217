"""Accounts from identity's ``account_registered`` events (consumer handler)."""

from __future__ import annotations

import sqlalchemy as sa
from ehr.identity.v1 import identity_pb2

from services.consent.adapters.sql import save_account_on
from services.consent.domain.model import Account
from services.platform.bus.port import Record
from services.platform.events import envelope as codec
from services.platform.events.catalogue import event_type_of
from services.platform.events.vocabulary import ROLE_NAMES

ACCOUNT_REGISTERED = event_type_of(identity_pb2.AccountRegistered)


def handle_identity_event(connection: sa.Connection, record: Record) -> None:
    """Stores the account of an ``account_registered`` event; other events are ignored."""
    envelope = codec.decode(record.value)
    if envelope.type != ACCOUNT_REGISTERED:
        return
    registered = codec.payload(envelope, identity_pb2.AccountRegistered)
    role = ROLE_NAMES.get(registered.role, "unknown")
    save_account_on(connection, Account(registered.account_id, role, registered.signing_address))
