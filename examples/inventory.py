"""A small inventory service, used by docs/testing.md: reserve stock for each order."""

from __future__ import annotations

from eventwire import App, Backoff, Delivery, Publication, RetryPolicy, Stream
from eventwire.demo.contracts.shop.inventory.v1.inventory_pb2 import StockRejected, StockReserved
from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import OrderCreated

ORDERS = Stream("ORDERS", ("orders.>",))
INVENTORY = Stream("INVENTORY", ("inventory.>",))


class WarehouseDown(Exception):
    """The warehouse API is unreachable; the order is retried later."""


def build_app(stock: dict[str, int], warehouse_up: list[bool] | None = None) -> App:
    app = App(
        "inventory",
        streams=[ORDERS, INVENTORY],
        publishes=[Publication(StockReserved, "inventory.reserved"), Publication(StockRejected, "inventory.rejected")],
    )

    @app.handler(
        OrderCreated,
        stream=ORDERS,
        subject="orders.created",
        retry=RetryPolicy(backoff=Backoff(initial=5.0, jitter=0)),
    )
    async def reserve_stock(order: OrderCreated, delivery: Delivery) -> None:
        if warehouse_up is not None and not warehouse_up.pop(0):
            raise WarehouseDown(order.order_id)
        short = [item.sku for item in order.items if stock.get(item.sku, 0) < item.quantity]
        if short:
            rejected = StockRejected(order_id=order.order_id, sku=short[0], reason="out of stock")
            await delivery.publish(rejected, subject="inventory.rejected", key=order.order_id)
            return
        for item in order.items:
            stock[item.sku] -= item.quantity
        reserved = StockReserved(order_id=order.order_id, reservation_id=f"rsv-{order.order_id}")
        await delivery.publish(
            reserved, subject="inventory.reserved", key=order.order_id, msg_id=f"rsv-{order.order_id}"
        )

    return app
