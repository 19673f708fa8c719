"""The saga tables: each saga's state per key, and the timer table used where the server cannot schedule."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, MetaData, PrimaryKeyConstraint, String, Table, Text

metadata = MetaData()

saga_table = Table(
    "eventwire_saga",
    metadata,
    Column("saga", String(100), nullable=False),
    Column("saga_key", String(255), nullable=False),
    Column("state", Text, nullable=False),  # JSON of the saga's state dataclass
    Column("timers", Text, nullable=False),  # JSON: armed timer name -> {"id": ..., "due_at_ms": ...}
    Column("correlation_id", String(200), nullable=False),
    Column("version", BigInteger, nullable=False),  # steps taken
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("saga", "saga_key"),
)
Index("ix_eventwire_saga_finished_at", saga_table.c.finished_at)

saga_timers_table = Table(
    "eventwire_saga_timers",
    metadata,
    Column("saga", String(100), nullable=False),
    Column("saga_key", String(255), nullable=False),
    Column("timer", String(100), nullable=False),
    Column("timer_id", String(64), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("saga", "saga_key", "timer"),
)
Index("ix_eventwire_saga_timers_due_at", saga_timers_table.c.saga, saga_timers_table.c.due_at)
