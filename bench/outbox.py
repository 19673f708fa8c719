"""Outbox → stream: how fast a relay publishes committed outbox rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from eventwire import Stream
from eventwire.outbox import Outbox, OutboxRelay, create_tables, metadata

from ._common import STREAM, SUBJECT, connect_transport, event, reset_stream, timed

POSTGRES = os.environ.get("EVENTWIRE_BENCH_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


async def engine_for(kind: str, folder: Path) -> AsyncEngine | None:
    """A fresh outbox database, or None when PostgreSQL cannot be reached."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{folder / 'outbox.db'}" if kind == "sqlite" else POSTGRES)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
    except OSError:
        await engine.dispose()
        return None
    await create_tables(engine)
    return engine


async def relay_rate(url: str, kind: str, count: int, fast_path: bool = False) -> float | None:
    """Rows per second a relay moves from the outbox table to the stream (rows committed beforehand, 64 keys).

    ``fast_path``: the stream takes fast-ingest batches, so the relay sends them that way.
    """
    with tempfile.TemporaryDirectory() as folder:
        engine = await engine_for(kind, Path(folder))
        if engine is None:
            return None
        try:
            sessions = async_sessionmaker(engine, expire_on_commit=False)
            outbox = Outbox(source="/bench")
            for start in range(0, count, 100):
                async with sessions() as session, session.begin():
                    for number in range(start, min(count, start + 100)):
                        await outbox.add(session, event(number), subject=SUBJECT, key=f"k{number % 64}")
            await reset_stream(url)
            transport = await connect_transport(url)
            await transport.ensure_stream(Stream(STREAM, ("bench.>",), allow_batched=fast_path))
            relay = OutboxRelay(engine, batch_size=1000)

            async def drain() -> None:
                while await relay.relay_once(transport):
                    pass

            try:
                return count / await timed(drain)
            finally:
                await transport.close()
        finally:
            await engine.dispose()
