"""Outbox and inbox on SQLite and PostgreSQL, against a real JetStream server."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, event, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from eventwire import App, ConfigError, Delivery, Next, Outcome, Stream
from eventwire._streams import partition_of
from eventwire.inbox import Inbox
from eventwire.inbox import create_tables as create_inbox_tables
from eventwire.inbox import metadata as inbox_metadata
from eventwire.outbox import Outbox, OutboxRelay, create_tables, metadata, outbox_keys_table, outbox_table
from eventwire.server import EmbeddedServer
from eventwire.testing import running
from eventwire.transport import ConnectOptions, JetStreamTransport

from .conftest import postgres_engine, unique
from .events import OrderCreated

business = MetaData()
orders = Table("test_orders", business, Column("id", String(50), primary_key=True), Column("total", Integer))
effects = Table("test_effects", business, Column("event_id", String(100)), Column("order_id", String(50)))


def _sqlite_for_services(connection: Any, _: Any) -> None:
    """What a service on SQLite runs with: WAL, so readers do not block the writer, and a patient lock wait."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    created = await _engine(request.param, tmp_path)
    yield created
    await created.dispose()


@pytest.fixture
async def pg_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    created = await _engine("postgresql", tmp_path)
    yield created
    await created.dispose()


async def _engine(kind: str, tmp_path: Path) -> AsyncEngine:
    if kind == "sqlite":
        created = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'service.db'}")
        event.listen(created.sync_engine, "connect", _sqlite_for_services)
    else:
        created = await postgres_engine(pool_size=20)
    async with created.begin() as conn:
        for schema in (metadata, inbox_metadata, business):
            await conn.run_sync(schema.drop_all)
        await conn.run_sync(business.create_all)
    await create_tables(created)
    await create_inbox_tables(created)
    return created


@pytest.fixture(params=["pipelined", "fast-ingest"])
async def stream(
    jetstream_server: EmbeddedServer, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[JetStreamTransport, Stream]]:
    """A stream of the test's own, with and without fast-ingest batches (the relay's two paths)."""
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_server.url))
    declared = Stream(unique("OB"), (unique("outbox") + ".>",), allow_batched=request.param == "fast-ingest")
    await transport.ensure_stream(declared)
    try:
        yield transport, declared
    finally:
        await transport.close()


def subject_of(stream: Stream) -> str:
    return stream.subjects[0][:-1] + "created"


async def stored(server: EmbeddedServer, stream: Stream) -> list[tuple[str, str, str]]:
    """(msg id, ce-subject, order id) of every message in the stream, in stream order."""
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream.name)
        result = []
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream.name, sequence)
            headers = msg.headers or {}
            order = OrderCreated.FromString(msg.data or b"")
            result.append((headers["Nats-Msg-Id"], headers.get("ce-subject", ""), order.order_id))
        return result
    finally:
        await nc.close()


async def place_order(
    sessions: async_sessionmaker[AsyncSession],
    outbox: Outbox,
    stream: Stream,
    order_id: str,
    *,
    key: str | None = None,
    fail: bool = False,
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(insert(orders).values(id=order_id, total=100))
        await outbox.add(session, OrderCreated(order_id=order_id), subject=subject_of(stream), key=key)
        if fail:
            raise RuntimeError("business rule violated: roll back")


async def test_only_committed_events_are_published(
    engine: AsyncEngine, stream: tuple[JetStreamTransport, Stream], jetstream_server: EmbeddedServer
) -> None:
    transport, declared = stream
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    outbox = Outbox(source="/services/orders")
    await place_order(sessions, outbox, declared, "o-1")
    with pytest.raises(RuntimeError):
        await place_order(sessions, outbox, declared, "o-2", fail=True)
    await place_order(sessions, outbox, declared, "o-3", key="customer-9")
    relay = OutboxRelay(engine)
    assert await relay.relay_once(transport) == 2
    assert await relay.relay_once(transport) == 0
    published = await stored(jetstream_server, declared)
    assert [order for *_, order in published] == ["o-1", "o-3"]
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox_table.c.id, outbox_table.c.sent_at))).all()
    assert {row.id for row in rows} == {msg_id for msg_id, *_ in published}
    assert all(row.sent_at is not None for row in rows)


