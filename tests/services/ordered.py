"""A service whose handler orders events by key: refused with --workers > 1."""

from __future__ import annotations

from eventwire import App, Stream
from tests.events import OrderCreated

app = App("ordered")


@app.handler(OrderCreated, stream=Stream("ORDERED", ("ordered.>",)), ordered_by="key")
async def handle(order: OrderCreated) -> None:
    del order
