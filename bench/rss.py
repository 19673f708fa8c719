"""Peak resident memory of an eventwire App draining a backlog; run in a process of its own.

``python -m bench.rss URL COUNT`` prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

from eventwire import App, Stream
from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import OrderCreated

from ._common import MAX_ACK_PENDING, STREAM, wait_event


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def drain(url: str, count: int) -> dict[str, float]:
    done = asyncio.Event()
    received = 0
    app = App("rss", url=url)

    @app.handler(OrderCreated, stream=Stream(STREAM, ("bench.>",)), durable="rss", max_ack_pending=MAX_ACK_PENDING)
    async def on_order(order: OrderCreated) -> None:
        nonlocal received
        received += 1
        if received == count:
            done.set()

    started = time.perf_counter()
    await app.start()
    after_start = _rss_mb()
    await wait_event(done, 3600, "RSS drain")
    seconds = time.perf_counter() - started
    await app.stop()
    return {"events": count, "seconds": seconds, "rss_after_start_mb": after_start, "peak_rss_mb": _rss_mb()}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(drain(sys.argv[1], int(sys.argv[2])))))
