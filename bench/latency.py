"""Latency from publish to handler at a steady rate: an eventwire App vs a raw nats-py pull loop."""

from __future__ import annotations

import asyncio
import time

import nats

from eventwire import App, Delivery, Stream
from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import OrderCreated

from ._common import STREAM, SUBJECT, add_durable, event, reset_stream, wait_event

HEADERS = {"ce-specversion": "1.0", "ce-source": "/bench", "ce-type": "shop.orders.v1.OrderCreated"}


async def _produce(url: str, rate: int, seconds: float, sent: dict[str, float]) -> None:
    """Publish at ``rate`` per second (core publish into the stream), stamping each send time."""
    nc = await nats.connect(url.split(","))
    payload = event(0).SerializeToString()
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        for number in range(int(rate * seconds)):
            delay = start + number / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            ce_id = f"lat-{number}"
            headers = {**HEADERS, "ce-id": ce_id, "Nats-Msg-Id": ce_id}
            sent[ce_id] = time.perf_counter()
            await nc.publish(SUBJECT, payload, headers=headers)
        await nc.flush()
    finally:
        await nc.close()


async def eventwire_latency(url: str, rate: int, seconds: float) -> list[float]:
    await reset_stream(url)
    sent: dict[str, float] = {}
    samples: list[float] = []
    expected = int(rate * seconds)
    done = asyncio.Event()
    app = App("latency", url=url)

    @app.handler(OrderCreated, stream=Stream(STREAM, ("bench.>",)), durable="latency")
    async def on_order(order: OrderCreated, delivery: Delivery) -> None:
        samples.append(time.perf_counter() - sent[delivery.envelope.id])
        if len(samples) == expected:
            done.set()

    await app.start()
    try:
        await _produce(url, rate, seconds, sent)
        await wait_event(done, 60, "eventwire latency run")
    finally:
        await app.stop()
    return samples


async def raw_pull_latency(url: str, rate: int, seconds: float) -> list[float]:
    await reset_stream(url)
    await add_durable(url, "latency")
    sent: dict[str, float] = {}
    samples: list[float] = []
    expected = int(rate * seconds)
    nc = await nats.connect(url.split(","))
    subscription = await nc.jetstream().pull_subscribe_bind("latency", STREAM)

    async def consume() -> None:
        while len(samples) < expected:
            try:
                messages = await subscription.fetch(100, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in messages:
                samples.append(time.perf_counter() - sent[(msg.headers or {})["ce-id"]])
                await msg.ack()

    consumer = asyncio.create_task(consume())
    try:
        await _produce(url, rate, seconds, sent)
        await asyncio.wait_for(consumer, 60)
    finally:
        consumer.cancel()
        await nc.close()
    return samples
