"""Tables the consumer runner keeps in each consuming service's own database.

Both live in ``processed_metadata``, so ``create_processed_events_table`` creates the
quarantine beside the processed-event markers and no service has to know about it.
"""

from __future__ import annotations

import sqlalchemy as sa

processed_metadata = sa.MetaData()

MAX_EVENT_ID_CHARS = 200
MAX_ERROR_TYPE_CHARS = 200
MAX_ERROR_MESSAGE_CHARS = 1000

processed_events_table = sa.Table(
    "bus_processed_events",
    processed_metadata,
    sa.Column("consumer", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(MAX_EVENT_ID_CHARS), primary_key=True),
    sa.Column("topic", sa.String(249), nullable=False),
    sa.Column("partition", sa.Integer(), nullable=False),
    sa.Column("offset", sa.BigInteger(), nullable=False),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
)

quarantined_events_table = sa.Table(
    "bus_quarantined_events",
    processed_metadata,
    # The same key as the processed marker written in the same transaction: one
    # quarantine row per event and consumer, however often the record is delivered.
    sa.Column("consumer", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(MAX_EVENT_ID_CHARS), primary_key=True),
    sa.Column("topic", sa.String(249), nullable=False),
    sa.Column("partition", sa.Integer(), nullable=False),
    sa.Column("offset", sa.BigInteger(), nullable=False),
    sa.Column("error_type", sa.String(MAX_ERROR_TYPE_CHARS), nullable=False),
    sa.Column("error_message", sa.String(MAX_ERROR_MESSAGE_CHARS), nullable=False),
    sa.Column("value", sa.LargeBinary(), nullable=True),  # None when over the size kept
    sa.Column("value_size", sa.BigInteger(), nullable=False),
    sa.Column("value_sha256", sa.String(64), nullable=False),
    sa.Column("headers", sa.Text(), nullable=True),  # JSON; None when over the size kept
    sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
)


def create_processed_events_table(engine: sa.Engine) -> None:
    """Creates the processed-event markers and the quarantine (idempotent)."""
    processed_metadata.create_all(engine)
