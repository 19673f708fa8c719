"""publish_many on the server's fast path (fast-ingest batches) and its fallbacks, on a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.client import ServerVersion
from nats.js import api

from eventwire import Outgoing, PublishAck, Publisher, PublishError, Stream, WrongLastSequence
from eventwire.server import EmbeddedServer
from eventwire.transport import BatchMessage, ConnectOptions, FastBatchResult, JetStreamTransport
from eventwire.transport._fast_ingest import _Batch
from eventwire.transport.jetstream import JetStreamBatchTarget

from .conftest import eventually, unique
from .events import OrderCreated

EVENTS = 10_000


async def stored_ids(nc: NatsClient, stream: str) -> dict[int, str]:
    """Stream sequence to Nats-Msg-Id of everything ``stream`` holds, read with a consumer of the test's own."""
    js = nc.jetstream()
    total = (await js.stream_info(stream)).state.messages
    config = api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, headers_only=True, mem_storage=True)
    subscription = await js.pull_subscribe("", stream=stream, config=config)
    found: dict[int, str] = {}
    while len(found) < total:
        for msg in await subscription.fetch(1000, timeout=5):
            found[msg.metadata.sequence.stream] = (msg.headers or {})["Nats-Msg-Id"]
    await subscription.unsubscribe()
    return found