async def test_a_key_is_published_in_commit_order(
    engine: AsyncEngine, stream: tuple[JetStreamTransport, Stream], jetstream_server: EmbeddedServer
) -> None:
    """The first transaction to touch a key holds it until it commits; the second follows it."""
    transport, declared = stream
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    outbox = Outbox(source="/services/orders")
    first_added = asyncio.Event()
    release_first = asyncio.Event()

    async def slow_first() -> None:
        async with sessions() as session, session.begin():
            await outbox.add(session, OrderCreated(order_id="first"), subject=subject_of(declared), key="k")
            first_added.set()
            await release_first.wait()

    async def second() -> None:
        await first_added.wait()
        async with sessions() as session, session.begin():
            await outbox.add(session, OrderCreated(order_id="second"), subject=subject_of(declared), key="k")

    tasks = [asyncio.create_task(slow_first()), asyncio.create_task(second())]
    await asyncio.sleep(0.3)
    release_first.set()
    await asyncio.gather(*tasks)
    await OutboxRelay(engine).relay_once(transport)
    assert [order for *_, order in await stored(jetstream_server, declared)] == ["first", "second"]


async def test_concurrent_relays_publish_each_event_once_in_key_order(
    engine: AsyncEngine, stream: tuple[JetStreamTransport, Stream], jetstream_server: EmbeddedServer
) -> None:
    transport, declared = stream
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    outbox = Outbox(source="/services/orders")
    for start in range(0, 600, 100):
        async with sessions() as session, session.begin():
            for number in range(start, start + 100):
                await outbox.add(
                    session, OrderCreated(order_id=f"{number:04d}"), subject=subject_of(declared), key=f"k{number % 12}"
                )
    relays = [OutboxRelay(engine, batch_size=50) for _ in range(3)]

    async def drain(relay: OutboxRelay) -> None:
        while await relay.relay_once(transport):
            pass

    for _ in range(5):  # a relay may stop while another still holds rows: go round until none is left
        await asyncio.gather(*(drain(relay) for relay in relays))
    published = await stored(jetstream_server, declared)
    assert len(published) == 600
    assert len({msg_id for msg_id, *_ in published}) == 600
    by_key: dict[str, list[str]] = defaultdict(list)
    for _, key, order in published:
        by_key[key].append(order)
    for orders_of_key in by_key.values():
        assert orders_of_key == sorted(orders_of_key)
    assert sum(relay.published for relay in relays) == 600  # no row was marked twice


async def test_two_relays_on_postgresql_split_the_keys_instead_of_queueing(
    jetstream_server: EmbeddedServer, tmp_path: Path
) -> None:
    """Each relay takes keys the other is not publishing, so both move rows at once, each key still in order."""
    engine = await _engine("postgresql", tmp_path)
    transports = [await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_server.url)) for _ in range(2)]
    declared = Stream(unique("OB"), (unique("outbox") + ".>",), allow_batched=True)
    await transports[0].ensure_stream(declared)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    outbox = Outbox(source="/services/orders")
    for start in range(0, 6400, 400):
        async with sessions() as session, session.begin():
            for number in range(start, start + 400):
                created = OrderCreated(order_id=f"{number:05d}")
                await outbox.add(session, created, subject=subject_of(declared), key=f"k{number % 64}")
    relays = [OutboxRelay(engine, batch_size=400) for _ in range(2)]

    async def drain(index: int) -> None:
        while await relays[index].relay_once(transports[index]):
            pass

    try:
        for _ in range(3):  # one may find nothing while the other holds the last keys: go round again
            await asyncio.gather(drain(0), drain(1))
        published = await stored(jetstream_server, declared)
    finally:
        for transport in transports:
            await transport.close()
        await engine.dispose()
    assert len(published) == 6400 and len({msg_id for msg_id, *_ in published}) == 6400
    by_key: dict[str, list[str]] = defaultdict(list)
    for _, key, order_id in published:
        by_key[key].append(order_id)
    assert all(orders_of_key == sorted(orders_of_key) for orders_of_key in by_key.values())
    shares = [relay.published for relay in relays]
    assert sum(shares) == 6400
    assert min(shares) >= 6400 // 4, shares  # a relay queueing behind the other's rows would move next to nothing


