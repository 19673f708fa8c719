"""The public testing toolkit: virtual time, the probe, the pytest plugin's fixtures."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from eventwire import App, Backoff, Delivery, Publisher, RetryPolicy, Stream
from eventwire.testing import MemoryBroker, MemoryTransport, VirtualTimeLoop, running

from .events import OrderCreated, StockReserved

ORDERS = Stream("ORDERS", ("orders.>",))
STOCK = Stream("STOCK", ("stock.>",))


def inventory() -> App:
    app = App("inventory", streams=[STOCK])

    @app.handler(OrderCreated, stream=ORDERS, retry=RetryPolicy(backoff=Backoff(initial=30.0, jitter=0)))
    async def reserve(event: OrderCreated, delivery: Delivery) -> None:
        if event.order_id == "flaky" and delivery.delivery_count == 1:
            raise RuntimeError("warehouse timeout")
        await delivery.publish(StockReserved(order_id=event.order_id), subject="stock.reserved", key=event.order_id)

    return app


@pytest.mark.virtual_time
async def test_virtual_time_skips_the_waiting() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    started, wall = loop.time(), time.monotonic()
    await asyncio.sleep(3600)
    assert loop.time() - started >= 3600 - 1e-6
    assert time.monotonic() - wall < 5


@pytest.mark.virtual_time
async def test_the_clock_stands_still_while_a_thread_or_a_database_works(tmp_path: Path) -> None:
    """A timer set before thread work must not fire before that work's answer: time waits for the thread."""
    loop = asyncio.get_running_loop()
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'clock.db'}")
    finished: list[str] = []

    async def timer() -> None:
        await asyncio.sleep(1.0)
        finished.append("timer")

    async def work() -> None:
        await asyncio.to_thread(time.sleep, 0.2)
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        finished.append("work")

    started = loop.time()
    await asyncio.gather(timer(), work())
    await engine.dispose()
    assert finished == ["work", "timer"]
    assert loop.time() - started == pytest.approx(1.0)


@pytest.mark.virtual_time
async def test_probe_waits_for_handling_and_shows_what_was_published() -> None:
    async with running(inventory()) as probe:
        settlements = await probe.publish(OrderCreated(order_id="o-1"), subject="orders.created")
        assert [(s.handler, s.outcome, s.delivery_count) for s in settlements] == [("reserve", "ack", 1)]
        assert probe.published_events(StockReserved) == [StockReserved(order_id="o-1")]
        follow_up = probe.published[-1]
        assert follow_up.envelope is not None
        assert follow_up.envelope.causation_id == settlements[0].ce_id
        assert follow_up.ack.stream == "STOCK"


@pytest.mark.virtual_time
async def test_retries_take_virtual_time_only() -> None:
    loop = asyncio.get_running_loop()
    async with running(inventory()) as probe:
        started = loop.time()
        settlements = await probe.publish(OrderCreated(order_id="flaky"), subject="orders.created", timeout=120)
        assert [s.outcome for s in settlements] == ["nak", "ack"]
        assert settlements[0].delay == 30.0
        assert loop.time() - started >= 30.0


@pytest.mark.virtual_time
async def test_apps_share_a_broker_like_a_server(memory_broker: MemoryBroker) -> None:
    seen: list[str] = []
    notifications = App("notifications")

    @notifications.handler(StockReserved, stream=STOCK)
    async def notify(event: StockReserved) -> None:
        seen.append(event.order_id)

    async with (
        running(inventory(), MemoryTransport(memory_broker)) as probe,
        running(notifications, MemoryTransport(memory_broker)) as downstream,
    ):
        await probe.publish(OrderCreated(order_id="o-2"), subject="orders.created")
        await downstream.wait_until(lambda: seen == ["o-2"])
    assert memory_broker.info("STOCK", "notifications-notify").ack_floor == 1


@pytest.mark.virtual_time
async def test_memory_publisher_feeds_an_app_on_the_same_broker(
    memory_transport: MemoryTransport, memory_publisher: Publisher
) -> None:
    async with running(inventory(), memory_transport) as probe:
        await memory_publisher.publish(OrderCreated(order_id="o-3"), subject="orders.created")
        await probe.wait_until(lambda: len(probe.published_events(StockReserved)) == 1)
    assert [s.outcome for s in probe.settlements] == ["ack"]


def test_jetstream_url_gives_each_test_a_clean_server(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        import nats

        async def test_creates_a_stream(jetstream_url):
            nc = await nats.connect(jetstream_url)
            await nc.jetstream().add_stream(name="LEFTOVER", subjects=["leftover.>"])
            await nc.close()

        async def test_does_not_see_it(jetstream_url):
            nc = await nats.connect(jetstream_url)
            names = [info.config.name for info in await nc.jetstream().streams_info()]
            await nc.close()
            assert "LEFTOVER" not in names
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


@pytest.mark.virtual_time
async def test_a_publish_only_test_declares_its_stream_first(
    memory_transport: MemoryTransport, memory_publisher: Publisher
) -> None:
    """docs/testing.md, "Streams on the memory broker"."""
    await memory_transport.ensure_stream(Stream("ORDERS", ("orders.>",)))
    ack = await memory_publisher.publish(OrderCreated(order_id="o-1"), subject="orders.created")
    assert (ack.stream, ack.sequence) == ("ORDERS", 1)
