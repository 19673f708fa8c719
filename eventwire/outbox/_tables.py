"""The outbox tables (plain SQL for migration tools: ``schema.sql`` beside this file)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, LargeBinary, MetaData, String, Table, Text, text

metadata = MetaData()

outbox_table = Table(
    "eventwire_outbox",
    metadata,
    Column("id", String(200), primary_key=True),  # the event's Nats-Msg-Id: a republish is deduplicated
    # Rows of one key are published in key_seq order; keyless rows use their id as key.
    Column("event_key", String(255), nullable=False),
    Column("key_seq", BigInteger, nullable=False),
    Column("subject", String(255), nullable=False),
    Column("headers", Text, nullable=False),  # JSON object
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
)
Index(
    "ix_eventwire_outbox_pending",
    outbox_table.c.event_key,
    outbox_table.c.key_seq,
    postgresql_where=text("sent_at IS NULL"),
    sqlite_where=text("sent_at IS NULL"),
)
Index("ix_eventwire_outbox_sent_at", outbox_table.c.sent_at)

# One row per key: updating it inside the business transaction serialises the writers of a key,
# so key_seq follows commit order (serial ids do not, under concurrent transactions).
outbox_keys_table = Table(
    "eventwire_outbox_keys",
    metadata,
    Column("event_key", String(255), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
)
