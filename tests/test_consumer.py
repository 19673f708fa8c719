from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
from nats.aio.client import Client as NatsClient

from eventwire import App, Backoff, Delivery, Outgoing, RetryPolicy, Stream
from eventwire.server import EmbeddedServer

from .conftest import eventually, unique
from .events import OrderCreated, StockReserved

FAST = {"idle_heartbeat": 0.5, "pull_expires": 2.0}


@pytest.fixture
def stream() -> Stream:
    name = unique("C")
    return Stream(name, (f"{name}.>",))


@pytest.fixture
async def started() -> AsyncIterator[Callable[[App], asyncio.Future[None]]]:
    """Start Apps for a test and stop whatever is still running at its end."""
    apps: list[App] = []

    async def start(app: App) -> None:
        await app.start()
        apps.append(app)

    yield start  # type: ignore[misc]
    for app in apps:
        await app.stop()


def make_app(server: EmbeddedServer, name: str = "svc", **kwargs: object) -> App:
    return App(name, url=server.url, **{**FAST, **kwargs})  # type: ignore[arg-type]


async def test_round_trip_delivers_event_and_envelope(
    jetstream_server: EmbeddedServer, stream: Stream, started: Callable[[App], asyncio.Future[None]]
) -> None:
    received: list[Delivery] = []
    app = make_app(jetstream_server)

    @app.handler(OrderCreated, stream=stream, subject=f"{stream.name}.created")
    async def on_order(event: OrderCreated, delivery: Delivery) -> None:
        received.append(delivery)

    await started(app)
    sent = OrderCreated(order_id="o-1", total_cents=42)
    ack = await app.publisher.publish(sent, subject=f"{stream.name}.created", key="o-1")
    await eventually(lambda: len(received) == 1)
    delivery = received[0]
    assert delivery.event == sent
    assert (delivery.subject, delivery.stream_sequence, delivery.delivery_count) == (
        f"{stream.name}.created",
        ack.sequence,
        1,
    )
    assert delivery.envelope.type == "shop.orders.v1.OrderCreated"
    assert delivery.envelope.source == "/services/svc"
    assert delivery.envelope.subject == "o-1"
    assert delivery.handler == "on_order"


async def test_restart_resumes_after_the_last_ack(
    jetstream_server: EmbeddedServer, stream: Stream, raw_nc: NatsClient
) -> None:
    handled: Counter[str] = Counter()

    def build() -> App:
        app = make_app(jetstream_server, "resume")

        @app.handler(OrderCreated, stream=stream)
        async def count(event: OrderCreated) -> None:
            handled[event.order_id] += 1

        return app

    first = build()
    await first.start()
    for i in range(50):
        await first.publisher.publish(OrderCreated(order_id=f"o-{i}"), subject=f"{stream.name}.a")
    await eventually(lambda: len(handled) == 50)
    await first.stop()
    info = await raw_nc.jetstream().consumer_info(stream.name, "resume-count")  # the durable survives shutdown
    assert info.ack_floor.stream_seq == 50

    js = raw_nc.jetstream()
    second = build()
    async with second:
        for i in range(50, 100):
            await js.publish(
                f"{stream.name}.a",
                OrderCreated(order_id=f"o-{i}").SerializeToString(),
                headers={
                    "ce-specversion": "1.0",
                    "ce-id": f"id-{i}",
                    "ce-source": "/raw",
                    "ce-type": "shop.orders.v1.OrderCreated",
                },
            )
        await eventually(lambda: len(handled) == 100)
        await asyncio.sleep(0.3)
    assert set(handled) == {f"o-{i}" for i in range(100)}
    assert set(handled.values()) == {1}