@pytest.fixture
def batches_sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every fast-ingest batch sent during the test."""
    sizes: list[int] = []
    send = JetStreamBatchTarget.send

    async def counting(self: JetStreamBatchTarget, messages: list[BatchMessage], **kw: float) -> FastBatchResult:
        sizes.append(len(messages))
        return await send(self, messages, flow=int(kw["flow"]), stall_timeout=kw["stall_timeout"])

    monkeypatch.setattr(JetStreamBatchTarget, "send", counting)
    return sizes


def orders(count: int, subject: str, prefix: str = "ev") -> list[Outgoing]:
    return [
        Outgoing(OrderCreated(order_id=f"o-{i}"), subject=f"{subject}.{i % 64}", key=f"k{i}", msg_id=f"{prefix}-{i}")
        for i in range(count)
    ]


async def publish_some_beforehand(nc: NatsClient, subject: str, every: int) -> int:
    js = nc.jetstream()
    for i in range(0, EVENTS, every):
        await js.publish(f"{subject}.{i % 64}", b"earlier", headers={"Nats-Msg-Id": f"ev-{i}"})
    return EVENTS // every


def check_outcomes(results: Sequence[object], held: dict[int, str], duplicates: set[int]) -> None:
    """Each outcome is an ack; the duplicates are exactly those expected; every stored one names its message."""
    assert all(isinstance(r, PublishAck) for r in results)
    acks = [r for r in results if isinstance(r, PublishAck)]
    assert {i for i, ack in enumerate(acks) if ack.duplicate} == duplicates
    for i, ack in enumerate(acks):
        if not ack.duplicate:
            assert held[ack.sequence] == f"ev-{i}", i


async def test_fast_path_stores_each_event_once_and_says_which_were_duplicates(
    transport: JetStreamTransport, raw_nc: NatsClient, batches_sent: list[int]
) -> None:
    name = unique("FAST")
    await transport.ensure_stream(Stream(name, (f"{name}.>",), allow_batched=True))
    earlier = await publish_some_beforehand(raw_nc, name, every=20)
    publisher = Publisher(transport, source="/services/orders")

    results = await publisher.publish_many(orders(EVENTS, name))

    held = await stored_ids(raw_nc, name)
    assert sorted(held.values()) == sorted(f"ev-{i}" for i in range(EVENTS))  # 10,000 distinct, nothing twice
    check_outcomes(results, held, duplicates=set(range(0, EVENTS, 20)))
    assert earlier == 500
    assert batches_sent and sum(batches_sent) == EVENTS  # on the fast path, every event in a batch


@pytest.mark.parametrize("why", ["stream without allow_batched", "server older than 2.14"])
async def test_without_the_fast_path_publish_many_pipelines_with_the_same_outcomes(
    why: str,
    transport: JetStreamTransport,
    raw_nc: NatsClient,
    batches_sent: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = unique("PIPE")
    await transport.ensure_stream(Stream(name, (f"{name}.>",), allow_batched=why != "stream without allow_batched"))
    if why == "server older than 2.14":
        older = property(lambda _: ServerVersion("2.13.2"))
        monkeypatch.setattr(type(transport.nc), "connected_server_version", older)
    await publish_some_beforehand(raw_nc, name, every=20)

    results = await Publisher(transport, source="/services/orders").publish_many(orders(EVENTS, name))

    held = await stored_ids(raw_nc, name)
    assert sorted(held.values()) == sorted(f"ev-{i}" for i in range(EVENTS))
    check_outcomes(results, held, duplicates=set(range(0, EVENTS, 20)))
    assert batches_sent == []


async def test_a_stream_that_stops_taking_batches_falls_back_to_the_pipelined_path(
    transport: JetStreamTransport, raw_nc: NatsClient, batches_sent: list[int]
) -> None:
    name = unique("OFF")
    await transport.ensure_stream(Stream(name, (f"{name}.>",), allow_batched=True))
    js = raw_nc.jetstream()
    config = (await js.stream_info(name)).config
    config.allow_batched = False
    await js.update_stream(config)  # an operator turned it off behind the App's back
    publisher = Publisher(transport, source="/services/orders")

    first = await publisher.publish_many(orders(1000, name))
    second = await publisher.publish_many(orders(1000, name, prefix="again"))

    held = await stored_ids(raw_nc, name)
    assert len(held) == 2000 and len(set(held.values())) == 2000
    check_outcomes(first, held, duplicates=set())
    assert [r.sequence for r in second if isinstance(r, PublishAck)] == list(range(1001, 2001))
    assert batches_sent == [1000]  # the server's "batch publish is disabled" was heard once, then remembered


async def test_an_event_refused_in_a_batch_fails_alone_and_the_rest_are_stored(
    transport: JetStreamTransport, raw_nc: NatsClient
) -> None:
    name = unique("REFUSE")
    await transport.ensure_stream(Stream(name, (f"{name}.>",), allow_batched=True))
    items = orders(200, name)
    items[120] = Outgoing(
        OrderCreated(order_id="o-120"), subject=f"{name}.x", msg_id="ev-120", expected_last_subject_sequence=99
    )

    results = await Publisher(transport, source="/services/orders").publish_many(items)

    assert isinstance(results[120], WrongLastSequence)
    held = await stored_ids(raw_nc, name)
    assert sorted(held.values()) == sorted(f"ev-{i}" for i in range(200) if i != 120)
    assert all(held[r.sequence] == f"ev-{i}" for i, r in enumerate(results) if isinstance(r, PublishAck))


@pytest.fixture
async def restartable(fresh_server: EmbeddedServer) -> AsyncIterator[tuple[EmbeddedServer, JetStreamTransport]]:
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(fresh_server.url, reconnect_time_wait=0.1))
    try:
        yield fresh_server, transport
    finally:
        await transport.close()


async def _held_count(server: EmbeddedServer, stream: str) -> int:
    nc = await nats.connect(server.url)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    finally:
        await nc.close()


@pytest.mark.timeout(180)
async def test_a_server_restart_mid_batch_loses_and_doubles_nothing(
    restartable: tuple[EmbeddedServer, JetStreamTransport], batches_sent: list[int]
) -> None:
    server, transport = restartable
    await transport.ensure_stream(Stream("ORDERS", ("orders.>",), allow_batched=True))
    publisher = Publisher(transport, source="/services/orders", deadline=60, attempt_timeout=0.5)
    # Big enough that the restart lands inside a batch on this machine.
    publishing = asyncio.create_task(publisher.publish_many(orders(50_000, "orders")))

    async def some_stored() -> bool:
        return await _held_count(server, "ORDERS") >= 5_000

    await eventually(some_stored, timeout=60, interval=0.01)
    server.kill()
    await asyncio.sleep(0.5)
    server.restart()
    results = await asyncio.wait_for(publishing, 120)

    nc = await nats.connect(server.url)
    try:
        held = await stored_ids(nc, "ORDERS")
    finally:
        await nc.close()
    assert sorted(held.values()) == sorted(f"ev-{i}" for i in range(50_000))
    check_outcomes(results, held, duplicates=set())  # resent after the restart, yet none reported a duplicate
    assert len(batches_sent) >= 2  # the batch broke off and the rest went in another


def test_a_plain_pub_ack_to_the_first_message_means_the_server_has_no_fast_path() -> None:
    # A server before 2.14 reads the $FI reply subject as an ordinary one: message 1 is stored as such.
    batch = _Batch("b1")
    batch.on_reply(b'{"stream":"ORDERS","seq":41}', None)
    assert batch.result == FastBatchResult(1, last_sequence=41, not_batched={"stream": "ORDERS", "seq": 41})


async def test_an_atomic_batch_resent_after_a_lost_ack_is_stored_once_and_acked_as_duplicate(
    restartable: tuple[EmbeddedServer, JetStreamTransport],
) -> None:
    server, transport = restartable
    await transport.ensure_stream(Stream("ORDERS", ("orders.>",), allow_atomic=True))
    publisher = Publisher(transport, source="/services/orders", deadline=30, attempt_timeout=0.3)
    items = [Outgoing(OrderCreated(order_id=f"o-{i}"), subject="orders.created", msg_id=f"at-{i}") for i in range(5)]
    server.pause()  # the batch and its resends wait in the socket; the first one's ack never reaches us in time
    publishing = asyncio.create_task(publisher.publish_atomic(items))
    await asyncio.sleep(1.0)
    server.resume()

    acks = await asyncio.wait_for(publishing, 30)

    assert [(a.stream, a.duplicate) for a in acks] == [("ORDERS", True)] * 5
    nc = await nats.connect(server.url)
    try:
        held = await stored_ids(nc, "ORDERS")
    finally:
        await nc.close()
    assert held == {n + 1: f"at-{n}" for n in range(5)}


async def test_an_atomic_batch_on_a_server_older_than_2_12_is_refused_before_sending(
    transport: JetStreamTransport, raw_nc: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique("OLD")
    await transport.ensure_stream(Stream(name, (f"{name}.>",), allow_atomic=True))
    monkeypatch.setattr(type(transport.nc), "connected_server_version", property(lambda _: ServerVersion("2.11.15")))
    items = [Outgoing(OrderCreated(order_id=f"o-{i}"), subject=f"{name}.created") for i in range(3)]

    with pytest.raises(PublishError, match=r"atomic batches need nats-server 2\.12\.0 or later; this one is 2\.11\.15"):
        await Publisher(transport, source="/services/orders").publish_atomic(items)

    await asyncio.sleep(0.2)
    assert (await raw_nc.jetstream().stream_info(name)).state.messages == 0
