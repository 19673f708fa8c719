"""Publishing: eventwire vs raw nats-py, one confirmed publish at a time and pipelined."""

from __future__ import annotations

import nats

from eventwire import Outgoing, PublishAck, Publisher, Stream
from eventwire._envelope import binary_headers, now_rfc3339
from eventwire._ids import uuid7

from ._common import STREAM, SUBJECT, connect_transport, event, reset_stream, timed


def _messages(count: int, with_headers: bool) -> list[tuple[bytes, dict[str, str] | None]]:
    """Payloads, and for the "same headers" variants the CloudEvents headers and msg id eventwire sends."""
    messages: list[tuple[bytes, dict[str, str] | None]] = []
    for i in range(count):
        headers = None
        if with_headers:
            headers = binary_headers(
                uuid7(),
                "/bench",
                "shop.orders.v1.OrderCreated",
                time=now_rfc3339(),
                datacontenttype="application/protobuf",
            )
        messages.append((event(i).SerializeToString(), headers))
    return messages


async def raw_single(url: str, count: int, with_headers: bool = False) -> float:
    await reset_stream(url)
    messages = _messages(count, with_headers)
    nc = await nats.connect(url.split(","))
    js = nc.jetstream()

    async def run() -> None:
        for payload, headers in messages:
            await js.publish(SUBJECT, payload, headers=headers)

    try:
        return count / await timed(run)
    finally:
        await nc.close()


async def raw_pipelined(url: str, count: int, with_headers: bool = False, replicas: int = 1) -> float:
    await reset_stream(url, replicas=replicas)
    messages = _messages(count, with_headers)
    nc = await nats.connect(url.split(","))
    js = nc.jetstream(publish_async_max_pending=4000)

    async def run() -> None:
        for payload, headers in messages:
            await js.publish_async(SUBJECT, payload, headers=headers)
        await js.publish_async_completed()

    try:
        return count / await timed(run)
    finally:
        await nc.close()


async def eventwire_single(url: str, count: int) -> float:
    await reset_stream(url)
    events = [event(i) for i in range(count)]
    transport = await connect_transport(url)
    await transport.ensure_stream(Stream(STREAM, ("bench.>",)))
    publisher = Publisher(transport, source="/bench")

    async def run() -> None:
        for item in events:
            await publisher.publish(item, subject=SUBJECT)

    try:
        return count / await timed(run)
    finally:
        await transport.close()


async def eventwire_pipelined(url: str, count: int, fast_path: bool = False, replicas: int = 1) -> float:
    """``fast_path``: the stream takes fast-ingest batches, so publish_many sends them that way."""
    await reset_stream(url, replicas=replicas)
    items = [Outgoing(event(i), subject=SUBJECT) for i in range(count)]
    transport = await connect_transport(url)
    await transport.ensure_stream(Stream(STREAM, ("bench.>",), replicas=replicas, allow_batched=fast_path))
    publisher = Publisher(transport, source="/bench")

    async def run() -> None:
        results = await publisher.publish_many(items, window=4000)
        if not all(isinstance(r, PublishAck) for r in results):
            raise RuntimeError("a benchmark publish failed")

    try:
        return count / await timed(run)
    finally:
        await transport.close()
