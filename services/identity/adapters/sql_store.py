"""``IdentityStore`` on SQLAlchemy Core: the same code on SQLite and PostgreSQL.

Every write runs in one transaction together with its outbox rows, so state and
events commit or roll back together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from services.identity.domain.errors import AccountExists
from services.identity.domain.events import Recorded
from services.identity.domain.model import (
    Account,
    Challenge,
    ProviderStatus,
    Role,
    Session,
)
from services.identity.domain.ports import IdentityStore
from services.platform.bus.outbox import OutboxWriter, create_outbox_table
from services.platform.bus.port import Message

metadata = sa.MetaData()

accounts = sa.Table(
    "identity_accounts",
    metadata,
    sa.Column("account_id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("signing_address", sa.String(42), nullable=False, unique=True),
    sa.Column("encryption_key", sa.String(64), nullable=False),
    sa.Column("provider_status", sa.String(16), nullable=True),
    sa.Column("licence_hash", sa.String(66), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
challenges = sa.Table(
    "identity_challenges",
    metadata,
    sa.Column("nonce", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.String(36), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
)
sessions = sa.Table(
    "identity_sessions",
    metadata,
    sa.Column("session_id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.String(36), nullable=False, index=True),
    sa.Column("token_ids", sa.Text(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)


def _utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything here is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _account(row: sa.Row[Any]) -> Account:
    return Account(
        account_id=row.account_id,
        name=row.name,
        role=Role(row.role),
        signing_address=row.signing_address,
        encryption_key=row.encryption_key,
        created_at=_utc(row.created_at),
        provider_status=ProviderStatus(row.provider_status) if row.provider_status else None,
        licence_hash=row.licence_hash,
    )


class SqlIdentityStore(IdentityStore):
    def __init__(self, engine: sa.Engine, encode: Callable[[Recorded], Message]) -> None:
        self.engine = engine
        self._encode = encode
        self._outbox = OutboxWriter()

    def create_schema(self) -> None:
        metadata.create_all(self.engine)
        create_outbox_table(self.engine)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def _events(self, conn: sa.Connection, events: Sequence[Recorded]) -> None:
        self._outbox.append(conn, [self._encode(e) for e in events])

    def add_account(self, account: Account, events: Sequence[Recorded]) -> None:
        messages = [self._encode(e) for e in events]
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    accounts.insert().values(
                        account_id=account.account_id,
                        name=account.name,
                        role=account.role.value,
                        signing_address=account.signing_address,
                        encryption_key=account.encryption_key,
                        provider_status=account.provider_status.value
                        if account.provider_status
                        else None,
                        licence_hash=account.licence_hash,
                        created_at=account.created_at,
                    )
                )
                self._outbox.append(conn, messages)
        except sa.exc.IntegrityError as exc:
            raise AccountExists(
                f"an account with address {account.signing_address} exists"
            ) from exc

    def account(self, account_id: str) -> Account | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                accounts.select().where(accounts.c.account_id == account_id)
            ).one_or_none()
        return _account(row) if row else None

    def account_by_address(self, address: str) -> Account | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                accounts.select().where(accounts.c.signing_address == address)
            ).one_or_none()
        return _account(row) if row else None

    def update_account(self, account: Account, events: Sequence[Recorded]) -> None:
        messages = [self._encode(e) for e in events]
        with self.engine.begin() as conn:
            conn.execute(
                accounts.update()
                .where(accounts.c.account_id == account.account_id)
                .values(
                    name=account.name,
                    provider_status=account.provider_status.value
                    if account.provider_status
                    else None,
                    licence_hash=account.licence_hash,
                )
            )
            self._outbox.append(conn, messages)

    def add_challenge(self, challenge: Challenge) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                challenges.insert().values(
                    nonce=challenge.nonce,
                    account_id=challenge.account_id,
                    message=challenge.message,
                    issued_at=challenge.issued_at,
                    expires_at=challenge.expires_at,
                )
            )

    def challenge(self, nonce: str) -> tuple[Challenge, datetime | None] | None:
        with self.engine.connect() as conn:
            row = conn.execute(challenges.select().where(challenges.c.nonce == nonce)).one_or_none()
        if row is None:
            return None
        found = Challenge(
            row.nonce, row.account_id, row.message, _utc(row.issued_at), _utc(row.expires_at)
        )
        return found, _utc(row.used_at) if row.used_at else None

    def complete_login(
        self, nonce: str, used_at: datetime, session: Session, events: Sequence[Recorded]
    ) -> bool:
        messages = [self._encode(e) for e in events]
        with self.engine.begin() as conn:
            claimed = conn.execute(
                challenges.update()
                .where(challenges.c.nonce == nonce, challenges.c.used_at.is_(None))
                .values(used_at=used_at)
            )
            if claimed.rowcount != 1:
                conn.rollback()
                return False
            conn.execute(
                sessions.insert().values(
                    session_id=session.session_id,
                    account_id=session.account_id,
                    token_ids=",".join(session.token_ids),
                    created_at=session.created_at,
                    expires_at=session.expires_at,
                )
            )
            self._outbox.append(conn, messages)
        return True

    def record(self, events: Sequence[Recorded]) -> None:
        messages = [self._encode(e) for e in events]
        with self.engine.begin() as conn:
            self._outbox.append(conn, messages)
