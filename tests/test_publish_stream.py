"""Publisher.publish_stream: events in as they come, outcomes out as acks arrive, a bounded window between."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest

from eventwire import Outgoing, PublishAck, Publisher, PublishTimeout, Stream
from eventwire.server import EmbeddedServer
from eventwire.transport import ConnectOptions, JetStreamTransport

from .conftest import unique
from .events import OrderCreated


def order(i: int, subject: str) -> Outgoing:
    return Outgoing(OrderCreated(order_id=f"o-{i}"), subject=subject, msg_id=f"st-{i}")


async def test_outcomes_arrive_while_the_producer_is_still_producing(transport: JetStreamTransport) -> None:
    name = unique("STREAM")
    await transport.ensure_stream(Stream(name, (f"{name}.>",)))
    log: list[tuple[str, int]] = []

    async def rate_limited() -> AsyncIterator[Outgoing]:
        for i in range(100):
            log.append(("in", i))
            yield order(i, f"{name}.created")
            await asyncio.sleep(0.005)

    outcomes = []
    async for item, outcome in Publisher(transport, source="/services/orders").publish_stream(rate_limited()):
        log.append(("out", int(item.msg_id.split("-")[1]) if item.msg_id else -1))
        outcomes.append(outcome)

    assert [o.sequence for o in outcomes if isinstance(o, PublishAck)] == list(range(1, 101))
    assert log.index(("out", 0)) < log.index(("in", 99))  # the first ack came back long before the input ended
    assert log.index(("out", 50)) < log.index(("in", 99))


@pytest.fixture
async def pausable(fresh_server: EmbeddedServer) -> AsyncIterator[tuple[EmbeddedServer, JetStreamTransport]]:
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(fresh_server.url, reconnect_time_wait=0.1))
    await transport.ensure_stream(Stream("ORDERS", ("orders.>",)))
    try:
        yield fresh_server, transport
    finally:
        await transport.close()


async def test_the_window_bounds_what_is_in_flight_and_a_stalled_server_holds_the_producer(
    pausable: tuple[EmbeddedServer, JetStreamTransport],
) -> None:
    server, transport = pausable
    produced = 0

    async def endless_until(count: int) -> AsyncIterator[Outgoing]:
        nonlocal produced
        for i in range(count):
            produced += 1
            yield order(i, "orders.created")

    publisher = Publisher(transport, source="/services/orders", deadline=30, attempt_timeout=0.3)
    outcomes: list[object] = []

    async def consume() -> None:
        async for _, outcome in publisher.publish_stream(endless_until(500), window=20):
            outcomes.append(outcome)

    server.pause()
    consuming = asyncio.create_task(consume())
    await asyncio.sleep(1.5)  # several attempt timeouts: the 20 in flight are resent, nothing new is asked for
    asked_while_paused = produced
    server.resume()
    await asyncio.wait_for(consuming, 30)

    assert asked_while_paused == 20
    assert len(outcomes) == 500 and all(isinstance(o, PublishAck) for o in outcomes)
    nc = await nats.connect(server.url)
    try:
        assert (await nc.jetstream().stream_info("ORDERS")).state.messages == 500  # resends were deduplicated
    finally:
        await nc.close()


async def test_a_producer_that_fails_gets_its_error_after_the_outcomes_of_what_it_sent(
    transport: JetStreamTransport,
) -> None:
    name = unique("STREAM")
    await transport.ensure_stream(Stream(name, (f"{name}.>",)))

    async def failing() -> AsyncIterator[Outgoing]:
        for i in range(10):
            yield order(i, f"{name}.created")
        raise RuntimeError("the source broke")

    seen = []
    with pytest.raises(RuntimeError, match="the source broke"):
        async for item, outcome in Publisher(transport, source="/services/orders").publish_stream(failing()):
            seen.append((item.msg_id, isinstance(outcome, PublishAck)))

    assert seen == [(f"st-{i}", True) for i in range(10)]


async def test_an_event_that_cannot_be_stored_by_its_deadline_gets_publish_timeout(
    pausable: tuple[EmbeddedServer, JetStreamTransport],
) -> None:
    server, transport = pausable
    publisher = Publisher(transport, source="/services/orders", deadline=1.0, attempt_timeout=0.2)
    server.kill()

    outcomes = [o async for _, o in publisher.publish_stream([order(i, "orders.created") for i in range(5)])]

    assert len(outcomes) == 5 and all(isinstance(o, PublishTimeout) for o in outcomes)
