"""The record repository on SQLAlchemy Core: SQLite (embedded) and PostgreSQL (real).

Ciphertext is stored as bytes in the database (``record_versions.ciphertext``), not as
files: a version, its wrapped keys and its outbox event are written in one transaction,
crypto-shredding is one transaction that sets the ciphertext to NULL and deletes the
keys, and a backup of the database is a backup of everything. Versions are at most about
1 MiB, well within what PostgreSQL ``bytea`` and SQLite blobs handle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa

from services.platform.bus.consumer import create_processed_events_table
from services.platform.bus.outbox import OutboxWriter, create_outbox_table
from services.record_store.adapters.events import to_messages
from services.record_store.domain.errors import RecordExists, RecordNotFound
from services.record_store.domain.events import DomainEvent
from services.record_store.domain.model import (
    ESCROW_HOLDER,
    Account,
    BreakGlass,
    Category,
    Provenance,
    RecordMeta,
    VersionMeta,
    VersionUpload,
    WrappedKey,
)

metadata = sa.MetaData()
ID = sa.String(200)

accounts = sa.Table(
    "records_accounts",
    metadata,
    sa.Column("account_id", ID, primary_key=True),
    sa.Column("role", sa.String(40), nullable=False),
    sa.Column("address", sa.String(42), nullable=False),
    sa.Column("encryption_key_sha256", sa.LargeBinary(32), nullable=False),
)

records = sa.Table(
    "records",
    metadata,
    sa.Column("record_id", ID, primary_key=True),
    sa.Column("patient_id", ID, nullable=False, index=True),
    sa.Column("category", sa.String(20), nullable=False),
    sa.Column("resource_type", sa.String(60), nullable=False),
    sa.Column("created_by", ID, nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("latest_version", sa.Integer(), nullable=False),
    sa.Column("shredded_at", sa.Float(), nullable=True),
)

versions = sa.Table(
    "record_versions",
    metadata,
    sa.Column("record_id", ID, sa.ForeignKey("records.record_id"), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True),
    sa.Column("resource_type", sa.String(60), nullable=False),
    sa.Column("content_sha256", sa.LargeBinary(32), nullable=False),
    sa.Column("ciphertext_sha256", sa.LargeBinary(32), nullable=False),
    sa.Column("ciphertext_size", sa.BigInteger(), nullable=False),
    sa.Column("plaintext_size", sa.BigInteger(), nullable=False),
    sa.Column("ciphertext", sa.LargeBinary(), nullable=True),
    sa.Column("author_id", ID, nullable=False),
    sa.Column("author_address", sa.String(42), nullable=False),
    sa.Column("signed_at", sa.String(40), nullable=False),
    sa.Column("signature", sa.LargeBinary(65), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("key_generation", sa.Integer(), nullable=False),
)

keys = sa.Table(
    "record_keys",
    metadata,
    sa.Column("record_id", ID, primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True),
    sa.Column("holder_id", ID, primary_key=True),
    sa.Column("wrapped", sa.LargeBinary(93), nullable=False),
    sa.Column("expires_at", sa.Float(), nullable=True),
    sa.Index("ix_record_keys_holder", "holder_id"),
)

break_glass = sa.Table(
    "record_break_glass",
    metadata,
    sa.Column("break_glass_id", sa.String(40), primary_key=True),
    sa.Column("provider_id", ID, nullable=False),
    sa.Column("patient_id", ID, nullable=False),
    sa.Column("justification", sa.String(1000), nullable=False),
    sa.Column("categories", sa.String(100), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("expires_at", sa.Float(), nullable=False),
    sa.Column("keys_released", sa.Integer(), nullable=False),
    sa.Index("ix_record_break_glass_pair", "provider_id", "patient_id"),
)


def create_schema(engine: sa.Engine) -> None:
    """Creates the service's tables (idempotent)."""
    metadata.create_all(engine)
    create_outbox_table(engine)
    create_processed_events_table(engine)


