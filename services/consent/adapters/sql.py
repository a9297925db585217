"""The consent repository on SQLAlchemy Core: SQLite (embedded) and PostgreSQL (real).

Tables: ``consent_accounts`` (from identity events), ``consent_grants`` (the projection,
one row per patient, grantee and purpose), ``consent_applied_logs`` (registry logs already
in the projection), ``consent_rejections`` (refused messages), ``consent_state``
(registry address, reconciler cursor), ``consent_quarantine`` (registry logs the
projection could not apply, for an operator) and the shared ``bus_outbox``. A projection
change and its outbox events are written in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from eth_utils.address import to_checksum_address

from services.consent.adapters.events import to_messages
from services.consent.domain.errors import UnrepresentableChange
from services.consent.domain.events import ConsentRejected, DomainEvent
from services.consent.domain.model import Account, ChainPosition, Grant
from services.consent.domain.ports import Projector, QuarantinedLog
from services.platform.bus.consumer import create_processed_events_table
from services.platform.bus.outbox import OutboxWriter, create_outbox_table

metadata = sa.MetaData()

ADDRESS = sa.String(42)

accounts = sa.Table(
    "consent_accounts",
    metadata,
    sa.Column("account_id", sa.String(200), primary_key=True),
    sa.Column("role", sa.String(40), nullable=False),
    sa.Column("address", ADDRESS, nullable=False, index=True),
)

grants = sa.Table(
    "consent_grants",
    metadata,
    sa.Column("patient", ADDRESS, primary_key=True),
    sa.Column("grantee", ADDRESS, primary_key=True),
    sa.Column("purpose", sa.SmallInteger(), primary_key=True),
    sa.Column("grant_id", sa.String(80), nullable=False),
    sa.Column("categories", sa.Integer(), nullable=False),
    sa.Column("expires_at", sa.BigInteger(), nullable=False),
    sa.Column("nonce", sa.BigInteger(), nullable=False),
    sa.Column("patient_id", sa.String(200), nullable=False),
    sa.Column("grantee_id", sa.String(200), nullable=False),
    sa.Column("chain_id", sa.BigInteger(), nullable=False),
    sa.Column("contract_address", ADDRESS, nullable=False),
    sa.Column("tx_hash", sa.String(66), nullable=False),
    sa.Column("block_number", sa.BigInteger(), nullable=False),
    sa.Column("log_index", sa.Integer(), nullable=False),
    sa.Column("gas_used", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", sa.Float(), nullable=False),
    sa.Column("expiry_announced", sa.Boolean(), nullable=False, default=False),
    sa.Column("revoked_categories", sa.Integer(), nullable=False, server_default="0"),
    sa.Index("ix_consent_grants_grantee", "grantee"),
    sa.Index("ix_consent_grants_expiry", "expiry_announced", "expires_at"),
)

applied_logs = sa.Table(
    "consent_applied_logs",
    metadata,
    sa.Column("tx_hash", sa.String(66), primary_key=True),
    sa.Column("log_index", sa.Integer(), primary_key=True),
    sa.Column("block_number", sa.BigInteger(), nullable=False),
)

rejections = sa.Table(
    "consent_rejections",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("patient", sa.String(64), nullable=False),
    sa.Column("grantee", sa.String(64), nullable=False),
    sa.Column("nonce", sa.String(80), nullable=False),
    sa.Column("error_name", sa.String(100), nullable=False),
    sa.Column("detail", sa.String(500), nullable=False),
    sa.Column("actor_id", sa.String(200), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

quarantine = sa.Table(
    "consent_quarantine",
    metadata,
    sa.Column("tx_hash", sa.String(66), primary_key=True),
    sa.Column("log_index", sa.Integer(), primary_key=True),
    sa.Column("block_number", sa.BigInteger(), nullable=False),
    sa.Column("chain_id", sa.BigInteger(), nullable=False),
    sa.Column("contract_address", ADDRESS, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
)

state = sa.Table(
    "consent_state",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("value", sa.String(500), nullable=False),
)


def create_schema(engine: sa.Engine) -> None:
    """Creates the service's tables and adds columns newer than an existing table
    (idempotent)."""
    metadata.create_all(engine)
    columns = {c["name"] for c in sa.inspect(engine).get_columns(grants.name)}
    if "revoked_categories" not in columns:
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "ALTER TABLE consent_grants "
                    "ADD COLUMN revoked_categories INTEGER NOT NULL DEFAULT 0"
                )
            )
    create_outbox_table(engine)
    create_processed_events_table(engine)


def _grant(row: sa.Row[tuple[object, ...]]) -> Grant:
    m = row._mapping
    return Grant(
        grant_id=m["grant_id"],
        patient=m["patient"],
        grantee=m["grantee"],
        purpose=m["purpose"],
        categories=m["categories"],
        expires_at=m["expires_at"],
        nonce=m["nonce"],
        position=ChainPosition(
            chain_id=m["chain_id"],
            contract_address=m["contract_address"],
            tx_hash=m["tx_hash"],
            block_number=m["block_number"],
            log_index=m["log_index"],
            gas_used=m["gas_used"],
        ),
        patient_id=m["patient_id"],
        grantee_id=m["grantee_id"],
        updated_at=m["updated_at"],
        revoked_categories=m["revoked_categories"],
    )


def _values(grant: Grant) -> dict[str, object]:
    p = grant.position
    return {
        "grant_id": grant.grant_id,
        "categories": grant.categories,
        "expires_at": grant.expires_at,
        "nonce": grant.nonce,
        "patient_id": grant.patient_id,
        "grantee_id": grant.grantee_id,
        "chain_id": p.chain_id,
        "contract_address": p.contract_address,
        "tx_hash": p.tx_hash,
        "block_number": p.block_number,
        "log_index": p.log_index,
        "gas_used": p.gas_used,
        "updated_at": grant.updated_at,
        "expiry_announced": False,
        "revoked_categories": grant.revoked_categories,
    }


def _cs(address: str) -> str:
    return str(to_checksum_address(address))


def _key(patient: str, grantee: str, purpose: int) -> sa.ColumnElement[bool]:
    return sa.and_(
        grants.c.patient == _cs(patient),
        grants.c.grantee == _cs(grantee),
        grants.c.purpose == purpose,
    )


class SqlConsentRepository:
    """The ``ConsentRepository`` port on SQLite or PostgreSQL."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._outbox = OutboxWriter()
        self._lock_rows = engine.dialect.name != "sqlite"

    def _begin(self) -> sa.engine.Connection:
        connection = self.engine.connect()
        if not self._lock_rows:
            # SQLite: take the write lock at once so read-modify-write is serialised.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.begin()
        return connection

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    # -- accounts ---------------------------------------------------------------------

    def account(self, account_id: str) -> Account | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(accounts).where(accounts.c.account_id == account_id)
            ).first()
        return Account(row.account_id, row.role, row.address) if row else None

    def account_by_address(self, address: str) -> Account | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(accounts).where(accounts.c.address == _cs(address)).limit(1)
            ).first()
        return Account(row.account_id, row.role, row.address) if row else None

    def save_account(self, account: Account) -> None:
        with self.engine.begin() as connection:
            save_account_on(connection, account)

    # -- projection -------------------------------------------------------------------

    def grant(self, patient: str, grantee: str, purpose: int) -> Grant | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(grants).where(_key(patient, grantee, purpose)))
            found = row.first()
        return _grant(found) if found else None

    def grants_of_patient(self, patient: str) -> list[Grant]:
        query = sa.select(grants).where(grants.c.patient == _cs(patient))
        with self.engine.connect() as connection:
            return [_grant(r) for r in connection.execute(query.order_by(grants.c.grantee))]

    def grants_of_grantee(self, grantee: str) -> list[Grant]:
        query = sa.select(grants).where(grants.c.grantee == _cs(grantee))
        with self.engine.connect() as connection:
            return [_grant(r) for r in connection.execute(query.order_by(grants.c.patient))]

    def apply(
        self,
        patient: str,
        grantee: str,
        purpose: int,
        position: ChainPosition,
        project: Projector,
    ) -> bool:
        connection = self._begin()
        try:
            seen = connection.execute(
                sa.select(applied_logs.c.tx_hash).where(
                    applied_logs.c.tx_hash == position.tx_hash,
                    applied_logs.c.log_index == position.log_index,
                )
            ).first()
            if seen is not None:
                connection.rollback()
                return False
            connection.execute(
                applied_logs.insert().values(
                    tx_hash=position.tx_hash,
                    log_index=position.log_index,
                    block_number=position.block_number,
                )
            )
            query = sa.select(grants).where(_key(patient, grantee, purpose))
            if self._lock_rows:
                query = query.with_for_update()
            found = connection.execute(query).first()
            current = _grant(found) if found else None
            if current is None or position.after(current.position):
                new, events = project(current)
                values = _values(new)
                if current is None:
                    connection.execute(
                        grants.insert().values(
                            patient=_cs(patient), grantee=_cs(grantee), purpose=purpose, **values
                        )
                    )
                else:
                    connection.execute(
                        grants.update().where(_key(patient, grantee, purpose)).values(**values)
                    )
                self._append(connection, events)
            connection.commit()
            return True
        except sa.exc.IntegrityError:
            connection.rollback()  # the same log applied concurrently by another path
            return False
        except (OverflowError, sa.exc.DataError) as unrepresentable:
            connection.rollback()
            raise UnrepresentableChange(
                f"the database cannot hold the change: {type(unrepresentable).__name__}"
            ) from unrepresentable
        except sa.exc.StatementError as failed:
            connection.rollback()
            if isinstance(failed, sa.exc.DBAPIError):
                raise  # the database itself failed: the caller retries
            raise UnrepresentableChange(
                f"the database cannot hold the change: {type(failed.orig).__name__}"
            ) from failed
        finally:
            connection.close()

    def unexpired_due(self, now: float, limit: int) -> list[Grant]:
        query = (
            sa.select(grants)
            .where(
                grants.c.expiry_announced.is_(False),
                grants.c.categories != 0,
                grants.c.expires_at <= int(now),
            )
            .order_by(grants.c.expires_at)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [_grant(r) for r in connection.execute(query)]

    def mark_expired(self, grant: Grant, events: Sequence[DomainEvent]) -> bool:
        connection = self._begin()
        try:
            result = connection.execute(
                grants.update()
                .where(
                    _key(grant.patient, grant.grantee, grant.purpose),
                    grants.c.grant_id == grant.grant_id,
                    grants.c.tx_hash == grant.position.tx_hash,
                    grants.c.expiry_announced.is_(False),
                )
                .values(expiry_announced=True)
            )
            if result.rowcount != 1:
                connection.rollback()
                return False
            self._append(connection, events)
            connection.commit()
            return True
        finally:
            connection.close()

    def _append(self, connection: sa.Connection, events: Sequence[DomainEvent]) -> None:
        self._outbox.append(connection, [m for e in events for m in to_messages(e)])

    # -- rejections and state ---------------------------------------------------------

    def record_rejection(self, rejection: ConsentRejected) -> None:
        """The refusal row and its ``rejected`` event in the outbox, in one transaction."""
        with self.engine.begin() as connection:
            connection.execute(
                rejections.insert().values(
                    kind=rejection.kind,
                    patient=rejection.patient[:64],
                    grantee=rejection.grantee[:64],
                    nonce=str(rejection.nonce)[:80],
                    error_name=rejection.error_name[:100],
                    detail=f"{rejection.refusal_code}: {rejection.detail}"[:500],
                    actor_id=rejection.actor.account_id[:200],
                    at=datetime.fromtimestamp(rejection.at, UTC),
                )
            )
            self._append(connection, [rejection])

    def rejections(self, patient: str) -> list[tuple[str, str]]:
        """(kind, error name) of the refused messages naming ``patient``, oldest first."""
        query = (
            sa.select(rejections.c.kind, rejections.c.error_name)
            .where(rejections.c.patient == patient)
            .order_by(rejections.c.id)
        )
        with self.engine.connect() as connection:
            return [(r.kind, r.error_name) for r in connection.execute(query)]

    def quarantine(self, log: QuarantinedLog) -> bool:
        try:
            return self._quarantine(log)
        except sa.exc.IntegrityError:
            return False  # quarantined concurrently by another sync

    def _quarantine(self, log: QuarantinedLog) -> bool:
        with self.engine.begin() as connection:
            seen = connection.execute(
                sa.select(quarantine.c.tx_hash).where(
                    quarantine.c.tx_hash == log.tx_hash, quarantine.c.log_index == log.log_index
                )
            ).first()
            if seen is not None:
                return False
            connection.execute(
                quarantine.insert().values(
                    tx_hash=log.tx_hash,
                    log_index=log.log_index,
                    block_number=log.block_number,
                    chain_id=log.chain_id,
                    contract_address=log.contract_address,
                    kind=log.kind[:20],
                    reason=log.reason[:500],
                    quarantined_at=datetime.fromtimestamp(log.quarantined_at, UTC),
                )
            )
        return True

    def quarantined(self, limit: int) -> list[QuarantinedLog]:
        query = (
            sa.select(quarantine)
            .order_by(quarantine.c.block_number, quarantine.c.log_index)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [
                QuarantinedLog(
                    chain_id=r.chain_id,
                    contract_address=r.contract_address,
                    block_number=r.block_number,
                    tx_hash=r.tx_hash,
                    log_index=r.log_index,
                    kind=r.kind,
                    reason=r.reason,
                    quarantined_at=_aware(r.quarantined_at).timestamp(),
                )
                for r in connection.execute(query)
            ]

    def quarantine_count(self) -> int:
        with self.engine.connect() as connection:
            count = connection.execute(sa.select(sa.func.count()).select_from(quarantine))
            return int(count.scalar_one())

    def get_state(self, name: str) -> str | None:
        with self.engine.connect() as connection:
            value = connection.execute(
                sa.select(state.c.value).where(state.c.name == name)
            ).scalar_one_or_none()
        return str(value) if value is not None else None

    def set_state(self, name: str, value: str) -> None:
        with self.engine.begin() as connection:
            updated = connection.execute(
                state.update().where(state.c.name == name).values(value=value)
            )
            if updated.rowcount == 0:
                connection.execute(state.insert().values(name=name, value=value))

    def reset_projection(self) -> None:
        """Forget the projection and its quarantine (the registry it mirrored was
        replaced)."""
        with self.engine.begin() as connection:
            connection.execute(grants.delete())
            connection.execute(quarantine.delete())
            connection.execute(applied_logs.delete())
            connection.execute(state.delete())


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive date-times; they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def save_account_on(connection: sa.Connection, account: Account) -> None:
    """Upserts an account inside the caller's transaction (identity consumer)."""
    address = _cs(account.address)
    updated = connection.execute(
        accounts.update()
        .where(accounts.c.account_id == account.account_id)
        .values(role=account.role, address=address)
    )
    if updated.rowcount == 0:
        connection.execute(
            accounts.insert().values(
                account_id=account.account_id, role=account.role, address=address
            )
        )
