"""The notifications service: tells each customer once how their order ended (the inbox).

Run it: ``eventwire run eventwire.demo.shop.notifications:app``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ... import App, Delivery
from ...inbox import Inbox
from .._fulfilment import ACK_WAIT, FULFILMENT
from ..contracts.shop.orders.v1.orders_pb2 import OrderCancelled, OrderConfirmed
from ._settings import open_database

metadata = MetaData()
notifications_table = Table(
    "shop_notifications",
    metadata,
    Column("order_id", String(64), primary_key=True),  # one message per order: a second would fail loudly
    Column("kind", String(16), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=False),
)


def notifications_service(sessions: async_sessionmaker[AsyncSession] | None = None, *, url: str | None = None) -> App:
    app = App("notifications", streams=[FULFILMENT], url=url, middleware=[] if sessions is None else [Inbox(sessions)])

    @app.handler(
        OrderConfirmed,
        OrderCancelled,
        stream=FULFILMENT,
        subject="fulfilment.order.>",
        concurrency=8,
        ack_wait=ACK_WAIT,
    )
    async def tell_customer(outcome: OrderConfirmed | OrderCancelled, delivery: Delivery) -> None:
        kind = "confirmed" if isinstance(outcome, OrderConfirmed) else "cancelled"
        await delivery.session.execute(
            insert(notifications_table).values(order_id=outcome.order_id, kind=kind, sent_at=datetime.now(UTC))
        )

    return app


def _from_environment() -> App:
    _, sessions = open_database("notifications")
    return notifications_service(sessions)


app = _from_environment()
