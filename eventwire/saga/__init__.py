"""Sagas (process managers): state per key in SQL, moved by events and timers, one transaction per step.

See docs/sagas.md. Plain SQL for migration tools: ``schema.sql`` in this package.
"""

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from ._saga import Saga, SagaNotStarted, SagaStep, TimerMode
from ._tables import metadata, saga_table, saga_timers_table
from .contracts.eventwire.saga.v1.saga_pb2 import SagaTimerFired

SCHEMA_SQL = Path(__file__).with_name("schema.sql")


async def create_tables(engine: AsyncEngine) -> None:
    """Create the saga tables if they are missing (the inbox and outbox have their own ``create_tables``)."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


__all__ = [
    "SCHEMA_SQL",
    "Saga",
    "SagaNotStarted",
    "SagaStep",
    "SagaTimerFired",
    "TimerMode",
    "create_tables",
    "metadata",
    "saga_table",
    "saga_timers_table",
]
