"""One behaviour, two transports: what passes on the memory broker must pass on JetStream.

A case that fails on one transport only is a bug in the memory transport.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from eventwire import (
    App,
    Backoff,
    BatchHoldsDuplicate,
    Delivery,
    EventwireError,
    Outgoing,
    Publication,
    PublishAck,
    Publisher,
    PublishError,
    RetryPolicy,
    Stream,
    StreamConfigError,
    WrongLastSequence,
)
from eventwire._delivery import OrderingMode, UnknownTypePolicy
from eventwire._streams import Durable, key_token, partition_of
from eventwire._wall_clock import wall_time
from eventwire.server import EmbeddedServer
from eventwire.testing import VirtualTimeLoop, running
from eventwire.transport import ConnectOptions, InboundMessage, JetStreamTransport, MessageSource, Transport

from ..conftest import eventually, unique
from ..events import OrderCreated, StockReserved
from .conftest import Backend

# A virtual clock far from zero adds up 0.6 three times as 1.7999999999.
FLOAT_NOISE = 1e-6
CE = {"ce-specversion": "1.0", "ce-source": "/conformance", "ce-type": "shop.orders.v1.OrderCreated"}


def order(number: int | str) -> OrderCreated:
    return OrderCreated(order_id=f"o-{number}")


def outgoing(subject: str, count: int) -> list[Outgoing]:
    return [Outgoing(order(i), subject=subject) for i in range(count)]


class Inbox:
    """A raw pull at the transport level: keeps every delivery, settles nothing by itself."""

    def __init__(self, room: int = 1000) -> None:
        self.room = room
        self.messages: list[InboundMessage] = []
        self.times: list[float] = []
        self.changed = asyncio.Event()

    def sink(self, message: InboundMessage) -> None:
        self.messages.append(message)
        self.times.append(asyncio.get_running_loop().time())
        self.changed.set()

    def capacity(self) -> int:
        return self.room - len(self.messages)

    async def wait_for(self, count: int, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self.changed.clear()
                await self.changed.wait()


async def raw_pull(transport: Transport, stream: str, durable: Durable, room: int = 1000) -> tuple[Inbox, object]:
    inbox = Inbox(room)
    source = await transport.pull(durable, inbox.sink, inbox.capacity, min_batch=1)
    return inbox, source


async def raw_setup(backend: Backend, **durable_settings: object) -> tuple[Transport, str, Durable]:
    stream = backend.stream()
    transport = await backend.connect()
    await transport.ensure_stream(stream)
    durable = Durable("raw", stream.name, stream.subjects[0], **durable_settings)  # type: ignore[arg-type]
    await transport.ensure_durable(durable)
    return transport, stream.name, durable


async def publish_raw(transport: Transport, subject: str, number: int) -> PublishAck:
    return await transport.publish(
        subject, order(number).SerializeToString(), {**CE, "ce-id": f"id-{number}"}, timeout=5
    )


async def test_thousand_events_are_all_received(backend: Backend) -> None:
    stream = backend.stream()
    received: list[str] = []
    app = App("cf")

    @app.handler(OrderCreated, stream=stream, concurrency=4)
    async def collect(event: OrderCreated) -> None:
        received.append(event.order_id)

    async with running(app, await backend.connect()) as probe:
        results = await app.publisher.publish_many(outgoing(f"{stream.name}.a", 1000))
        assert all(isinstance(r, PublishAck) for r in results)
        await probe.wait_until(lambda: len(received) >= 1000)
    assert sorted(received) == sorted(f"o-{i}" for i in range(1000))


async def test_events_of_one_subject_arrive_in_order_with_concurrency_one(backend: Backend) -> None:
    stream = backend.stream()
    by_subject: dict[str, list[int]] = defaultdict(list)
    app = App("cf")

    @app.handler(OrderCreated, stream=stream)
    async def collect(event: OrderCreated, delivery: Delivery) -> None:
        by_subject[delivery.subject].append(int(event.order_id.removeprefix("o-")))

    async with running(app, await backend.connect()) as probe:
        items = [Outgoing(order(i), subject=f"{stream.name}.s{i % 3}") for i in range(300)]
        await app.publisher.publish_many(items, window=32)
        await probe.wait_until(lambda: sum(map(len, by_subject.values())) >= 300)
    for index in range(3):
        assert by_subject[f"{stream.name}.s{index}"] == list(range(index, 300, 3))


async def test_two_durables_each_receive_everything(backend: Backend) -> None:
    stream = backend.stream()
    seen: dict[str, list[str]] = defaultdict(list)
    app = App("cf")

    @app.handler(OrderCreated, stream=stream)
    async def billing(event: OrderCreated) -> None:
        seen["billing"].append(event.order_id)

    @app.handler(OrderCreated, stream=stream)
    async def shipping(event: OrderCreated) -> None:
        seen["shipping"].append(event.order_id)

    async with running(app, await backend.connect()) as probe:
        await app.publisher.publish_many(outgoing(f"{stream.name}.a", 100))
        await probe.wait_until(lambda: len(seen["billing"]) >= 100 and len(seen["shipping"]) >= 100)
    assert sorted(seen["billing"]) == sorted(seen["shipping"]) == sorted(f"o-{i}" for i in range(100))


async def test_instances_of_one_durable_split_the_events(backend: Backend) -> None:
    stream = backend.stream()
    per_instance: list[list[str]] = [[], []]
    apps = []
    for seen in per_instance:
        app = App("cf")

        @app.handler(OrderCreated, stream=stream, prefetch=4)
        async def work(event: OrderCreated, seen: list[str] = seen) -> None:
            seen.append(event.order_id)
            await asyncio.sleep(0.005)

        apps.append(app)
    async with running(apps[0], await backend.connect()) as probe, running(apps[1], await backend.connect()):
        await apps[0].publisher.publish_many(outgoing(f"{stream.name}.a", 200))
        await probe.wait_until(lambda: sum(map(len, per_instance)) >= 200)
        await asyncio.sleep(0.5)
    first, second = (set(seen) for seen in per_instance)
    assert first and second
    assert not first & second
    assert first | second == {f"o-{i}" for i in range(200)}
    assert sum(map(len, per_instance)) == 200


async def test_nak_is_redelivered_no_sooner_than_its_delay(backend: Backend) -> None:
    stream = backend.stream()
    loop = asyncio.get_running_loop()
    calls: list[float] = []
    app = App("cf")

    @app.handler(OrderCreated, stream=stream, retry=RetryPolicy(backoff=Backoff(initial=1.0, jitter=0)))
    async def flaky(event: OrderCreated, delivery: Delivery) -> None:
        calls.append(loop.time())
        if delivery.delivery_count == 1:
            raise RuntimeError("transient")

    async with running(app, await backend.connect()) as probe:
        settlements = await probe.publish(order(1), subject=f"{stream.name}.a")
    assert [s.outcome for s in settlements] == ["nak", "ack"]
    assert settlements[0].delay == 1.0
    # The server starts the delay when the nak arrives, after the first call was stamped.
    assert calls[1] - calls[0] >= 1.0 - FLOAT_NOISE


async def test_term_is_never_redelivered(backend: Backend) -> None:
    transport, stream, durable = await raw_setup(backend, ack_wait=0.5)
    inbox, _ = await raw_pull(transport, stream, durable)
    await publish_raw(transport, f"{stream}.a", 1)
    await inbox.wait_for(1)
    await inbox.messages[0].term()
    await asyncio.sleep(2.0)
    assert len(inbox.messages) == 1
    assert (await backend.durable(stream, "raw")).num_ack_pending == 0


async def test_unacked_delivery_is_redelivered_after_ack_wait(backend: Backend) -> None:
    transport, stream, durable = await raw_setup(backend, ack_wait=1.0)
    inbox, _ = await raw_pull(transport, stream, durable)
    await publish_raw(transport, f"{stream}.a", 1)
    await inbox.wait_for(2)
    assert [m.delivery_count for m in inbox.messages] == [1, 2]
    assert inbox.times[1] - inbox.times[0] >= 1.0 - backend.timing_tolerance
    await inbox.messages[1].ack()


async def test_in_progress_holds_off_redelivery(backend: Backend) -> None:
    transport, stream, durable = await raw_setup(backend, ack_wait=1.0)
    inbox, _ = await raw_pull(transport, stream, durable)
    await publish_raw(transport, f"{stream}.a", 1)
    await inbox.wait_for(1)
    for _ in range(3):
        await asyncio.sleep(0.6)
        await inbox.messages[0].in_progress()
    assert len(inbox.messages) == 1
    await inbox.wait_for(2)  # no more heartbeats: redelivered
    assert inbox.times[1] - inbox.times[0] >= 2.8 - backend.timing_tolerance


async def test_max_deliver_is_respected_exactly(backend: Backend) -> None:
    transport, stream, durable = await raw_setup(backend, ack_wait=0.5, max_deliver=3)
    inbox, _ = await raw_pull(transport, stream, durable)
    await publish_raw(transport, f"{stream}.a", 1)
    await inbox.wait_for(1)
    await inbox.messages[0].nak()
    await inbox.wait_for(2)
    await inbox.messages[1].nak()
    await inbox.wait_for(3)
    await asyncio.sleep(2.0)  # neither a nak nor ack_wait brings a fourth delivery
    assert [m.delivery_count for m in inbox.messages] == [1, 2, 3]
    state = await backend.durable(stream, "raw")
    assert (state.num_ack_pending, state.ack_floor) == (0, 0)  # given up on, never acked


async def test_stream_and_consumer_sequences(backend: Backend) -> None:
    transport, stream, durable = await raw_setup(backend)
    inbox, _ = await raw_pull(transport, stream, durable)
    for i in range(2):
        await publish_raw(transport, f"{stream}.a", i)
    await inbox.wait_for(2)
    await inbox.messages[0].nak()
    await inbox.wait_for(3)
    deliveries = [(m.stream_sequence, m.consumer_sequence, m.delivery_count) for m in inbox.messages]
    assert deliveries == [(1, 1, 1), (2, 2, 1), (1, 3, 2)]
    assert inbox.messages[2].headers is not None
    assert inbox.messages[2].headers["ce-id"] == "id-0"
    for message in inbox.messages[1:]:
        await message.ack()
    await asyncio.sleep(0.2)
    state = await backend.durable(stream, "raw")
    assert (state.ack_floor, state.num_ack_pending) == (2, 0)


async def test_stream_limits(backend: Backend) -> None:
    transport = await backend.connect()
    by_count = backend.stream(max_msgs=5)
    by_size = backend.stream(max_msg_size=1024)
    by_age = backend.stream(max_age=1.0, duplicate_window=0.5)
    for stream in (by_count, by_size, by_age):
        await transport.ensure_stream(stream)
    for i in range(8):
        await publish_raw(transport, f"{by_count.name}.a", i)
    assert await backend.stream_messages(by_count.name) == 5
    publisher = Publisher(transport, source="/conformance", deadline=2)
    with pytest.raises(PublishError):
        await publisher.publish(OrderCreated(order_id="x" * 2000), subject=f"{by_size.name}.a")
    await publisher.publish(order(1), subject=f"{by_size.name}.a")
    assert await backend.stream_messages(by_size.name) == 1
    for i in range(3):
        await publish_raw(transport, f"{by_age.name}.a", i)
    assert await backend.stream_messages(by_age.name) == 3
    await asyncio.sleep(1.6)
    assert await backend.stream_messages(by_age.name) == 0


async def test_max_ack_pending_bounds_unacked_deliveries(backend: Backend) -> None:
    transport, stream, durable = await raw_setup(backend, max_ack_pending=5)
    inbox, _ = await raw_pull(transport, stream, durable)
    for i in range(10):
        await publish_raw(transport, f"{stream}.a", i)
    await inbox.wait_for(5)
    await asyncio.sleep(0.5)
    assert len(inbox.messages) == 5
    await inbox.messages[0].ack()
    await inbox.wait_for(6)
    assert [m.stream_sequence for m in inbox.messages] == [1, 2, 3, 4, 5, 6]


async def test_dedup_inside_the_window_and_not_after_it(backend: Backend) -> None:
    stream = backend.stream(duplicate_window=1.0)
    transport = await backend.connect()
    await transport.ensure_stream(stream)
    publisher = Publisher(transport, source="/conformance")
    subject = f"{stream.name}.a"
    first = await publisher.publish(order(1), subject=subject, msg_id="same")
    again = await publisher.publish(order(1), subject=subject, msg_id="same")
    assert (first.sequence, again.sequence, again.duplicate) == (1, 1, True)
    await asyncio.sleep(1.5)
    later = await publisher.publish(order(1), subject=subject, msg_id="same")
    assert (later.sequence, later.duplicate) == (2, False)


async def test_reopened_consumer_resumes_where_it_stopped(backend: Backend) -> None:
    stream = backend.stream()
    handled: list[str] = []

    def build() -> App:
        app = App("cf")

        @app.handler(OrderCreated, stream=stream)
        async def collect(event: OrderCreated) -> None:
            handled.append(event.order_id)

        return app

    first = build()
    async with running(first, await backend.connect()) as probe:
        await first.publisher.publish_many(outgoing(f"{stream.name}.a", 10))
        await probe.wait_until(lambda: len(handled) >= 10)
    transport = await backend.connect()
    publisher = Publisher(transport, source="/conformance")
    await publisher.publish_many([Outgoing(order(i), subject=f"{stream.name}.a") for i in range(10, 20)])
    async with running(build(), await backend.connect()) as probe:
        await probe.wait_until(lambda: len(handled) >= 20)
        await asyncio.sleep(0.3)
    assert handled == [f"o-{i}" for i in range(20)]


async def test_concurrent_publishers_lose_nothing(backend: Backend) -> None:
    stream = backend.stream()
    setup = await backend.connect()
    await setup.ensure_stream(stream)

    async def produce(worker: int) -> list[PublishAck]:
        publisher = Publisher(await backend.connect(), source=f"/producer-{worker}")
        return [await publisher.publish(order(f"{worker}-{i}"), subject=f"{stream.name}.w{worker}") for i in range(100)]

    acks = [ack for batch in await asyncio.gather(*(produce(w) for w in range(10))) for ack in batch]
    assert sorted(a.sequence for a in acks) == list(range(1, 1001))
    received: set[str] = set()
    app = App("cf")

    @app.handler(OrderCreated, stream=stream, concurrency=8)
    async def collect(event: OrderCreated) -> None:
        received.add(event.order_id)

    async with running(app, setup) as probe:
        await probe.wait_until(lambda: len(received) >= 1000)
    assert received == {f"o-{w}-{i}" for w in range(10) for i in range(100)}


async def test_late_subscriber_gets_earlier_events(backend: Backend) -> None:
    stream = backend.stream()
    transport = await backend.connect()
    await transport.ensure_stream(stream)
    await Publisher(transport, source="/conformance").publish_many(outgoing(f"{stream.name}.a", 20))
    received: list[str] = []
    app = App("cf")

    @app.handler(OrderCreated, stream=stream)
    async def collect(event: OrderCreated) -> None:
        received.append(event.order_id)

    async with running(app, await backend.connect()) as probe:
        await probe.wait_until(lambda: len(received) >= 20)
    assert received == [f"o-{i}" for i in range(20)]


async def test_wildcard_filters(backend: Backend) -> None:
    stream = backend.stream()
    name = stream.name
    seen: dict[str, list[str]] = defaultdict(list)
    app = App("cf")

    @app.handler(OrderCreated, stream=stream, subject=f"{name}.orders.*")
    async def one_token(event: OrderCreated) -> None:
        seen["*"].append(event.order_id)

    @app.handler(OrderCreated, stream=stream, subject=f"{name}.orders.>")
    async def many_tokens(event: OrderCreated) -> None:
        seen[">"].append(event.order_id)

    async with running(app, await backend.connect()) as probe:
        for number, subject in enumerate(["orders.eu", "orders.eu.de", "payments.eu", "orders"]):
            await app.publisher.publish(order(number), subject=f"{name}.{subject}")
        await probe.wait_until(lambda: len(seen[">"]) >= 2 and len(seen["*"]) >= 1)
        await asyncio.sleep(0.3)
    assert seen == {"*": ["o-0"], ">": ["o-0", "o-1"]}


async def test_expected_last_sequence_conflicts(backend: Backend) -> None:
    stream = backend.stream()
    transport = await backend.connect()
    await transport.ensure_stream(stream)
    publisher = Publisher(transport, source="/conformance")
    a, b = f"{stream.name}.a", f"{stream.name}.b"
    await publisher.publish(order(1), subject=a, expected_last_sequence=0)
    await publisher.publish(order(2), subject=b, expected_last_subject_sequence=0)
    with pytest.raises(WrongLastSequence):
        await publisher.publish(order(3), subject=a, expected_last_sequence=1)
    with pytest.raises(WrongLastSequence):
        await publisher.publish(order(3), subject=b, expected_last_subject_sequence=0)
    ack = await publisher.publish(order(3), subject=a, expected_last_subject_sequence=1)
    assert ack.sequence == 3
    results = await publisher.publish_many([Outgoing(order(4), subject=b, expected_last_subject_sequence=99)])
    assert isinstance(results[0], WrongLastSequence)


async def test_an_atomic_batch_is_stored_whole_and_in_order(backend: Backend) -> None:
    stream = backend.stream(allow_atomic=True)
    transport = await backend.connect()
    await transport.ensure_stream(stream)
    publisher = Publisher(transport, source="/conformance")
    await publisher.publish(order(0), subject=f"{stream.name}.other")
    items = [Outgoing(order(i), subject=f"{stream.name}.{i % 2}", msg_id=f"a-{i}") for i in range(1, 6)]

    acks = await publisher.publish_atomic(items)

    assert [(a.stream, a.sequence, a.duplicate) for a in acks] == [(stream.name, n, False) for n in range(2, 7)]
    assert await backend.stream_messages(stream.name) == 6


async def test_an_atomic_batch_with_one_refused_event_stores_nothing(backend: Backend) -> None:
    stream = backend.stream(allow_atomic=True)
    transport = await backend.connect()
    await transport.ensure_stream(stream)
    publisher = Publisher(transport, source="/conformance")
    a, b = f"{stream.name}.a", f"{stream.name}.b"
    items = [Outgoing(order(1), subject=a), Outgoing(order(2), subject=b, expected_last_subject_sequence=0)]
    stale = [Outgoing(order(3), subject=a), Outgoing(order(4), subject=b, expected_last_subject_sequence=0)]
    # Expected-sequence checks see the stream as it was before the batch, so one on a subject the
    # batch already wrote to cannot hold.
    checked_twice = [Outgoing(order(5), subject=a), Outgoing(order(6), subject=a, expected_last_subject_sequence=1)]

    acks = await publisher.publish_atomic(items)
    with pytest.raises(WrongLastSequence):
        await publisher.publish_atomic(stale)
    with pytest.raises(WrongLastSequence):
        await publisher.publish_atomic(checked_twice)

    assert [a.sequence for a in acks] == [1, 2]
    assert await backend.stream_messages(stream.name) == 2


async def test_an_atomic_batch_holding_a_stored_msg_id_is_refused_whole(backend: Backend) -> None:
    stream = backend.stream(allow_atomic=True)
    transport = await backend.connect()
    await transport.ensure_stream(stream)
    publisher = Publisher(transport, source="/conformance")
    subject = f"{stream.name}.a"
    await publisher.publish(order(1), subject=subject, msg_id="known")

    with pytest.raises(BatchHoldsDuplicate) as refused:
        await publisher.publish_atomic(
            [Outgoing(order(2), subject=subject, msg_id="new"), Outgoing(order(1), subject=subject, msg_id="known")]
        )

    assert refused.value.stream == stream.name
    assert await backend.stream_messages(stream.name) == 1
    assert (await publisher.publish(order(2), subject=subject, msg_id="new")).duplicate is False


async def test_an_atomic_batch_needs_an_atomic_stream_and_only_one(backend: Backend) -> None:
    plain, atomic = backend.stream(), backend.stream(allow_atomic=True)
    transport = await backend.connect()
    await transport.ensure_stream(plain)
    await transport.ensure_stream(atomic)
    publisher = Publisher(transport, source="/conformance")
    two = [Outgoing(order(1), subject=f"{plain.name}.a"), Outgoing(order(2), subject=f"{atomic.name}.a")]

    with pytest.raises(PublishError, match="allow_atomic=True"):
        await publisher.publish_atomic([Outgoing(order(1), subject=f"{plain.name}.a")] * 2)
    with pytest.raises(PublishError, match="must go to one stream"):
        await publisher.publish_atomic(two)

    assert await backend.stream_messages(plain.name) == 0
    assert await backend.stream_messages(atomic.name) == 0


@pytest.mark.asyncio(loop_factories=["jetstream"])
async def test_server_restart_mid_stream(fresh_server: EmbeddedServer) -> None:
    """JetStream only: the memory broker has no process to kill."""

    async def connect() -> JetStreamTransport:
        return await JetStreamTransport.connect(
            ConnectOptions.from_url(fresh_server.url, reconnect_time_wait=0.1), pull_expires=2.0, idle_heartbeat=0.5
        )

    from eventwire import Stream

    stream = Stream("RESTART", ("restart.>",))
    handled: list[str] = []
    app = App("cf", publish_deadline=30)

    @app.handler(OrderCreated, stream=stream)
    async def collect(event: OrderCreated) -> None:
        handled.append(event.order_id)

    consumer_transport = await connect()
    async with running(app, consumer_transport) as probe:
        publisher = Publisher(await connect(), source="/conformance", deadline=30, attempt_timeout=0.5)
        for i in range(100):
            await publisher.publish(order(i), subject="restart.a", msg_id=f"m-{i}")
        await probe.wait_until(lambda: len(set(handled)) >= 100)
        fresh_server.kill()
        sending = asyncio.create_task(
            publisher.publish_many([Outgoing(order(i), subject="restart.a", msg_id=f"m-{i}") for i in range(100, 200)])
        )
        await asyncio.sleep(1.0)
        fresh_server.restart()
        results = await sending
        assert all(isinstance(r, PublishAck) for r in results)
        await probe.wait_until(lambda: len(set(handled)) >= 200, timeout=30)
    assert set(handled) == {f"o-{i}" for i in range(200)}
    nc_transport = await connect()
    try:
        info = await nc_transport.nc.jetstream().stream_info("RESTART")
        assert info.state.messages == 200
    finally:
        await nc_transport.close()


@pytest.mark.parametrize(
    ("field", "before", "after"),
    [("storage", "file", "memory"), ("retention", "limits", "workqueue"), ("retention", "limits", "interest")],
)
async def test_incompatible_stream_change_is_refused_and_the_stream_kept(
    backend: Backend, field: str, before: str, after: str
) -> None:
    declared: dict[str, Any] = {field: before}
    changed: dict[str, Any] = {field: after}
    stream = backend.stream(**declared)
    transport = await backend.connect()
    await transport.ensure_stream(stream)
    await publish_raw(transport, f"{stream.name}.a", 1)
    with pytest.raises(StreamConfigError, match=field) as caught:
        await transport.ensure_stream(dataclasses.replace(stream, **changed))
    assert caught.value.field == field
    assert await backend.stream_messages(stream.name) == 1
    await transport.ensure_stream(stream)  # the declaration it was created with is still accepted


@pytest.mark.parametrize("ordered_by", [None, "key"])
async def test_fetched_events_waiting_for_a_worker_are_not_redelivered(
    backend: Backend, ordered_by: OrderingMode | None
) -> None:
    """Six fetched events, one handled at a time for 0.6 s each: the last waits 3 s, past its ack_wait of 2 s.

    With ``ordered_by="key"`` the events share a key, so the second worker parks them behind the first.
    The prefetch leaves room, so a pull is always waiting and the server could redeliver at once.
    """
    stream = backend.stream()
    deliveries: list[tuple[str, int]] = []
    app = App("cf")

    @app.handler(
        OrderCreated,
        stream=stream,
        ack_wait=2.0,
        prefetch=12,
        concurrency=1 if ordered_by is None else 2,
        ordered_by=ordered_by,
    )
    async def slow(event: OrderCreated, delivery: Delivery) -> None:
        deliveries.append((event.order_id, delivery.delivery_count))
        await asyncio.sleep(0.6)

    async with running(app, await backend.connect()) as probe:
        await app.publisher.publish_many([Outgoing(order(i), subject=f"{stream.name}.a", key="same") for i in range(6)])
        await probe.wait_until(lambda: len([s for s in probe.settlements if s.outcome == "ack"]) >= 6)
        await asyncio.sleep(2.5)  # a redelivery, had there been one, arrives within ack_wait
    assert deliveries == [(f"o-{i}", 1) for i in range(6)]


class HeldUntilStop:
    """Wraps a transport: the first delivery stays on its way until the consumer stops pulling.

    What nats-py's drain does to a message the server sent just before the pull ended: it reaches
    the consumer while ``stop()`` is under way.
    """

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def pull(
        self,
        durable: Durable,
        sink: Callable[[InboundMessage], None],
        capacity: Callable[[], int],
        *,
        min_batch: int,
        on_failure: Callable[[EventwireError], None] | None = None,
    ) -> MessageSource:
        held: list[InboundMessage] = []

        def hold_first(message: InboundMessage) -> None:
            if not held:
                held.append(message)
                return
            sink(message)

        source = await self.inner.pull(durable, hold_first, capacity, min_batch=min_batch, on_failure=on_failure)

        class ReleasingSource:
            def notify(self) -> None:
                source.notify()

            async def stop(self) -> None:
                await source.stop()
                for message in held:
                    sink(message)

            async def release(self) -> None:
                await source.release()

            @property
            def holds_pin(self) -> bool:
                return source.holds_pin

        return ReleasingSource()


async def test_event_arriving_during_stop_is_handed_back_at_once(backend: Backend) -> None:
    stream = backend.stream()
    handled: list[int] = []

    def build() -> App:
        app = App("cf")

        @app.handler(OrderCreated, stream=stream, ack_wait=30.0)
        async def collect(event: OrderCreated, delivery: Delivery) -> None:
            handled.append(delivery.delivery_count)

        return app

    first = build()
    held = HeldUntilStop(await backend.connect())
    async with running(first, held) as first_probe:  # type: ignore[arg-type]
        await first.publisher.publish(order(1), subject=f"{stream.name}.a")
        await asyncio.sleep(0.5)
        assert handled == []  # still on its way
    second = build()
    async with running(second, await backend.connect()) as probe:
        # Well inside ack_wait: the nak handed it back, the server did not have to time it out.
        await probe.wait_until(lambda: len(handled) == 1, timeout=5.0)
    assert handled == [2]
    assert [(s.outcome, s.delivery_count, s.delay) for s in first_probe.settlements] == [("nak", 1, None)]


@pytest.mark.parametrize("policy", ["skip", "dead-letter"])
async def test_registered_type_the_handler_does_not_take(backend: Backend, policy: UnknownTypePolicy) -> None:
    stream = backend.stream()
    subject = f"{stream.name}.a"
    handled: list[str] = []
    app = App("cf", streams=[stream], publishes=[Publication(StockReserved, subject)])

    @app.handler(OrderCreated, stream=stream, unknown_types=policy)
    async def orders(event: OrderCreated) -> None:
        handled.append(event.order_id)

    async with running(app, await backend.connect()) as probe:
        (settlement,) = await probe.publish(StockReserved(order_id="r-1"), subject=subject)
        after = await probe.publish(order(2), subject=subject)
        letters = [p for p in probe.published if p.subject.startswith("dlq.")]
    assert [s.outcome for s in after] == ["ack"]
    assert handled == ["o-2"]
    assert settlement.ce_type == "shop.inventory.v1.StockReserved"
    assert settlement.reason is not None
    if policy == "skip":
        assert settlement.outcome == "ack"
        assert settlement.reason == "handler orders does not handle this type; skipped"
        assert letters == []
    else:
        assert settlement.outcome == "term"
        assert settlement.reason.startswith("dead-lettered, unknown-type: handler orders does not handle type")
        (letter,) = letters
        assert letter.subject == "dlq.cf.orders"
        assert letter.envelope is not None and letter.envelope.type == "shop.inventory.v1.StockReserved"


def stall(seconds: float) -> None:
    """Block the event loop: no callback, heartbeat or read runs meanwhile, as in a paused process."""
    loop = asyncio.get_running_loop()
    if isinstance(loop, VirtualTimeLoop):
        loop.clock.advance(seconds)
    else:
        time.sleep(seconds)


async def test_events_that_waited_past_ack_wait_in_a_stalled_loop_are_left_to_the_server(backend: Backend) -> None:
    """Five fetched events wait while the loop is blocked past their ack_wait: none is handled on that delivery.

    The server redelivers them, and the consumer, told there is room again, takes and handles each once.
    """
    stream = backend.stream()
    transport = await backend.connect()
    await transport.ensure_stream(stream)
    await Publisher(transport, source="/conformance").publish_many(outgoing(f"{stream.name}.a", 6))
    deliveries: list[tuple[str, int]] = []
    app = App("cf")

    # The prefetch is the whole batch: only the dropped events' room lets the consumer pull again.
    @app.handler(OrderCreated, stream=stream, ack_wait=1.0, prefetch=6)
    async def collect(event: OrderCreated, delivery: Delivery) -> None:
        deliveries.append((event.order_id, delivery.delivery_count))
        if event.order_id == "o-0" and delivery.delivery_count == 1:
            await asyncio.sleep(0.3)  # the other five have arrived and wait in the buffer
            stall(1.5)

    async with running(app, await backend.connect()) as probe:
        await probe.wait_until(lambda: sum(1 for o, _ in deliveries if o != "o-0") >= 5, timeout=30)
        await asyncio.sleep(1.5)  # room for a wrongly repeated delivery to show
        expired = app.consumers[0].expired
    by_event: dict[str, list[int]] = defaultdict(list)
    for order_id, count in deliveries:
        by_event[order_id].append(count)
    assert by_event["o-0"] in ([1], [1, 2])  # being handled during the stall: its late ack may lose the race
    assert {f"o-{n}": by_event[f"o-{n}"] for n in range(1, 6)} == {f"o-{n}": [2] for n in range(1, 6)}
    assert expired == 5


async def test_a_pinned_durable_delivers_to_one_puller_and_moves_once_it_stops_pulling(backend: Backend) -> None:
    transport, stream, durable = await raw_setup(backend, ack_wait=2.0, pinned=True)
    other = await backend.connect()
    first, first_source = await raw_pull(transport, stream, durable)
    await asyncio.sleep(0.2)  # its request is the first in the server's queue
    second, _ = await raw_pull(other, stream, durable)
    await asyncio.sleep(0.2)
    await publish_raw(transport, f"{stream}.a", 0)
    await first.wait_for(1)
    await first.messages[0].ack()
    pinned = await transport.pinned_state(durable)
    # For well past the pinned TTL: the puller renews its pin, so it keeps getting every event.
    for number in range(1, 26):
        await asyncio.sleep(0.2)
        await publish_raw(transport, f"{stream}.a", number)
        await first.wait_for(number + 1, timeout=5)
        await first.messages[number].ack()
    assert first_source.holds_pin and not second.messages  # type: ignore[attr-defined]
    assert (await transport.pinned_state(durable)).pin_id == pinned.pin_id
    assert pinned.pin_id is not None and pinned.waiting >= 1
    await first_source.stop()  # type: ignore[attr-defined]
    stopped_at = asyncio.get_running_loop().time()
    await publish_raw(transport, f"{stream}.a", 26)
    await second.wait_for(1, timeout=15)
    moved_after = second.times[0] - stopped_at
    # No request renews the pin any more: it goes once its TTL (ack_wait) has run out.
    assert moved_after <= 2.0 + 1.5, moved_after
    assert len(first.messages) == 26
    assert (await transport.pinned_state(durable)).pin_id not in (None, pinned.pin_id)


async def test_unpinning_hands_a_pinned_durable_to_another_puller_at_once(backend: Backend) -> None:
    transport, stream, durable = await raw_setup(backend, ack_wait=30.0, pinned=True)
    other = await backend.connect()
    first, _ = await raw_pull(transport, stream, durable)
    await asyncio.sleep(0.2)
    second, _ = await raw_pull(other, stream, durable)
    await asyncio.sleep(0.2)
    await publish_raw(transport, f"{stream}.a", 1)
    await first.wait_for(1)
    await first.messages[0].ack()
    await transport.unpin(durable)
    unpinned_at = asyncio.get_running_loop().time()
    await publish_raw(transport, f"{stream}.a", 2)
    await second.wait_for(1, timeout=10)
    assert second.times[0] - unpinned_at < 2.0
    assert len(first.messages) == 1


async def test_a_partitioned_stream_appends_the_partition_of_each_key(backend: Backend) -> None:
    name = unique("CF")
    stream = Stream(name, (f"{name}.*",), partitions=4)
    transport = await backend.connect()
    await transport.ensure_stream(stream)
    keys = [f"k{i}" for i in range(40)] + ["a b", "ä.ö"]
    items = [Outgoing(order(i), subject=f"{name}.created", key=k) for i, k in enumerate(keys)]
    await Publisher(transport, source="/conformance", streams=[stream]).publish_many(items)
    durable = Durable("all", name, stream.stored_filter(f"{name}.created"))
    await transport.ensure_durable(durable)
    inbox, _ = await raw_pull(transport, name, durable)
    await inbox.wait_for(len(keys))
    assert [m.subject for m in inbox.messages] == [
        f"{name}.created.{key_token(k)}.{partition_of(key_token(k), 4)}" for k in keys
    ]


def at(unix: float) -> str:
    """A one-shot message schedule: ``@at`` and the RFC 3339 UTC time (to the second)."""
    return "@at " + datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def schedule_setup(backend: Backend) -> tuple[Transport, str, Inbox]:
    stream = backend.stream(allow_msg_schedules=True)
    transport = await backend.connect()
    await transport.ensure_stream(stream)
    durable = Durable("fired", stream.name, f"{stream.name}.fired.>")
    await transport.ensure_durable(durable)
    inbox, _ = await raw_pull(transport, stream.name, durable)
    return transport, stream.name, inbox


async def test_a_message_schedule_fires_once_at_its_time_to_its_target_and_is_then_gone(backend: Backend) -> None:
    transport, name, inbox = await schedule_setup(backend)
    due = float(math.floor(wall_time()) + 2)  # a whole second: "@at" says it exactly
    headers = {**CE, "ce-id": "s-1", "Nats-Schedule": at(due), "Nats-Schedule-Target": f"{name}.fired.a"}
    await transport.publish(f"{name}.schedule.a", b"the payload", {**headers, "Nats-Msg-Id": "s-1"}, timeout=5)
    # Already due: it fires at once (as after an outage).
    late = {**headers, "ce-id": "s-2", "Nats-Schedule": at(wall_time() - 60), "Nats-Schedule-Target": f"{name}.fired.b"}
    published = wall_time()
    await transport.publish(f"{name}.schedule.b", b"overdue", late, timeout=5)

    await inbox.wait_for(1)
    overdue_after = wall_time() - published
    await inbox.wait_for(2)
    fired_at = wall_time()
    await asyncio.sleep(1.5)

    assert [(m.subject, m.data) for m in inbox.messages] == [
        (f"{name}.fired.b", b"overdue"),
        (f"{name}.fired.a", b"the payload"),
    ]
    fired = dict(inbox.messages[1].headers or {})
    assert fired["Nats-Scheduler"] == f"{name}.schedule.a"
    assert fired["ce-id"] == "s-1"
    assert not {"Nats-Schedule", "Nats-Schedule-Target", "Nats-Msg-Id"} & set(fired)
    assert overdue_after < 1.0
    assert fired_at >= due - backend.timing_tolerance
    print(f"\n[{backend.name}] fired {fired_at - due:.3f}s after its time, the overdue one {overdue_after:.3f}s after")
    assert await backend.stream_messages(name) == 2  # each schedule purged once it fired


async def test_rolling_up_a_schedules_subject_cancels_it_and_the_marker_expires(backend: Backend) -> None:
    transport, name, inbox = await schedule_setup(backend)
    schedule = {**CE, "Nats-Schedule": at(wall_time() + 1.0), "Nats-Schedule-Target": f"{name}.fired.a"}
    await transport.publish(f"{name}.schedule.a", b"never", schedule, timeout=5)
    await transport.publish(f"{name}.schedule.a", b"", {"Nats-Rollup": "sub", "Nats-TTL": "1s"}, timeout=5)

    assert await backend.stream_messages(name) == 1  # the marker alone
    await asyncio.sleep(2.5)
    assert inbox.messages == []

    async def marker_expired() -> bool:
        return await backend.stream_messages(name) == 0

    await eventually(marker_expired, timeout=10, interval=0.2)


async def test_schedules_ttls_and_rollups_are_refused_where_the_stream_does_not_allow_them(backend: Backend) -> None:
    plain, scheduling = backend.stream(), backend.stream(allow_msg_schedules=True)
    transport = await backend.connect()
    await transport.ensure_stream(plain)
    await transport.ensure_stream(scheduling)
    due = at(wall_time() + 60)
    refused = {
        (plain.name, "10188"): {"Nats-Schedule": due, "Nats-Schedule-Target": f"{plain.name}.fired"},
        (plain.name, "10166"): {"Nats-TTL": "60s"},
        (scheduling.name, "10190"): {"Nats-Schedule": due, "Nats-Schedule-Target": "elsewhere.fired"},
        (scheduling.name, "10165"): {"Nats-TTL": "soon"},
    }
    for (stream, code), headers in refused.items():
        with pytest.raises(PublishError, match=code):
            await transport.publish(f"{stream}.schedule", b"", {**CE, **headers}, timeout=5)
    with pytest.raises(PublishError, match="rollup"):
        await transport.publish(f"{plain.name}.a", b"", {**CE, "Nats-Rollup": "sub"}, timeout=5)
    assert await backend.stream_messages(plain.name) == 0
    assert await backend.stream_messages(scheduling.name) == 0
