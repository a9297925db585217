"""The real PostgreSQL server started by the stack."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from devstack.stack import Stack
from psycopg import sql

pytestmark = pytest.mark.postgres


def test_schema_and_rows_round_trip(postgres_stack: Stack) -> None:
    schema = f"roundtrip_{uuid.uuid4().hex[:8]}"
    rows = [(i, f"patient-{i}", bytes([i]) * 32) for i in range(50)]
    with psycopg.connect(postgres_stack.postgres.dsn()) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        table = sql.Identifier(schema, "events")
        conn.execute(
            sql.SQL("CREATE TABLE {} (seq int PRIMARY KEY, subject text, digest bytea)").format(
                table
            )
        )
        with conn.cursor() as cur:
            cur.executemany(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(table), rows)
    # A new connection sees exactly what the committed transaction wrote.
    with psycopg.connect(postgres_stack.postgres.dsn()) as conn:
        table = sql.Identifier(schema, "events")
        fetched = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY seq").format(table)).fetchall()
        assert fetched == rows
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_a_password_is_required(postgres_stack: Stack) -> None:
    dsn = postgres_stack.postgres.dsn()
    wrong = dsn.replace("://ehr:", "://ehr:not-the-password", 1)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5)
