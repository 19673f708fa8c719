"""A Node.js service (examples/node, the official NATS, Protobuf and CloudEvents libraries) among eventwire services.

eventwire publishes OrderCreated, the Node service consumes it and publishes StockReserved, an eventwire
handler consumes that. In CI Node.js and npm are installed by .ci/run and this runs; elsewhere it skips
without them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import nats
import pytest

from eventwire import App, ConnectOptions, Delivery, Outgoing, Stream
from eventwire.demo import orders_service
from eventwire.server import EmbeddedServer
from eventwire.testing import running
from eventwire.transport import JetStreamTransport

from .events import LineItem, OrderCreated, StockReserved

EXAMPLE = Path(__file__).parent.parent / "examples" / "node"


@pytest.fixture(scope="module")
def node_example() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("Node.js and npm are required in CI (.ci/run installs them)")
        pytest.skip("no node/npm on this machine")
    if not (EXAMPLE / "node_modules").is_dir():
        install = ["npm", "ci", "--no-audit", "--no-fund"]
        subprocess.run(install, cwd=EXAMPLE, check=True, capture_output=True, timeout=300)
    return EXAMPLE


async def test_events_cross_between_node_and_eventwire_both_ways(
    node_example: Path, fresh_server: EmbeddedServer
) -> None:
    orders = orders_service()
    shipping = App("shipping")
    reserved: list[tuple[StockReserved, Delivery]] = []

    @shipping.handler(StockReserved, stream=Stream("INVENTORY", ("inventory.>",)))
    async def ship(event: StockReserved, delivery: Delivery) -> None:
        reserved.append((event, delivery))

    connect = ConnectOptions.from_url(fresh_server.url)
    await orders.start(connect=connect)
    node = None
    try:
        transport = await JetStreamTransport.connect(connect)
        async with running(shipping, transport) as probe:
            node = await asyncio.create_subprocess_exec(
                "node", "service.mjs", cwd=node_example,
                env={**os.environ, "NATS_URL": fresh_server.url, "COUNT": "3"},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert node.stdout is not None
            ready = await asyncio.wait_for(node.stdout.readline(), 30)
            assert b"consuming ORDERS" in ready, ready
            items = [LineItem(sku="sku-pear", quantity=1)]
            placed = [Outgoing(OrderCreated(order_id=f"o-{n}", items=items), "orders.created") for n in range(3)]
            await orders.publisher.publish_many(placed)
            await probe.wait_until(lambda: len(reserved) == 3, timeout=30)
            out, err = await asyncio.wait_for(node.communicate(), 30)
        sent_ids = await ce_ids_of_orders(fresh_server.url)
    finally:
        if node is not None and node.returncode is None:
            node.kill()
        await orders.stop()
    assert node.returncode == 0, err.decode()
    assert b"handled 3 order(s)" in out
    assert sorted(event.order_id for event, _ in reserved) == ["o-0", "o-1", "o-2"]
    for event, delivery in reserved:
        envelope = delivery.envelope
        assert event.reservation_id == f"node-{event.order_id}" and event.reserved_at_ms > 0
        assert (envelope.type, envelope.source, envelope.subject) == (
            "shop.inventory.v1.StockReserved",
            "/services/node-inventory",
            event.order_id,
        )
        assert envelope.time is not None and envelope.datacontenttype == "application/protobuf"
    assert {delivery.envelope.causation_id for _, delivery in reserved} == sent_ids  # caused by those orders
    assert [s.outcome for s in probe.settlements] == ["ack"] * 3


async def ce_ids_of_orders(url: str) -> set[str]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        return {(await js.get_msg("ORDERS", seq)).headers["ce-id"] for seq in (1, 2, 3)}  # type: ignore[index]
    finally:
        await nc.close()