async def test_failed_handler_is_redelivered_no_sooner_than_the_nak_delay(
    jetstream_server: EmbeddedServer, stream: Stream, started: Callable[[App], asyncio.Future[None]]
) -> None:
    loop = asyncio.get_running_loop()
    calls: list[tuple[int, float]] = []
    app = make_app(jetstream_server)

    @app.handler(OrderCreated, stream=stream, retry=RetryPolicy(backoff=Backoff(initial=1.0, jitter=0)))
    async def flaky(event: OrderCreated, delivery: Delivery) -> None:
        calls.append((delivery.delivery_count, loop.time()))
        if delivery.delivery_count == 1:
            raise RuntimeError("transient")

    await started(app)
    await app.publisher.publish(OrderCreated(order_id="o-1"), subject=f"{stream.name}.a")
    await eventually(lambda: len(calls) == 2)
    (first, t1), (second, t2) = calls
    assert (first, second) == (1, 2)
    assert t2 - t1 >= 1.0
    await asyncio.sleep(0.5)
    assert len(calls) == 2  # the second delivery succeeded and was acked


async def test_deliveries_stop_at_max_deliver(
    jetstream_server: EmbeddedServer, stream: Stream, started: Callable[[App], asyncio.Future[None]]
) -> None:
    calls: list[int] = []
    app = make_app(jetstream_server)

    @app.handler(
        OrderCreated, stream=stream, retry=RetryPolicy(max_deliveries=3, backoff=Backoff(initial=0.05, jitter=0))
    )
    async def broken(event: OrderCreated, delivery: Delivery) -> None:
        calls.append(delivery.delivery_count)
        raise RuntimeError("always")

    await started(app)
    await app.publisher.publish(OrderCreated(order_id="o-1"), subject=f"{stream.name}.a")
    await eventually(lambda: len(calls) == 3)
    await asyncio.sleep(1.0)
    assert calls == [1, 2, 3]


BAD_HEADERS = {
    "no ce-type": {"ce-specversion": "1.0", "ce-id": "b1", "ce-source": "/raw"},
    "unknown ce-type": {"ce-specversion": "1.0", "ce-id": "b2", "ce-source": "/raw", "ce-type": "shop.x.v1.ThingDone"},
    "bad spec version": {
        "ce-specversion": "0.3",
        "ce-id": "b3",
        "ce-source": "/raw",
        "ce-type": "shop.orders.v1.OrderCreated",
    },
    "bad percent-encoding": {
        "ce-specversion": "1.0",
        "ce-id": "b%zz",
        "ce-source": "/raw",
        "ce-type": "shop.orders.v1.OrderCreated",
    },
    "overlong utf-8": {
        "ce-specversion": "1.0",
        "ce-id": "b%C0%AF",
        "ce-source": "/raw",
        "ce-type": "shop.orders.v1.OrderCreated",
    },
    "garbage payload": {
        "ce-specversion": "1.0",
        "ce-id": "b5",
        "ce-source": "/raw",
        "ce-type": "shop.orders.v1.OrderCreated",
    },
}