def _record(row: sa.Row[tuple[object, ...]]) -> RecordMeta:
    m = row._mapping
    return RecordMeta(
        record_id=m["record_id"],
        patient_id=m["patient_id"],
        category=Category(m["category"]),
        resource_type=m["resource_type"],
        created_by=m["created_by"],
        created_at=m["created_at"],
        latest_version=m["latest_version"],
        shredded_at=m["shredded_at"],
    )


_VERSION_COLUMNS = [c for c in versions.c if c.name != "ciphertext"]


def _version(row: sa.Row[tuple[object, ...]]) -> VersionMeta:
    m = row._mapping
    return VersionMeta(
        record_id=m["record_id"],
        version=m["version"],
        resource_type=m["resource_type"],
        content_sha256=bytes(m["content_sha256"]),
        ciphertext_sha256=bytes(m["ciphertext_sha256"]),
        ciphertext_size=m["ciphertext_size"],
        plaintext_size=m["plaintext_size"],
        provenance=Provenance(
            m["author_id"], m["author_address"], m["signed_at"], bytes(m["signature"])
        ),
        created_at=m["created_at"],
        key_generation=m["key_generation"],
        shredded=bool(m["shredded"]),
    )


def _key_rows(
    record_id: str, version: int, wrapped: Sequence[WrappedKey]
) -> list[dict[str, object]]:
    return [
        {
            "record_id": record_id,
            "version": version,
            "holder_id": k.holder_id,
            "wrapped": k.wrapped,
            "expires_at": k.expires_at,
        }
        for k in wrapped
    ]


