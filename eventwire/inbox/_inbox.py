"""The inbox middleware: one database transaction per delivery, opened with the claim of its event id."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, PrimaryKeyConstraint, String, Table, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .._delivery import Delivery, Next
from .._errors import ConfigError
from .._outcome import Outcome

logger = logging.getLogger("eventwire.inbox")

metadata = MetaData()
inbox_table = Table(
    "eventwire_inbox",
    metadata,
    Column("handler", String(200), nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, index=True),
    PrimaryKeyConstraint("handler", "event_id"),
)


async def create_tables(engine: AsyncEngine) -> None:
    """Create the inbox table if it is missing."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


async def claim_event(session: AsyncSession, handler: str, event_id: str) -> bool:
    """Record that ``handler`` processed ``event_id`` in the session's transaction; False if it already had
    (after waiting for a concurrent claim to commit)."""
    dialect = session.bind.dialect.name if session.bind is not None else ""
    values = {"handler": handler, "event_id": event_id, "processed_at": datetime.now(UTC)}
    statement: Any
    if dialect == "postgresql":
        statement = postgresql.insert(inbox_table).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(inbox_table).values(**values).on_conflict_do_nothing()
    else:
        raise ConfigError(f"the inbox supports PostgreSQL and SQLite, not {dialect!r}")
    result = await session.execute(statement.returning(inbox_table.c.event_id))
    return result.first() is not None


class Inbox:
    """Middleware giving each delivery a session whose transaction also records the event id.

    ``App(..., middleware=[inbox])``; the handler uses ``delivery.session``.
    When the handler returns, the transaction commits (effects and record
    together); when it raises, or a step inside returns an outcome other than
    ack, it rolls back (neither). An event id already
    recorded for the handler means its effects exist: the delivery is acked
    without calling the handler. Records older than ``retention`` are pruned.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, retention: float = 7 * 24 * 3600.0) -> None:
        if retention <= 0:
            raise ConfigError("Inbox.retention must be positive")
        self._sessions = sessions
        self._retention = retention
        self._last_prune = 0.0
        self._pruning: asyncio.Task[int] | None = None
        self.skipped = 0

    def __call__(self, next_step: Next) -> Next:
        async def with_inbox(delivery: Delivery) -> Outcome | None:
            async with self._sessions() as session, session.begin() as transaction:
                if not await claim_event(session, delivery.handler, delivery.envelope.id):
                    self.skipped += 1
                    if logger.isEnabledFor(logging.DEBUG):
                        logger.debug("already processed by %s: %s", delivery.handler, delivery.envelope.id)
                    return None
                delivery.session = session
                try:
                    outcome = await next_step(delivery)
                finally:
                    delivery.session = None
                if outcome is not None and outcome.kind != "ack":
                    # Not handled: neither its effects nor its record may stay.
                    await transaction.rollback()
            self._maybe_prune()
            return outcome

        return with_inbox

    def _maybe_prune(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_prune < min(3600.0, self._retention / 10):
            return
        if self._pruning is not None and not self._pruning.done():
            return
        self._last_prune = loop.time()
        self._pruning = asyncio.create_task(self.prune(), name="eventwire-inbox-prune")

    async def prune(self) -> int:
        """Delete records older than ``retention``; return how many."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self._retention)
        async with self._sessions() as session, session.begin():
            result = await session.execute(delete(inbox_table).where(inbox_table.c.processed_at < cutoff))
        return int(getattr(result, "rowcount", 0) or 0)
