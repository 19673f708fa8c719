from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime

import nats
import pytest
from nats.aio.client import Client as NatsClient

from eventwire import (
    Outgoing,
    PayloadTooLarge,
    PublishAck,
    Publisher,
    PublishTimeout,
    Stream,
    WrongLastSequence,
)
from eventwire.contracts import JSON
from eventwire.server import EmbeddedServer
from eventwire.transport import ConnectOptions, JetStreamTransport

from .conftest import unique
from .events import LineItem, OrderCreated

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture
async def stream(transport: JetStreamTransport) -> Stream:
    name = unique("P")
    declared = Stream(name, (f"{name}.>",))
    await transport.ensure_stream(declared)
    return declared


@pytest.fixture
def publisher(transport: JetStreamTransport) -> Publisher:
    return Publisher(transport, source="/services/orders", deadline=5.0)


async def test_published_event_carries_every_envelope_header(
    publisher: Publisher, stream: Stream, raw_nc: NatsClient
) -> None:
    event = OrderCreated(order_id="o-1", items=[LineItem(sku="a", quantity=1)], total_cents=500)
    ack = await publisher.publish(event, subject=f"{stream.name}.created", key="o-1")
    assert ack == PublishAck(stream.name, 1, duplicate=False)
    stored = await raw_nc.jetstream().get_msg(stream.name, 1)
    headers = stored.headers or {}
    assert headers["ce-specversion"] == "1.0"
    assert UUID7.match(headers["ce-id"])
    assert headers["ce-source"] == "/services/orders"
    assert headers["ce-type"] == "shop.orders.v1.OrderCreated"
    assert headers["ce-subject"] == "o-1"
    assert headers["ce-datacontenttype"] == "application/protobuf"
    assert headers["ce-dataschema"].startswith("urn:eventwire:schema:shop.orders.v1.OrderCreated:")
    assert headers["Nats-Msg-Id"] == headers["ce-id"]
    sent_at = datetime.fromisoformat(headers["ce-time"].replace("Z", "+00:00"))
    assert abs(sent_at.timestamp() - time.time()) < 60
    assert OrderCreated.FromString(stored.data or b"") == event


async def test_business_msg_id_and_json_codec(
    transport: JetStreamTransport, stream: Stream, raw_nc: NatsClient
) -> None:
    publisher = Publisher(transport, source="/services/orders", content_type=JSON)
    await publisher.publish(OrderCreated(order_id="o-2"), subject=f"{stream.name}.created", msg_id="ord-o-2")
    stored = await raw_nc.jetstream().get_msg(stream.name, 1)
    headers = stored.headers or {}
    assert headers["Nats-Msg-Id"] == "ord-o-2"
    assert headers["ce-id"] != "ord-o-2"
    assert headers["ce-datacontenttype"] == "application/json"
    assert json.loads(stored.data or b"") == {"orderId": "o-2"}


async def test_same_msg_id_is_stored_once(publisher: Publisher, stream: Stream, raw_nc: NatsClient) -> None:
    first = await publisher.publish(OrderCreated(order_id="o-3"), subject=f"{stream.name}.created", msg_id="ord-o-3")
    second = await publisher.publish(OrderCreated(order_id="o-3"), subject=f"{stream.name}.created", msg_id="ord-o-3")
    assert (first.duplicate, second.duplicate) == (False, True)
    assert second.sequence == first.sequence
    assert (await raw_nc.jetstream().stream_info(stream.name)).state.messages == 1


async def test_oversized_payload_is_refused_before_sending(
    publisher: Publisher, stream: Stream, transport: JetStreamTransport, raw_nc: NatsClient
) -> None:
    big = OrderCreated(order_id="x" * transport.max_payload)
    with pytest.raises(PayloadTooLarge) as caught:
        await publisher.publish(big, subject=f"{stream.name}.created")
    assert caught.value.limit == transport.max_payload
    assert (await raw_nc.jetstream().stream_info(stream.name)).state.messages == 0


async def test_expected_last_sequences(publisher: Publisher, stream: Stream) -> None:
    subject = f"{stream.name}.created"
    await publisher.publish(OrderCreated(order_id="a"), subject=subject, expected_last_sequence=0)
    with pytest.raises(WrongLastSequence):
        await publisher.publish(OrderCreated(order_id="b"), subject=subject, expected_last_sequence=0)
    ack = await publisher.publish(OrderCreated(order_id="b"), subject=subject, expected_last_subject_sequence=1)
    assert ack.sequence == 2
    with pytest.raises(WrongLastSequence):
        await publisher.publish(OrderCreated(order_id="c"), subject=subject, expected_last_subject_sequence=1)