async def test_bad_input_does_not_stop_the_good_events_behind_it(
    jetstream_server: EmbeddedServer,
    stream: Stream,
    raw_nc: NatsClient,
    started: Callable[[App], asyncio.Future[None]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled: list[str] = []
    app = make_app(jetstream_server)

    @app.handler(OrderCreated, stream=stream, retry=RetryPolicy(backoff=Backoff(initial=0.05)))
    async def on_order(event: OrderCreated) -> None:
        handled.append(event.order_id)

    await started(app)
    js = raw_nc.jetstream()
    subject = f"{stream.name}.a"
    good = OrderCreated(order_id="good").SerializeToString()
    await js.publish(subject, good)  # no headers at all
    for case, headers in BAD_HEADERS.items():
        payload = b"\xff\xff\xff\xff" if case == "garbage payload" else good
        await js.publish(subject, payload, headers=headers)
        await app.publisher.publish(OrderCreated(order_id=f"after {case}"), subject=subject)
    await eventually(lambda: len(handled) == len(BAD_HEADERS))
    assert handled == [f"after {case}" for case in BAD_HEADERS]
    await eventually(lambda: _settled(raw_nc, stream.name, "svc-on_order", 2 * len(BAD_HEADERS) + 1))
    info = await js.consumer_info(stream.name, "svc-on_order")
    assert info.num_redelivered == 0  # bad input is settled on its first delivery, never retried
    assert "dead-lettered, invalid-envelope" in caplog.text
    assert "dead-lettered, undecodable" in caplog.text
    assert "dead-lettered, unknown-type" in caplog.text
    assert "seq=" in caplog.text and "delivery=1" in caplog.text


async def _settled(nc: NatsClient, stream: str, durable: str, count: int) -> bool:
    info = await nc.jetstream().consumer_info(stream, durable)
    return bool(info.ack_floor.stream_seq == count and info.num_ack_pending == 0)


async def test_follow_up_events_carry_correlation_and_causation(
    jetstream_server: EmbeddedServer, started: Callable[[App], asyncio.Future[None]]
) -> None:
    orders = Stream(unique("O"), ("corr-orders-" + unique("") + ".>",))
    stock = Stream(unique("I"), ("corr-stock-" + unique("") + ".>",))
    seen: list[Delivery] = []
    app = make_app(jetstream_server)

    @app.handler(OrderCreated, stream=orders)
    async def reserve(event: OrderCreated, delivery: Delivery) -> None:
        await delivery.publish(StockReserved(order_id=event.order_id), subject=stock.subjects[0][:-1] + "reserved")

    @app.handler(StockReserved, stream=stock)
    async def notify(event: StockReserved, delivery: Delivery) -> None:
        seen.append(delivery)

    await started(app)
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await app.publisher.publish(
        OrderCreated(order_id="o-1"), subject=orders.subjects[0][:-1] + "created", event_id="root-1", traceparent=trace
    )
    await eventually(lambda: len(seen) == 1)
    envelope = seen[0].envelope
    assert (envelope.correlation_id, envelope.causation_id, envelope.traceparent) == ("root-1", "root-1", trace)


async def test_long_handler_sends_heartbeats_and_is_not_redelivered(
    jetstream_server: EmbeddedServer, stream: Stream, started: Callable[[App], asyncio.Future[None]]
) -> None:
    calls: list[int] = []
    app = make_app(jetstream_server)

    @app.handler(OrderCreated, stream=stream, ack_wait=1.0)
    async def slow(event: OrderCreated, delivery: Delivery) -> None:
        calls.append(delivery.delivery_count)
        await asyncio.sleep(3.0)

    await started(app)
    await app.publisher.publish(OrderCreated(order_id="o-1"), subject=f"{stream.name}.a")
    await eventually(lambda: len(calls) == 1)
    await asyncio.sleep(4.0)
    assert calls == [1]


async def test_concurrency_runs_handlers_in_parallel(
    jetstream_server: EmbeddedServer, stream: Stream, started: Callable[[App], asyncio.Future[None]]
) -> None:
    running = 0
    peak = 0
    done: list[str] = []
    app = make_app(jetstream_server)

    @app.handler(OrderCreated, stream=stream, concurrency=4)
    async def work(event: OrderCreated) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        done.append(event.order_id)

    await started(app)
    for i in range(20):
        await app.publisher.publish(OrderCreated(order_id=f"o-{i}"), subject=f"{stream.name}.a")
    await eventually(lambda: len(done) == 20)
    assert peak == 4


async def test_instances_of_one_durable_split_the_events(
    jetstream_server: EmbeddedServer, stream: Stream, started: Callable[[App], asyncio.Future[None]]
) -> None:
    by_instance: list[list[str]] = [[], []]
    apps = []
    for seen in by_instance:
        app = make_app(jetstream_server, "split")

        @app.handler(OrderCreated, stream=stream, prefetch=4)
        async def work(event: OrderCreated, seen: list[str] = seen) -> None:
            seen.append(event.order_id)
            await asyncio.sleep(0.005)

        await started(app)
        apps.append(app)
    for i in range(200):
        await apps[0].publisher.publish(OrderCreated(order_id=f"o-{i}"), subject=f"{stream.name}.a")
    await eventually(lambda: sum(map(len, by_instance)) >= 200)
    await asyncio.sleep(0.3)
    first, second = (set(seen) for seen in by_instance)
    assert first and second
    assert not first & second
    assert first | second == {f"o-{i}" for i in range(200)}
    assert sum(map(len, by_instance)) == 200


async def test_stop_settles_in_flight_and_hands_back_the_rest(
    jetstream_server: EmbeddedServer, stream: Stream, raw_nc: NatsClient
) -> None:
    started_events: list[str] = []
    finished: list[str] = []

    def build(delay: float) -> App:
        app = make_app(jetstream_server, "handback", shutdown_timeout=5.0)

        @app.handler(OrderCreated, stream=stream, ack_wait=30.0, prefetch=50)
        async def slow(event: OrderCreated) -> None:
            started_events.append(event.order_id)
            await asyncio.sleep(delay)
            finished.append(event.order_id)

        return app

    first = build(0.5)
    await first.start()
    for i in range(20):
        await first.publisher.publish(OrderCreated(order_id=f"o-{i}"), subject=f"{stream.name}.a")
    await eventually(lambda: len(started_events) == 1)
    await first.stop()
    assert finished == ["o-0"]  # the in-flight handler completed and was acked; nothing else started
    # The buffered events were nak'd without delay: a new instance gets them at once, not after ack_wait.
    async with build(0.0):
        await eventually(lambda: len(finished) == 20, timeout=5)
    assert sorted(finished) == sorted(f"o-{i}" for i in range(20))
    assert started_events.count("o-0") == 1


async def test_handler_cut_off_by_shutdown_timeout_is_redelivered(
    jetstream_server: EmbeddedServer, stream: Stream
) -> None:
    calls: list[int] = []

    def build(delay: float) -> App:
        app = make_app(jetstream_server, "cutoff", shutdown_timeout=0.3)

        @app.handler(OrderCreated, stream=stream, ack_wait=1.0)
        async def slow(event: OrderCreated, delivery: Delivery) -> None:
            calls.append(delivery.delivery_count)
            await asyncio.sleep(delay)

        return app

    first = build(30.0)
    await first.start()
    await first.publisher.publish(OrderCreated(order_id="o-1"), subject=f"{stream.name}.a")
    await eventually(lambda: len(calls) == 1)
    await asyncio.wait_for(first.stop(), 5)
    async with build(0.0):
        await eventually(lambda: len(calls) == 2, timeout=5)
    assert calls == [1, 2]


async def test_confirmed_acks_are_each_confirmed_by_the_server(
    jetstream_server: EmbeddedServer, stream: Stream, raw_nc: NatsClient
) -> None:
    handled: list[str] = []
    app = make_app(jetstream_server, "confirm")

    @app.handler(OrderCreated, stream=stream, confirm_acks=True, concurrency=4)
    async def work(event: OrderCreated) -> None:
        handled.append(event.order_id)

    async with app:
        await app.publisher.publish_many(
            [Outgoing(OrderCreated(order_id=f"o-{i}"), subject=f"{stream.name}.a") for i in range(50)]
        )
        await eventually(lambda: len(handled) == 50)
        unconfirmed = app.consumers[0].unconfirmed_acks
        # Confirmed: the ack floor is there the moment the handlers are done, no flush needed.
        info = await raw_nc.jetstream().consumer_info(stream.name, "confirm-work")
    assert unconfirmed == 0
    assert info.ack_floor.stream_seq == 50


async def test_an_ack_the_server_never_confirms_is_logged_and_counted(
    fresh_server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique("C")
    stream = Stream(name, (f"{name}.>",))
    app = make_app(fresh_server, "unconfirmed")

    @app.handler(OrderCreated, stream=stream, confirm_acks=True, ack_wait=8.0)
    async def work(event: OrderCreated) -> None:
        fresh_server.pause()  # the ack goes out; no confirmation can come back

    async with app:
        await app.publisher.publish(OrderCreated(order_id="o-1"), subject=f"{name}.a")
        try:
            await eventually(lambda: app.consumers[0].unconfirmed_acks == 1, timeout=15)
        finally:
            fresh_server.resume()
    warnings = [r.getMessage() for r in caplog.records if "ack not confirmed" in r.getMessage()]
    assert len(warnings) == 1
    assert f"subject={name}.a seq=1 delivery=1 type=shop.orders.v1.OrderCreated" in warnings[0]
