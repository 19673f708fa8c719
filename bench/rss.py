"""Peak resident memory of an eventwire App draining a backlog; run in a process of its own.

``python -m bench.rss URL COUNT`` prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from eventwire import App, Stream
from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import OrderCreated

from ._common import MAX_ACK_PENDING, STREAM, wait_event


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process image.

    Not getrusage's ru_maxrss: on Linux it carries over the peak of the
    process that forked us, so it would measure the benchmark's parent.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


async def _sample(samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(_status_mb("VmRSS"))
        await asyncio.sleep(1.0)


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
    samples: list[float] = []
    sampler = asyncio.create_task(_sample(samples, done))
    await wait_event(done, 3600, "RSS drain")
    seconds = time.perf_counter() - started
    await sampler
    await app.stop()
    return {
        "events": count,
        "seconds": seconds,
        "rss_after_start_mb": samples[0],
        "rss_at_end_mb": samples[-1],
        "peak_rss_mb": _status_mb("VmHWM"),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(drain(sys.argv[1], int(sys.argv[2])))))
