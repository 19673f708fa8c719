"""A service whose handler keeps per-key order on a partitioned stream, for the order and failover tests.

Environment: TEST_STREAM (stream name, subject pattern ``<name>.*``, TEST_PARTITIONS partitions),
TEST_RECORD (file to append ``pid order_id delivery_count unix_time partition`` lines to), TEST_ACK_WAIT
and TEST_MAX_DELAY (each handler sleeps a random time up to it, in seconds). An order id is
``<key>:<number>``, its key the event's key.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

from eventwire import App, Delivery, Stream
from tests.events import OrderCreated

STREAM = Stream(
    os.environ["TEST_STREAM"], (os.environ["TEST_STREAM"] + ".*",), partitions=int(os.environ["TEST_PARTITIONS"])
)
RECORD = os.environ["TEST_RECORD"]
MAX_DELAY = float(os.environ.get("TEST_MAX_DELAY", "0.005"))

app = App("partitioned", idle_heartbeat=0.5, pull_expires=2.0, dead_letters=False)


@app.handler(
    OrderCreated,
    stream=STREAM,
    subject=os.environ["TEST_STREAM"] + ".created",
    durable="partitioned",
    ordered_by="key",
    ack_wait=float(os.environ.get("TEST_ACK_WAIT", "3")),
)
async def record(order: OrderCreated, delivery: Delivery) -> None:
    partition = delivery.subject.rsplit(".", 1)[1]
    _append(f"{os.getpid()} {order.order_id} {delivery.delivery_count} {time.time():.6f} {partition}\n")
    await asyncio.sleep(random.uniform(0, MAX_DELAY))


def _append(line: str) -> None:
    with open(RECORD, "a", encoding="utf-8") as out:  # a line, at once: the test reads it while we run
        out.write(line)
