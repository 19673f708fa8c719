"""Consuming a pre-filled stream: an eventwire App vs raw nats-py pull and push, and FastStream."""

from __future__ import annotations

import asyncio
import io
import logging
import sys

import nats
from nats.aio.msg import Msg

from eventwire import App, Stream
from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import OrderCreated

from ._common import MAX_ACK_PENDING, STREAM, SUBJECT, add_durable, timed, wait_event

TIMEOUT = 600.0


async def raw_fetch(url: str, count: int, durable: str) -> float:
    await add_durable(url, durable)
    nc = await nats.connect(url.split(","))
    subscription = await nc.jetstream().pull_subscribe_bind(durable, STREAM)

    async def run() -> None:
        received = 0
        while received < count:
            for msg in await subscription.fetch(100, timeout=5):
                await msg.ack()
                received += 1

    try:
        return count / await timed(run)
    finally:
        await nc.close()


async def raw_push(url: str, count: int, durable: str) -> float:
    nc = await nats.connect(url.split(","))
    inbox = nc.new_inbox()
    done = asyncio.Event()
    received = 0

    async def on_message(msg: Msg) -> None:
        nonlocal received
        await msg.ack()
        received += 1
        if received == count:
            done.set()

    async def run() -> None:
        await nc.subscribe(inbox, cb=on_message, pending_msgs_limit=-1, pending_bytes_limit=-1)
        await add_durable(url, durable, deliver_subject=inbox)
        await wait_event(done, TIMEOUT, "raw push")

    try:
        return count / await timed(run)
    finally:
        await nc.close()


async def eventwire_app(
    url: str, count: int, durable: str, *, confirm_acks: bool = False, concurrency: int = 1, metrics: bool = False
) -> float:
    done = asyncio.Event()
    received = 0
    app = App("bench", url=url, metrics=metrics)

    @app.handler(
        OrderCreated,
        stream=Stream(STREAM, ("bench.>",)),
        durable=durable,
        max_ack_pending=MAX_ACK_PENDING,
        confirm_acks=confirm_acks,
        concurrency=concurrency,
    )
    async def on_order(order: OrderCreated) -> None:
        nonlocal received
        received += 1
        if received == count:
            done.set()

    async def run() -> None:
        await app.start()
        await wait_event(done, TIMEOUT, "eventwire App")

    try:
        return count / await timed(run)
    finally:
        await app.stop()


async def eventwire_app_observed(url: str, count: int, durable: str, *, mode: str) -> float:
    """The App in a child process with tracing set up as ``mode`` says (bench/observed.py)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.observed", url, str(count), durable, mode, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), TIMEOUT)
    if process.returncode != 0:
        raise RuntimeError(f"bench.observed {mode} exited with {process.returncode}")
    return float(out.decode().split()[-1])


def faststream_available() -> bool:
    try:
        import faststream.nats  # noqa: F401
    except ImportError:
        return False
    return True


async def faststream_pull(url: str, count: int, durable: str) -> float:
    from faststream.nats import JStream, NatsBroker, PullSub

    await add_durable(url, durable)
    # FastStream's default INFO logging stays on, as in the measurement, but into memory, not the terminal.
    logger = logging.getLogger("bench.faststream")
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler(io.StringIO()))
        logger.propagate = False
    broker = NatsBroker(url, logger=logger)
    done = asyncio.Event()
    received = 0

    @broker.subscriber(  # type: ignore[untyped-decorator,unused-ignore]
        SUBJECT, stream=JStream(STREAM, declare=False), durable=durable, pull_sub=PullSub(100)
    )
    async def on_order(body: bytes) -> None:
        nonlocal received
        OrderCreated.FromString(body)
        received += 1
        if received == count:
            done.set()

    async def run() -> None:
        await broker.start()
        await wait_event(done, TIMEOUT, "FastStream PullSub")

    try:
        return count / await timed(run)
    finally:
        await broker.stop()
