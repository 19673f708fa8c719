"""The inventory service: holds stock for orders and gives it back, each change once (the inbox).

Run it: ``eventwire run eventwire.demo.shop.inventory:app``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ... import App, Delivery, Publication
from ...inbox import Inbox
from ...outbox import Outbox
from .._fulfilment import ACK_WAIT, FULFILMENT, INVENTORY, STEP_RETRY, outbox_relay, unix_ms
from ..contracts.shop.inventory.v1.inventory_pb2 import (
    StockRejected,
    StockReleased,
    StockReleaseRequested,
    StockReservationRequested,
    StockReserved,
)
from ._settings import INITIAL_STOCK, open_database


class WarehouseUnavailable(Exception):
    """The (simulated) warehouse did not answer in time; the event is retried."""


metadata = MetaData()
stock_table = Table(
    "shop_stock",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("available", Integer, nullable=False),
)
reservations_table = Table(
    "shop_reservations",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("lines", Text, nullable=False),  # JSON list of {"sku", "quantity"}
    Column("status", String(16), nullable=False),  # reserved → released, or rejected
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


async def stock_up(sessions: async_sessionmaker[AsyncSession], stock: dict[str, int] = INITIAL_STOCK) -> None:
    """Put the initial stock on the shelves of an empty inventory."""
    async with sessions() as session, session.begin():
        if (await session.execute(select(stock_table.c.sku).limit(1))).first() is None:
            await session.execute(insert(stock_table), [{"sku": s, "available": n} for s, n in stock.items()])


def inventory_service(sessions: async_sessionmaker[AsyncSession] | None = None, *, url: str | None = None) -> App:
    outbox = Outbox(source="/services/inventory")
    relays: list[Any] = [] if sessions is None else [outbox_relay(sessions)]
    app = App(
        "inventory",
        streams=[FULFILMENT, INVENTORY],
        publishes=[
            Publication(StockReserved, "inventory.reserved"),
            Publication(StockRejected, "inventory.rejected"),
            Publication(StockReleased, "inventory.released"),
        ],
        url=url,
        middleware=[] if sessions is None else [Inbox(sessions)],
        relays=relays,
    )

    tried: set[str] = set()

    @app.handler(
        StockReservationRequested,
        StockReleaseRequested,
        stream=FULFILMENT,
        subject="fulfilment.stock.>",
        concurrency=8,
        ordered_by="key",
        retry=STEP_RETRY,
        ack_wait=ACK_WAIT,
    )
    async def reserve_or_release(
        request: StockReservationRequested | StockReleaseRequested, delivery: Delivery
    ) -> None:
        session: AsyncSession = delivery.session
        order_id = request.order_id
        if isinstance(request, StockReservationRequested) and delivery.envelope.id not in tried:
            tried.add(delivery.envelope.id)
            if len(tried) % 25 == 0:
                # One reservation in 25 meets a warehouse timeout on its first try, and is retried.
                raise WarehouseUnavailable(f"the warehouse timed out on {order_id}")
        held = (
            await session.execute(
                select(reservations_table.c.lines, reservations_table.c.status)
                .where(reservations_table.c.order_id == order_id)
                .with_for_update()
            )
        ).first()
        now = datetime.now(UTC)
        if isinstance(request, StockReleaseRequested):
            if held is None or held.status != "reserved":
                return  # nothing held (rejected), or given back already
            for line in json.loads(held.lines):
                await session.execute(
                    update(stock_table)
                    .where(stock_table.c.sku == line["sku"])
                    .values(available=stock_table.c.available + line["quantity"])
                )
            await session.execute(
                update(reservations_table)
                .where(reservations_table.c.order_id == order_id)
                .values(status="released", updated_at=now)
            )
            released = StockReleased(order_id=order_id, reservation_id=f"rsv-{order_id}", released_at_ms=unix_ms(now))
            await outbox.add(session, released, subject="inventory.released", key=order_id)
            return
        if held is not None:
            return  # answered already (reserved or rejected): the answer went out with it
        lines = [{"sku": line.sku, "quantity": line.quantity} for line in request.lines]
        wanted: dict[str, int] = {}
        for line in request.lines:
            wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
        shelves = await session.execute(
            select(stock_table.c.sku, stock_table.c.available).where(stock_table.c.sku.in_(wanted)).with_for_update()
        )
        available: dict[str, int] = {sku: int(count) for sku, count in shelves.tuples().all()}
        short = next((sku for sku, quantity in wanted.items() if available.get(sku, 0) < quantity), None)
        status = "rejected" if short is not None else "reserved"
        await session.execute(
            insert(reservations_table).values(order_id=order_id, lines=json.dumps(lines), status=status, updated_at=now)
        )
        if short is not None:
            rejected = StockRejected(order_id=order_id, sku=short, reason="out of stock")
            await outbox.add(session, rejected, subject="inventory.rejected", key=order_id)
            return
        for sku, quantity in wanted.items():
            await session.execute(
                update(stock_table).where(stock_table.c.sku == sku).values(available=stock_table.c.available - quantity)
            )
        reserved = StockReserved(order_id=order_id, reservation_id=f"rsv-{order_id}", reserved_at_ms=unix_ms(now))
        await outbox.add(session, reserved, subject="inventory.reserved", key=order_id)

    return app


def _from_environment() -> App:
    _, sessions = open_database("inventory")
    return inventory_service(sessions)


app = _from_environment()
