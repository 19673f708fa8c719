"""Transactional outbox: write a business change and its event in one transaction, publish after commit.

See docs/outbox-inbox.md. Plain SQL for migration tools: ``schema.sql`` in this package.
"""

from pathlib import Path

from ._outbox import NOTIFY_CHANNEL, Outbox, OutboxRelay, create_tables
from ._tables import metadata, outbox_keys_table, outbox_table

SCHEMA_SQL = Path(__file__).with_name("schema.sql")

__all__ = [
    "NOTIFY_CHANNEL",
    "SCHEMA_SQL",
    "Outbox",
    "OutboxRelay",
    "create_tables",
    "metadata",
    "outbox_keys_table",
    "outbox_table",
]
