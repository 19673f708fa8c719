"""The App ``bench.workers`` runs with ``eventwire run --workers N``: it takes the prefilled orders and does nothing."""

from __future__ import annotations

from eventwire import App, Stream
from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import OrderCreated

from ._common import MAX_ACK_PENDING, STREAM

app = App("benchworkers", dead_letters=False)


@app.handler(OrderCreated, stream=Stream(STREAM, ("bench.>",)), durable="workers", max_ack_pending=MAX_ACK_PENDING)
async def on_order(order: OrderCreated) -> None:
    del order
