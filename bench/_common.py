"""Shared pieces: the benchmark payload, prefilling, timing, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from eventwire import Publisher, Stream
from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import OrderCreated
from eventwire.transport import ConnectOptions, JetStreamTransport

STREAM = "BENCH"
SUBJECT = "bench.orders"
MAX_ACK_PENDING = 10_000


def event(number: int) -> OrderCreated:
    """An event whose encoded payload is 256 bytes."""
    base = OrderCreated(order_id=f"o-{number:09d}", customer_id="c", total_cents=number, created_at_ms=number)
    padding = 256 - len(base.SerializeToString()) - 3
    base.customer_id = "c" * (1 + padding)
    return base


async def connect_transport(url: str) -> JetStreamTransport:
    return await JetStreamTransport.connect(ConnectOptions.from_url(url))


async def reset_stream(
    url: str, stream: str = STREAM, subjects: tuple[str, ...] = ("bench.>",), replicas: int = 1
) -> None:
    nc = await nats.connect(url.split(","))
    try:
        js = nc.jetstream()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream)
        config = StreamConfig(name=stream, subjects=list(subjects), storage=StorageType.FILE, num_replicas=replicas)
        await js.add_stream(config)
    finally:
        await nc.close()


async def prefill(url: str, count: int) -> None:
    """Fill the stream with ``count`` eventwire events (CloudEvents headers, Protobuf payload)."""
    await reset_stream(url)
    transport = await connect_transport(url)
    try:
        await transport.ensure_stream(Stream(STREAM, ("bench.>",)))
        publisher = Publisher(transport, source="/bench", deadline=300)
        chunk = 20_000
        for start in range(0, count, chunk):
            from eventwire import Outgoing

            items = [Outgoing(event(i), subject=SUBJECT) for i in range(start, min(count, start + chunk))]
            results = await publisher.publish_many(items, window=4000)
            failed = [r for r in results if isinstance(r, Exception)]
            if failed:
                raise failed[0]
    finally:
        await transport.close()


async def add_durable(url: str, name: str, *, deliver_subject: str | None = None) -> None:
    nc = await nats.connect(url.split(","))
    try:
        await nc.jetstream().add_consumer(
            STREAM,
            ConsumerConfig(
                durable_name=name,
                ack_policy=AckPolicy.EXPLICIT,
                max_ack_pending=MAX_ACK_PENDING,
                deliver_subject=deliver_subject,
                ack_wait=60,
            ),
        )
    finally:
        await nc.close()


async def timed(run: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await run()
    return time.perf_counter() - started


@dataclass
class Series:
    """Repeated measurements of one contender."""

    name: str
    unit: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def wait_event(event: asyncio.Event, timeout: float, what: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError as exc:
        raise RuntimeError(f"{what} did not finish within {timeout:.0f}s") from exc


def cpu_ticks() -> tuple[int, int]:
    """All and idle CPU time of the machine since boot, in ticks (Linux)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def busy_since(ticks: tuple[int, int]) -> float:
    """Cores of the machine busy on average since ``ticks`` were read."""
    total, idle = (a - b for a, b in zip(cpu_ticks(), ticks, strict=True))
    return (os.cpu_count() or 1) * (1 - idle / max(total, 1))
