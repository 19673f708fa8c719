"""docs/testing.md: one service, tested on the memory broker and on a real JetStream server."""

from __future__ import annotations

import pytest

from eventwire.testing import running
from eventwire.transport import ConnectOptions, JetStreamTransport
from examples.inventory import build_app

from .events import LineItem, OrderCreated, StockRejected, StockReserved

ORDER = OrderCreated(order_id="o-1", items=[LineItem(sku="apple", quantity=2)])


@pytest.mark.virtual_time
async def test_reserves_stock_in_memory() -> None:
    stock = {"apple": 3}
    async with running(build_app(stock)) as probe:
        settlements = await probe.publish(ORDER, subject="orders.created")
    assert [s.outcome for s in settlements] == ["ack"]
    assert probe.published_events(StockReserved) == [StockReserved(order_id="o-1", reservation_id="rsv-o-1")]
    assert stock == {"apple": 1}


@pytest.mark.virtual_time
async def test_warehouse_outage_is_retried_in_memory() -> None:
    stock = {"apple": 3}
    async with running(build_app(stock, warehouse_up=[False, False, True])) as probe:
        settlements = await probe.publish(ORDER, subject="orders.created", timeout=60)
    assert [(s.outcome, s.delay) for s in settlements] == [("nak", 5.0), ("nak", 10.0), ("ack", None)]
    assert len(probe.published_events(StockReserved)) == 1


@pytest.mark.virtual_time
async def test_rejects_when_out_of_stock_in_memory() -> None:
    async with running(build_app({"apple": 1})) as probe:
        await probe.publish(ORDER, subject="orders.created")
    assert probe.published_events(StockRejected)[0].reason == "out of stock"


async def test_reserves_stock_on_jetstream(jetstream_url: str) -> None:
    stock = {"apple": 3}
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_url))
    async with running(build_app(stock), transport) as probe:
        settlements = await probe.publish(ORDER, subject="orders.created")
    assert [s.outcome for s in settlements] == ["ack"]
    assert probe.published_events(StockReserved) == [StockReserved(order_id="o-1", reservation_id="rsv-o-1")]
    assert stock == {"apple": 1}
