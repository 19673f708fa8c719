"""What the shop's services read from the environment, and each service's database."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from ..._errors import ConfigError
from ...inbox import metadata as inbox_metadata
from ...outbox import metadata as outbox_metadata
from ...saga import metadata as saga_metadata

# The stock the shop starts with: plums run short, so some orders are rejected.
INITIAL_STOCK = {"sku-apple": 100_000, "sku-pear": 100_000, "sku-plum": 150}


def setting(name: str, default: float) -> float:
    """``SHOP_<NAME>`` as a number, or one line naming the variable."""
    raw = os.environ.get(f"SHOP_{name}")
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"SHOP_{name}={raw!r} is not a number") from None


def database_url(service: str) -> str:
    """``SHOP_DB_<SERVICE>``, else an SQLite file of the service's in ``SHOP_DATA`` (default ``./shop-data``)."""
    url = os.environ.get(f"SHOP_DB_{service.upper()}")
    if url:
        return url
    return f"sqlite+aiosqlite:///{Path(os.environ.get('SHOP_DATA', 'shop-data')) / service}.db"


def database_engine(url: str, schema: str | None = None) -> AsyncEngine:
    """An engine on ``url``; on PostgreSQL ``schema`` is the connections' search path (a service's own tables)."""
    if schema and not url.startswith("postgresql+asyncpg://"):
        raise ConfigError(f"schema {schema!r}: a schema needs PostgreSQL through asyncpg (postgresql+asyncpg://)")
    engine = create_async_engine(url, connect_args={"server_settings": {"search_path": schema}} if schema else {})
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def open_database(service: str) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    """The service's engine: ``SHOP_DB_<SERVICE>`` (in schema ``SHOP_SCHEMA_<SERVICE>``), else SQLite."""
    engine = database_engine(database_url(service), os.environ.get(f"SHOP_SCHEMA_{service.upper()}") or None)
    return engine, async_sessionmaker(engine, expire_on_commit=False)


def _sqlite_pragmas(connection: Any, _: Any) -> None:
    # WAL: readers (the HTTP API, the relay) do not block the writer; a patient wait for the write lock.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


async def create_tables(engine: AsyncEngine, business: MetaData | None = None) -> None:
    """eventwire's tables (outbox, inbox, saga) and the service's own, where missing."""
    if engine.dialect.name == "sqlite" and engine.url.database:
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    async with engine.begin() as conn:
        for metadata in (outbox_metadata, inbox_metadata, saga_metadata, business):
            if metadata is not None:
                await conn.run_sync(metadata.create_all)
