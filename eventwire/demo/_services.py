"""The demo shop: three services, each its own App, talking only through JetStream."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from .. import App, Backoff, Delivery, Publication, RetryPolicy, Stream
from .contracts.shop.inventory.v1.inventory_pb2 import StockRejected, StockReserved
from .contracts.shop.orders.v1.orders_pb2 import OrderCreated

ORDERS = Stream("ORDERS", ("orders.>",), description="Orders placed by customers")
INVENTORY = Stream("INVENTORY", ("inventory.>",), description="Stock reservations")

# The stock the demo starts with: plums run out, so some orders are rejected.
INITIAL_STOCK = {"sku-apple": 1_000_000, "sku-pear": 1_000_000, "sku-plum": 100}


class WarehouseUnavailable(Exception):
    """The (simulated) warehouse API timed out; the event is retried."""


@dataclass
class DemoState:
    """What the services saw, for the summary; only events of ``run_id`` count."""

    run_id: str
    orders: int
    all_notified: asyncio.Event = field(default_factory=asyncio.Event)
    handled: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    notified: set[str] = field(default_factory=set)
    stock: dict[str, int] = field(default_factory=lambda: dict(INITIAL_STOCK))
    flaky_every: int = 25

    def ours(self, order_id: str) -> bool:
        return order_id.startswith(self.run_id + "-")


def orders_service(url: str | None = None) -> App:
    """Publishes OrderCreated; it has no handlers."""
    return App("orders", streams=[ORDERS], publishes=[Publication(OrderCreated, "orders.created")], url=url)


def inventory_service(url: str | None = None, state: DemoState | None = None) -> App:
    """Reserves stock for each order; publishes StockReserved or StockRejected.

    ``url`` and ``state`` may be left out where the App is only described (``eventwire asyncapi``).
    """
    if state is None:
        state = DemoState(run_id="", orders=0)
    app = App(
        "inventory",
        streams=[ORDERS, INVENTORY],
        publishes=[Publication(StockReserved, "inventory.reserved"), Publication(StockRejected, "inventory.rejected")],
        url=url,
    )

    @app.handler(
        OrderCreated,
        stream=ORDERS,
        subject="orders.created",
        durable="svc-inventory",
        concurrency=4,
        retry=RetryPolicy(backoff=Backoff(initial=0.1, maximum=1.0)),
    )
    async def reserve_stock(order: OrderCreated, delivery: Delivery) -> None:
        if not state.ours(order.order_id):
            return
        number = int(order.order_id.rsplit("-", 1)[1])
        if delivery.delivery_count == 1 and number % state.flaky_every == 0:
            raise WarehouseUnavailable(f"warehouse timed out reserving {order.order_id}")
        short = next((i for i in order.items if state.stock.get(i.sku, 0) < i.quantity), None)
        if short is None:
            for item in order.items:
                state.stock[item.sku] -= item.quantity
            await delivery.publish(
                StockReserved(
                    order_id=order.order_id, reservation_id=f"rsv-{order.order_id}", reserved_at_ms=order.created_at_ms
                ),
                subject="inventory.reserved",
                key=order.order_id,
                msg_id=f"rsv-{order.order_id}",
            )
        else:
            await delivery.publish(
                StockRejected(order_id=order.order_id, sku=short.sku, reason="out of stock"),
                subject="inventory.rejected",
                key=order.order_id,
                msg_id=f"rej-{order.order_id}",
            )
        state.handled["inventory"] += 1

    return app


def notifications_service(url: str | None = None, state: DemoState | None = None) -> App:
    """Tells the customer whether their order's stock was reserved (``state`` as for the inventory)."""
    if state is None:
        state = DemoState(run_id="", orders=0)
    app = App("notifications", streams=[INVENTORY], url=url)

    @app.handler(
        StockReserved,
        StockRejected,
        stream=INVENTORY,
        subject="inventory.>",
        durable="svc-notifications",
        concurrency=4,
    )
    async def notify_customer(event: StockReserved | StockRejected) -> None:
        if not state.ours(event.order_id):
            return
        state.outcomes[type(event).__name__] += 1
        state.notified.add(event.order_id)
        state.handled["notifications"] += 1
        if len(state.notified) == state.orders:
            state.all_notified.set()

    return app