class SqlRecordRepository:
    """The ``RecordRepository`` port on SQLite or PostgreSQL."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._outbox = OutboxWriter()

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    def _append(self, connection: sa.Connection, events: Sequence[DomainEvent]) -> None:
        if events:
            self._outbox.append(connection, [m for e in events for m in to_messages(e)])

    # -- accounts ---------------------------------------------------------------------

    def account(self, account_id: str) -> Account | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(accounts).where(accounts.c.account_id == account_id)
            ).first()
        if row is None:
            return None
        return Account(row.account_id, row.role, row.address, bytes(row.encryption_key_sha256))

    def save_account(self, account: Account) -> None:
        with self.engine.begin() as connection:
            save_account_on(connection, account)

    # -- records and versions ---------------------------------------------------------

    def record(self, record_id: str) -> RecordMeta | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(records).where(records.c.record_id == record_id))
            found = row.first()
        return _record(found) if found else None

    def records_of_patient(self, patient_id: str) -> list[RecordMeta]:
        query = (
            sa.select(records)
            .where(records.c.patient_id == patient_id)
            .order_by(records.c.created_at, records.c.record_id)
        )
        with self.engine.connect() as connection:
            return [_record(r) for r in connection.execute(query)]

    def _versions_query(self) -> sa.Select[tuple[object, ...]]:
        return sa.select(*_VERSION_COLUMNS, versions.c.ciphertext.is_(None).label("shredded"))

    def versions(self, record_id: str) -> list[VersionMeta]:
        query = (
            self._versions_query()
            .where(versions.c.record_id == record_id)
            .order_by(versions.c.version)
        )
        with self.engine.connect() as connection:
            return [_version(r) for r in connection.execute(query)]

    def version(self, record_id: str, version: int) -> VersionMeta | None:
        query = self._versions_query().where(
            versions.c.record_id == record_id, versions.c.version == version
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return _version(row) if row else None

    def ciphertext(self, record_id: str, version: int) -> bytes | None:
        query = sa.select(versions.c.ciphertext).where(
            versions.c.record_id == record_id, versions.c.version == version
        )
        with self.engine.connect() as connection:
            value = connection.execute(query).scalar_one_or_none()
        return bytes(value) if value is not None else None

    def wrapped_key(
        self, record_id: str, version: int, holder_id: str, now: float
    ) -> WrappedKey | None:
        query = sa.select(keys).where(
            keys.c.record_id == record_id,
            keys.c.version == version,
            keys.c.holder_id == holder_id,
            sa.or_(keys.c.expires_at.is_(None), keys.c.expires_at > now),
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return WrappedKey(row.holder_id, bytes(row.wrapped), row.expires_at) if row else None

    def add_version(self, upload: VersionUpload, now: float, events: Sequence[DomainEvent]) -> None:
        try:
            with self.engine.begin() as connection:
                if upload.version == 1:
                    connection.execute(
                        records.insert().values(
                            record_id=upload.record_id,
                            patient_id=upload.patient_id,
                            category=upload.category.value,
                            resource_type=upload.resource_type,
                            created_by=upload.provenance.author_id,
                            created_at=now,
                            latest_version=1,
                            shredded_at=None,
                        )
                    )
                else:
                    moved = connection.execute(
                        records.update()
                        .where(
                            records.c.record_id == upload.record_id,
                            records.c.latest_version == upload.version - 1,
                            records.c.shredded_at.is_(None),
                        )
                        .values(latest_version=upload.version, resource_type=upload.resource_type)
                    )
                    if moved.rowcount != 1:
                        raise RecordExists(
                            f"version {upload.version} exists", code="version_exists"
                        )
                prov = upload.provenance
                connection.execute(
                    versions.insert().values(
                        record_id=upload.record_id,
                        version=upload.version,
                        resource_type=upload.resource_type,
                        content_sha256=upload.content_sha256,
                        ciphertext_sha256=upload.ciphertext_sha256,
                        ciphertext_size=len(upload.ciphertext),
                        plaintext_size=upload.plaintext_size,
                        ciphertext=upload.ciphertext,
                        author_id=prov.author_id,
                        author_address=prov.author_address,
                        signed_at=prov.signed_at,
                        signature=prov.signature,
                        created_at=now,
                        key_generation=1,
                    )
                )
                connection.execute(
                    keys.insert(), _key_rows(upload.record_id, upload.version, upload.wrapped_keys)
                )
                self._append(connection, events)
        except sa.exc.IntegrityError as exc:  # the same upload committed concurrently
            raise RecordExists(f"record {upload.record_id} exists (replayed upload?)") from exc

    # -- keys -------------------------------------------------------------------------

    def put_keys(
        self, wrapped: Sequence[tuple[str, int, WrappedKey]], events: Sequence[DomainEvent]
    ) -> int:
        with self.engine.begin() as connection:
            self._put_keys_on(connection, wrapped)
            self._append(connection, events)
        return len(wrapped)

    def _put_keys_on(
        self, connection: sa.Connection, wrapped: Sequence[tuple[str, int, WrappedKey]]
    ) -> None:
        for record_id, version, key in wrapped:
            connection.execute(
                keys.delete().where(
                    keys.c.record_id == record_id,
                    keys.c.version == version,
                    keys.c.holder_id == key.holder_id,
                )
            )
            connection.execute(keys.insert(), _key_rows(record_id, version, [key]))

    def delete_keys(
        self,
        patient_id: str,
        holder_id: str,
        categories: int,
        announce: Callable[[int], Sequence[DomainEvent]],
    ) -> int:
        names = [c.value for c in Category if c.bit & categories]
        in_scope = sa.select(records.c.record_id).where(
            records.c.patient_id == patient_id, records.c.category.in_(names)
        )
        with self.engine.begin() as connection:
            result = connection.execute(
                keys.delete().where(keys.c.holder_id == holder_id, keys.c.record_id.in_(in_scope))
            )
            deleted = int(result.rowcount)
            self._append(connection, announce(deleted))
        return deleted

    def rotate(
        self,
        record_id: str,
        version: int,
        ciphertext: bytes,
        ciphertext_sha256: bytes,
        wrapped: Sequence[WrappedKey],
        announce: Callable[[int], Sequence[DomainEvent]],
    ) -> int:
        where = sa.and_(versions.c.record_id == record_id, versions.c.version == version)
        with self.engine.begin() as connection:
            generation = connection.execute(
                sa.select(versions.c.key_generation).where(where)
            ).scalar_one_or_none()
            if generation is None:
                raise RecordNotFound(f"record {record_id} has no version {version}")
            connection.execute(
                versions.update()
                .where(where)
                .values(
                    ciphertext=ciphertext,
                    ciphertext_sha256=ciphertext_sha256,
                    ciphertext_size=len(ciphertext),
                    key_generation=generation + 1,
                )
            )
            connection.execute(
                keys.delete().where(keys.c.record_id == record_id, keys.c.version == version)
            )
            connection.execute(keys.insert(), _key_rows(record_id, version, wrapped))
            self._append(connection, announce(int(generation) + 1))
        return int(generation) + 1

    def shred(
        self, record_id: str, now: float, announce: Callable[[int, int], Sequence[DomainEvent]]
    ) -> None:
        with self.engine.begin() as connection:
            destroyed = connection.execute(
                versions.update().where(versions.c.record_id == record_id).values(ciphertext=None)
            ).rowcount
            deleted = connection.execute(keys.delete().where(keys.c.record_id == record_id))
            connection.execute(
                records.update().where(records.c.record_id == record_id).values(shredded_at=now)
            )
            self._append(connection, announce(int(destroyed), int(deleted.rowcount)))

    def key_count(self, record_id: str) -> int:
        """How many wrapped keys the record has (tests, operations)."""
        query = sa.select(sa.func.count()).select_from(keys).where(keys.c.record_id == record_id)
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    # -- break-glass ------------------------------------------------------------------

    def escrow_keys(
        self, patient_id: str, categories: Sequence[Category]
    ) -> list[tuple[str, int, bytes]]:
        query = (
            sa.select(keys.c.record_id, keys.c.version, keys.c.wrapped)
            .join(records, records.c.record_id == keys.c.record_id)
            .where(
                records.c.patient_id == patient_id,
                records.c.shredded_at.is_(None),
                records.c.category.in_([c.value for c in categories]),
                keys.c.holder_id == ESCROW_HOLDER,
            )
            .order_by(keys.c.record_id, keys.c.version)
        )
        with self.engine.connect() as connection:
            return [(r.record_id, r.version, bytes(r.wrapped)) for r in connection.execute(query)]

    def open_break_glass(
        self,
        grant: BreakGlass,
        wrapped: Sequence[tuple[str, int, WrappedKey]],
        events: Sequence[DomainEvent],
    ) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                break_glass.insert().values(
                    break_glass_id=grant.break_glass_id,
                    provider_id=grant.provider_id,
                    patient_id=grant.patient_id,
                    justification=grant.justification,
                    categories=",".join(c.value for c in grant.categories),
                    created_at=grant.created_at,
                    expires_at=grant.expires_at,
                    keys_released=grant.keys_released,
                )
            )
            self._put_keys_on(connection, wrapped)
            self._append(connection, events)

    def active_break_glass(
        self, provider_id: str, patient_id: str, now: float
    ) -> BreakGlass | None:
        query = (
            sa.select(break_glass)
            .where(
                break_glass.c.provider_id == provider_id,
                break_glass.c.patient_id == patient_id,
                break_glass.c.expires_at > now,
            )
            .order_by(break_glass.c.expires_at.desc())
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        return BreakGlass(
            break_glass_id=row.break_glass_id,
            provider_id=row.provider_id,
            patient_id=row.patient_id,
            justification=row.justification,
            categories=tuple(Category(c) for c in row.categories.split(",") if c),
            created_at=row.created_at,
            expires_at=row.expires_at,
            keys_released=row.keys_released,
        )

    def record_events(self, events: Sequence[DomainEvent]) -> None:
        with self.engine.begin() as connection:
            self._append(connection, events)


def save_account_on(connection: sa.Connection, account: Account) -> None:
    """Upserts an account inside the caller's transaction (identity consumer)."""
    values = {
        "role": account.role,
        "address": account.address,
        "encryption_key_sha256": account.encryption_key_sha256,
    }
    updated = connection.execute(
        accounts.update().where(accounts.c.account_id == account.account_id).values(**values)
    )
    if updated.rowcount == 0:
        connection.execute(accounts.insert().values(account_id=account.account_id, **values))
