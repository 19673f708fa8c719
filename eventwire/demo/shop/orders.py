"""The orders service: an HTTP API that takes orders, and the orders' state as the saga decides it.

``POST /orders`` writes the order and its ``OrderCreated`` in one transaction (the outbox);
``GET /orders/{id}`` shows where it stands; ``GET /orders`` counts orders by status.
Run it: ``eventwire run eventwire.demo.shop.orders:app`` (``SHOP_HTTP_PORT``, default 8080).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, Text, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ... import App, Delivery, Publication
from ..._ids import uuid7
from ...inbox import Inbox
from ...outbox import Outbox
from .._fulfilment import ACK_WAIT, FULFILMENT, ORDERS, outbox_relay, unix_ms
from ..contracts.shop.orders.v1.orders_pb2 import LineItem, OrderCancelled, OrderConfirmed, OrderCreated
from ._http import HttpApi
from ._settings import open_database, setting

PRICES_CENTS = {"sku-apple": 120, "sku-pear": 150, "sku-plum": 300}
_ORDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

metadata = MetaData()
orders_table = Table(
    "shop_orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("items", Text, nullable=False),  # JSON list of {"sku", "quantity"}
    Column("total_cents", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # pending → confirmed | cancelled
    Column("reason", Text, nullable=False, default=""),
    Column("payment_id", String(64), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


class Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_order(body: Any) -> tuple[str, str, list[tuple[str, int]]]:
    """The order id, customer and lines of a request body, or :class:`Invalid` naming the field."""
    if not isinstance(body, dict):
        raise Invalid("body", "must be a JSON object")
    order_id = body.get("order_id", uuid7())
    if not isinstance(order_id, str) or not _ORDER_ID.match(order_id):
        raise Invalid("order_id", "must be 1-64 letters, digits, '-' or '_'")
    customer = body.get("customer_id")
    if not isinstance(customer, str) or not 0 < len(customer) <= 64:
        raise Invalid("customer_id", "is required: a string of up to 64 characters")
    items = body.get("items")
    if not isinstance(items, list) or not 0 < len(items) <= 20:
        raise Invalid("items", "is required: a list of 1-20 items")
    lines = []
    for number, item in enumerate(items):
        if not isinstance(item, dict):
            raise Invalid(f"items[{number}]", "must be an object with sku and quantity")
        sku, quantity = item.get("sku"), item.get("quantity")
        if sku not in PRICES_CENTS:
            raise Invalid(f"items[{number}].sku", f"must be one of {', '.join(sorted(PRICES_CENTS))}")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= 100:
            raise Invalid(f"items[{number}].quantity", "must be a whole number from 1 to 100")
        lines.append((sku, quantity))
    return order_id, customer, lines


def _shown(row: Any) -> dict[str, Any]:
    return {
        "order_id": row.order_id,
        "customer_id": row.customer_id,
        "items": json.loads(row.items),
        "total_cents": row.total_cents,
        "status": row.status,
        "reason": row.reason,
        "payment_id": row.payment_id,
    }


def orders_api(sessions: async_sessionmaker[AsyncSession], outbox: Outbox) -> Starlette:
    async def place(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        try:
            order_id, customer, lines = parse_order(body)
        except Invalid as exc:
            return JSONResponse({"error": str(exc), "field": exc.field}, status_code=422)
        total = sum(PRICES_CENTS[sku] * quantity for sku, quantity in lines)
        now = datetime.now(UTC)
        async with sessions() as session, session.begin():
            existing = (await session.execute(select(orders_table).where(orders_table.c.order_id == order_id))).first()
            if existing is not None:
                return JSONResponse(_shown(existing))  # the same order sent again (a retry): nothing new
            items = [{"sku": sku, "quantity": quantity} for sku, quantity in lines]
            await session.execute(
                orders_table.insert().values(
                    order_id=order_id, customer_id=customer, items=json.dumps(items), total_cents=total,
                    status="pending", reason="", payment_id="", created_at=now, updated_at=now,
                )
            )  # fmt: skip
            created = OrderCreated(
                order_id=order_id,
                customer_id=customer,
                items=[LineItem(sku=sku, quantity=quantity) for sku, quantity in lines],
                total_cents=total,
                created_at_ms=unix_ms(now),
            )
            await outbox.add(session, created, subject="orders.created", key=order_id, msg_id=f"ord-{order_id}")
        return JSONResponse({"order_id": order_id, "status": "pending", "total_cents": total}, status_code=201)

    async def show(request: Request) -> JSONResponse:
        order_id = request.path_params["order_id"]
        async with sessions() as session:
            row = (await session.execute(select(orders_table).where(orders_table.c.order_id == order_id))).first()
        if row is None:
            return JSONResponse({"error": f"no order {order_id}"}, status_code=404)
        return JSONResponse(_shown(row))

    async def counts(_: Request) -> JSONResponse:
        async with sessions() as session:
            rows = await session.execute(select(orders_table.c.status, func.count()).group_by(orders_table.c.status))
        return JSONResponse({status: count for status, count in rows.all()})

    return Starlette(
        routes=[
            Route("/orders", place, methods=["POST"]),
            Route("/orders", counts, methods=["GET"]),
            Route("/orders/{order_id}", show, methods=["GET"]),
        ]
    )


def orders_service(
    sessions: async_sessionmaker[AsyncSession] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    url: str | None = None,
) -> App:
    """The orders App; without ``sessions`` only described (``eventwire asyncapi``, ``topology``)."""
    relays: list[Any] = []
    middleware: list[Any] = []
    if sessions is not None:
        outbox = Outbox(source="/services/orders")
        middleware.append(Inbox(sessions))
        api = HttpApi(orders_api(sessions, outbox), host=host, port=port)
        relays += [outbox_relay(sessions), api]
    app = App(
        "orders",
        streams=[ORDERS, FULFILMENT],
        publishes=[Publication(OrderCreated, "orders.created")],
        url=url,
        middleware=middleware,
        relays=relays,
    )

    @app.handler(
        OrderConfirmed,
        OrderCancelled,
        stream=FULFILMENT,
        subject="fulfilment.order.>",
        concurrency=8,
        ack_wait=ACK_WAIT,
    )
    async def order_settled(outcome: OrderConfirmed | OrderCancelled, delivery: Delivery) -> None:
        if isinstance(outcome, OrderConfirmed):
            values = {"status": "confirmed", "payment_id": outcome.payment_id}
        else:
            values = {"status": "cancelled", "reason": outcome.reason}
        await delivery.session.execute(
            update(orders_table)
            .where(orders_table.c.order_id == outcome.order_id, orders_table.c.status == "pending")
            .values(updated_at=datetime.now(UTC), **values)
        )

    return app


def _from_environment() -> App:
    _, sessions = open_database("orders")
    return orders_service(sessions, port=int(setting("HTTP_PORT", 8080)))


app = _from_environment()
