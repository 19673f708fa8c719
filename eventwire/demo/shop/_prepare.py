"""Each service's tables (eventwire's and its own), and the inventory's first stock."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from ._settings import create_tables
from .inventory import metadata as inventory_metadata
from .inventory import stock_up
from .notifications import metadata as notifications_metadata
from .orders import metadata as orders_metadata
from .payments import metadata as payments_metadata

BUSINESS: dict[str, MetaData | None] = {
    "orders": orders_metadata,
    "inventory": inventory_metadata,
    "payments": payments_metadata,
    "fulfilment": None,  # the saga's tables are eventwire's
    "notifications": notifications_metadata,
}


async def prepare(service: str, engine: AsyncEngine) -> None:
    """Create what ``service`` needs in ``engine`` where missing; stock an empty inventory."""
    await create_tables(engine, BUSINESS[service])
    if service == "inventory":
        await stock_up(async_sessionmaker(engine))