@pytest.mark.parametrize("allow_batched", [False, True], ids=["pipelined", "fast-ingest"])
async def test_a_refused_first_row_holds_back_the_rest_of_its_key(
    engine: AsyncEngine, jetstream_server: EmbeddedServer, allow_batched: bool
) -> None:
    """The stream refuses a key's first row for good (too large): its later rows wait, other keys go on."""
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_server.url))
    declared = Stream(unique("OB"), (unique("outbox") + ".>",), max_msg_size=2048, allow_batched=allow_batched)
    await transport.ensure_stream(declared)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    outbox = Outbox(source="/services/orders")
    subject = subject_of(declared)
    for order_id, key in [("k-big", "k"), ("other-1", "other"), ("k-2", "k"), ("k-3", "k"), ("other-2", "other")]:
        size = 4096 if order_id == "k-big" else 0
        async with sessions() as session, session.begin():
            await outbox.add(session, OrderCreated(order_id=order_id, customer_id="x" * size), subject=subject, key=key)
    relay = OutboxRelay(engine, publish_deadline=1.0)
    try:
        assert await relay.relay_once(transport) == 2
        assert await relay.relay_once(transport) == 0  # refused again; nothing behind it overtakes it
        assert [order for *_, order in await stored(jetstream_server, declared)] == ["other-1", "other-2"]
        async with engine.connect() as conn:
            pending = (
                await conn.execute(
                    select(outbox_table.c.key_seq)
                    .where(outbox_table.c.sent_at.is_(None), outbox_table.c.event_key == "k")
                    .order_by(outbox_table.c.key_seq)
                )
            ).all()
        assert [row.key_seq for row in pending] == [1, 2, 3]
        await transport.ensure_stream(dataclasses.replace(declared, max_msg_size=None))  # the operator's fix
        assert await relay.relay_once(transport) == 3
        published = [order for *_, order in await stored(jetstream_server, declared)]
        assert published == ["other-1", "other-2", "k-big", "k-2", "k-3"]
    finally:
        await transport.close()


async def test_relay_keeps_rows_while_the_broker_is_down(engine: AsyncEngine, fresh_server: EmbeddedServer) -> None:
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(fresh_server.url, reconnect_time_wait=0.1))
    declared = Stream("OUTAGE", ("outage.>",))
    await transport.ensure_stream(declared)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    outbox = Outbox(source="/services/orders")
    for number in range(5):
        await place_order(sessions, outbox, declared, f"o-{number}", key="k")
    relay = OutboxRelay(engine, publish_deadline=1.0)
    fresh_server.kill()
    try:
        assert await relay.relay_once(transport) == 0
        async with engine.connect() as conn:
            pending = (await conn.execute(select(func.count()).where(outbox_table.c.sent_at.is_(None)))).scalar()
        assert pending == 5
        fresh_server.restart()
        relay.start(transport)
        await asyncio.sleep(0.1)
        for _ in range(100):
            async with engine.connect() as conn:
                pending = (await conn.execute(select(func.count()).where(outbox_table.c.sent_at.is_(None)))).scalar()
            if pending == 0:
                break
            await asyncio.sleep(0.1)
        await relay.stop()
        assert pending == 0
        assert [order for *_, order in await stored(fresh_server, declared)] == [f"o-{n}" for n in range(5)]
    finally:
        await transport.close()


async def test_a_crash_between_publish_and_mark_is_deduplicated(
    engine: AsyncEngine, stream: tuple[JetStreamTransport, Stream], jetstream_server: EmbeddedServer
) -> None:
    transport, declared = stream
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    outbox = Outbox(source="/services/orders")
    for number in range(10):
        await place_order(sessions, outbox, declared, f"o-{number}")
    relay = OutboxRelay(engine)
    async with engine.begin() as conn:
        rows = await relay._claim(conn)
        await relay._publish(transport, rows)
        await conn.rollback()  # the process died before marking the rows sent
    assert await relay.relay_once(transport) == 10
    assert len(await stored(jetstream_server, declared)) == 10


async def test_sent_rows_and_idle_keys_are_pruned(
    engine: AsyncEngine, stream: tuple[JetStreamTransport, Stream]
) -> None:
    transport, declared = stream
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    outbox = Outbox(source="/services/orders")
    for number in range(4):
        await place_order(sessions, outbox, declared, f"o-{number}", key=f"k{number}")
    relay = OutboxRelay(engine, retention=60)
    await relay.relay_once(transport)
    await place_order(sessions, outbox, declared, "o-pending", key="k0")
    async with engine.begin() as conn:
        await conn.execute(
            update(outbox_table)
            .where(outbox_table.c.sent_at.is_not(None))
            .values(sent_at=datetime.now(UTC) - timedelta(hours=1))
        )
    assert await relay.prune() == 4
    async with engine.connect() as conn:
        assert (await conn.execute(select(outbox_table.c.id))).all().__len__() == 1
        assert sorted(r.event_key for r in (await conn.execute(select(outbox_keys_table))).all()) == ["k0"]


async def test_postgres_notify_wakes_the_relay(
    pg_engine: AsyncEngine, stream: tuple[JetStreamTransport, Stream], jetstream_server: EmbeddedServer
) -> None:
    engine = pg_engine
    transport, declared = stream
    relay = OutboxRelay(engine, poll_interval=60)
    relay.start(transport)
    try:
        await asyncio.sleep(0.5)  # the relay has polled once and now waits
        await place_order(async_sessionmaker(engine), Outbox(source="/services/orders"), declared, "o-1")
        for _ in range(50):
            if relay.published:
                break
            await asyncio.sleep(0.1)
        assert relay.published == 1
    finally:
        await relay.stop()


