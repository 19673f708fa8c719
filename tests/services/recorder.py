"""A service that records each handler start, for the paused-consumer test.

Environment: TEST_STREAM (stream name, subjects ``<name>.>``), TEST_RECORD (file to append
``pid order_id delivery_count unix_time`` lines to), TEST_ACK_WAIT, TEST_PREFETCH and
TEST_HANDLER_SECONDS.
"""

from __future__ import annotations

import asyncio
import os
import time

from eventwire import App, Delivery, Stream
from tests.events import OrderCreated

STREAM = Stream(os.environ["TEST_STREAM"], (os.environ["TEST_STREAM"] + ".>",))
RECORD = os.environ["TEST_RECORD"]
HANDLER_SECONDS = float(os.environ.get("TEST_HANDLER_SECONDS", "0.2"))

app = App("recorder", idle_heartbeat=0.5, pull_expires=2.0, dead_letters=False)


@app.handler(
    OrderCreated,
    stream=STREAM,
    durable="recorder",
    ack_wait=float(os.environ.get("TEST_ACK_WAIT", "2")),
    prefetch=int(os.environ.get("TEST_PREFETCH", "8")),
)
async def record(order: OrderCreated, delivery: Delivery) -> None:
    _append(f"{os.getpid()} {order.order_id} {delivery.delivery_count} {time.time():.6f}\n")
    await asyncio.sleep(HANDLER_SECONDS)


def _append(line: str) -> None:
    with open(RECORD, "a", encoding="utf-8") as out:  # a line, at once: the test reads it while we run
        out.write(line)