async def test_missing_stream_is_retried_until_it_appears(publisher: Publisher, transport: JetStreamTransport) -> None:
    name = unique("LATE")
    pending = asyncio.create_task(publisher.publish(OrderCreated(order_id="late"), subject=f"{name}.created"))
    await asyncio.sleep(0.5)
    assert not pending.done()
    await transport.ensure_stream(Stream(name, (f"{name}.>",)))
    ack = await asyncio.wait_for(pending, 5)
    assert (ack.stream, ack.sequence) == (name, 1)


async def test_no_stream_past_the_deadline_raises_publish_timeout(publisher: Publisher) -> None:
    started = time.monotonic()
    with pytest.raises(PublishTimeout, match="msg id"):
        await publisher.publish(OrderCreated(order_id="lost"), subject=f"{unique('NONE')}.x", deadline=0.8)
    assert 0.7 < time.monotonic() - started < 3


async def test_publish_many_reports_each_outcome(publisher: Publisher, stream: Stream, raw_nc: NatsClient) -> None:
    subject = f"{stream.name}.created"
    items = [Outgoing(OrderCreated(order_id=f"o-{i}"), subject=subject, key=f"o-{i}") for i in range(500)]
    items.insert(100, Outgoing(OrderCreated(order_id="conflict"), subject=subject, expected_last_subject_sequence=7))
    items.insert(200, Outgoing(OrderCreated(order_id="y" * 2_000_000), subject=subject))
    results = await publisher.publish_many(items, window=64)
    assert len(results) == 502
    assert isinstance(results[100], WrongLastSequence)
    assert isinstance(results[200], PayloadTooLarge)
    acks = [r for r in results if isinstance(r, PublishAck)]
    assert len(acks) == 500
    assert sorted(a.sequence for a in acks) == list(range(1, 501))
    assert (await raw_nc.jetstream().stream_info(stream.name)).state.messages == 500


@pytest.fixture
async def killable(fresh_server: EmbeddedServer) -> AsyncIterator[tuple[EmbeddedServer, JetStreamTransport, Stream]]:
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(fresh_server.url, reconnect_time_wait=0.1))
    stream = Stream("ORDERS", ("orders.>",))
    await transport.ensure_stream(stream)
    try:
        yield fresh_server, transport, stream
    finally:
        await transport.close()


async def _count(server: EmbeddedServer, stream: str) -> int:
    nc = await nats.connect(server.url)
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    finally:
        await nc.close()


async def test_publish_during_outage_succeeds_once_server_returns(
    killable: tuple[EmbeddedServer, JetStreamTransport, Stream],
) -> None:
    server, transport, _ = killable
    publisher = Publisher(transport, source="/services/orders", deadline=20, attempt_timeout=0.5)
    server.kill()
    pending = asyncio.create_task(publisher.publish(OrderCreated(order_id="o-1"), subject="orders.created"))
    await asyncio.sleep(1.5)  # several attempts fail while the server is down
    assert not pending.done()
    server.restart()
    ack = await asyncio.wait_for(pending, 20)
    assert ack.sequence == 1
    await asyncio.sleep(0.5)  # any buffered retry has reached the server by now
    assert await _count(server, "ORDERS") == 1


async def test_publish_past_the_deadline_raises_publish_timeout(
    killable: tuple[EmbeddedServer, JetStreamTransport, Stream],
) -> None:
    server, transport, _ = killable
    publisher = Publisher(transport, source="/services/orders", deadline=1.0, attempt_timeout=0.3)
    server.kill()
    with pytest.raises(PublishTimeout):
        await publisher.publish(OrderCreated(order_id="o-1"), subject="orders.created")


async def test_publish_many_survives_an_outage_without_duplicates(
    killable: tuple[EmbeddedServer, JetStreamTransport, Stream],
) -> None:
    server, transport, _ = killable
    publisher = Publisher(transport, source="/services/orders", deadline=20, attempt_timeout=0.5)
    server.kill()
    items = [Outgoing(OrderCreated(order_id=f"o-{i}"), subject="orders.created", msg_id=f"ord-{i}") for i in range(200)]
    pending = asyncio.create_task(publisher.publish_many(items, window=50))
    await asyncio.sleep(1.0)
    server.restart()
    results = await asyncio.wait_for(pending, 20)
    assert all(isinstance(r, PublishAck) for r in results)
    await asyncio.sleep(0.5)
    assert await _count(server, "ORDERS") == 200