async def test_inbox_runs_effects_once_per_event(
    engine: AsyncEngine, stream: tuple[JetStreamTransport, Stream], jetstream_server: EmbeddedServer
) -> None:
    transport, declared = stream
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    inbox = Inbox(sessions)
    calls: list[str] = []
    fail_once = {"o-2"}
    app = App(unique("billing"), middleware=[inbox])

    @app.handler(OrderCreated, stream=declared)
    async def bill(order: OrderCreated, delivery: Delivery) -> None:
        calls.append(order.order_id)
        await delivery.session.execute(insert(effects).values(event_id=delivery.envelope.id, order_id=order.order_id))
        if order.order_id in fail_once:
            fail_once.discard(order.order_id)
            raise RuntimeError("after the write: must roll back")

    async with running(app, transport) as probe:
        for number in range(3):
            event = OrderCreated(order_id=f"o-{number}")
            # The same event twice (same ce-id, new msg id): what a lost ack or an outbox resend looks like.
            for attempt in range(2):
                await app.publisher.publish(
                    event, subject=subject_of(declared), event_id=f"evt-{number}", msg_id=f"m-{number}-{attempt}"
                )
        await probe.wait_until(lambda: len([s for s in probe.settlements if s.outcome == "ack"]) == 6, timeout=30)
    async with engine.connect() as conn:
        rows = (await conn.execute(select(effects.c.order_id))).all()
    assert sorted(row.order_id for row in rows) == ["o-0", "o-1", "o-2"]
    assert calls.count("o-2") == 2  # the failed attempt rolled its effect back and ran again
    assert calls.count("o-0") == calls.count("o-1") == 1
    assert inbox.skipped == 3


async def test_an_outcome_other_than_ack_from_inside_the_inbox_rolls_it_back(
    engine: AsyncEngine, stream: tuple[JetStreamTransport, Stream]
) -> None:
    """A step inside the inbox returns nak instead of raising: neither the effect nor the claim may stay."""
    transport, declared = stream
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    inbox = Inbox(sessions)
    calls: list[int] = []

    def nak_first(next_step: Next) -> Next:
        async def step(delivery: Delivery) -> Outcome | None:
            outcome = await next_step(delivery)
            return Outcome.nak(0.1, "first time round") if delivery.delivery_count == 1 else outcome

        return step

    app = App(unique("billing"), middleware=[inbox, nak_first])

    @app.handler(OrderCreated, stream=declared)
    async def bill(order: OrderCreated, delivery: Delivery) -> None:
        calls.append(delivery.delivery_count)
        await delivery.session.execute(insert(effects).values(event_id=delivery.envelope.id, order_id=order.order_id))

    async with running(app, transport) as probe:
        settlements = await probe.publish(OrderCreated(order_id="o-1"), subject=subject_of(declared))
    async with engine.connect() as conn:
        rows = (await conn.execute(select(effects.c.order_id))).all()
    assert [s.outcome for s in settlements] == ["nak", "ack"]
    assert calls == [1, 2]  # the claim of the first attempt was rolled back with its effect
    assert [row.order_id for row in rows] == ["o-1"]
    assert inbox.skipped == 0


async def test_the_relay_publishes_to_a_partitioned_stream_with_each_key_in_its_partition(
    engine: AsyncEngine, jetstream_server: EmbeddedServer
) -> None:
    name = unique("OBP")
    partitioned = Stream(name, (f"{name}.*",), partitions=4, allow_batched=True)
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_server.url))
    try:
        await transport.ensure_stream(partitioned)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        outbox = Outbox(source="/services/orders", streams=[partitioned])
        keys = [f"customer-{i % 7}" for i in range(50)]
        async with sessions() as session, session.begin():
            for number, key in enumerate(keys):
                await outbox.add(session, OrderCreated(order_id=f"o-{number}"), subject=f"{name}.created", key=key)
        async with sessions() as session, session.begin():
            with pytest.raises(ConfigError, match="is partitioned by key"):
                await outbox.add(session, OrderCreated(order_id="keyless"), subject=f"{name}.created")
        assert await OutboxRelay(engine).relay_once(transport) == 50
    finally:
        await transport.close()
    nc = await nats.connect(jetstream_server.url)
    try:
        js = nc.jetstream()
        subjects = [str((await js.get_msg(name, seq)).subject) for seq in range(1, 51)]
    finally:
        await nc.close()
    assert sorted(subjects) == sorted(f"{name}.created.{key}.{partition_of(key, 4)}" for key in keys)
