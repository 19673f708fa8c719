"""Crash tests: processes killed, paused and stalled; effects exactly once (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from eventwire import App, Delivery, Outgoing, Publisher, Stream
from eventwire.inbox import Inbox
from eventwire.outbox import Outbox, OutboxRelay, outbox_table
from eventwire.server import EmbeddedServer
from eventwire.testing import running
from eventwire.transport import ConnectOptions, JetStreamTransport

from .conftest import LONG, eventually, unique
from .events import OrderCreated
from .test_outbox import _engine, effects, orders

ROOT = Path(__file__).parent.parent


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    created = await _engine(request.param, tmp_path)
    yield created
    await created.dispose()


async def effect_counts(engine: AsyncEngine) -> tuple[int, int]:
    """(rows, distinct orders) in test_effects."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(func.count()).select_from(effects))).scalar_one()
        distinct = (await conn.execute(select(func.count(effects.c.order_id.distinct())))).scalar_one()
    return int(rows), int(distinct)


async def publish_orders(server: EmbeddedServer, stream: Stream, count: int) -> None:
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(server.url))
    try:
        await transport.ensure_stream(stream)
        items = [Outgoing(OrderCreated(order_id=f"o-{i}"), subject=f"{stream.name}.created") for i in range(count)]
        await Publisher(transport, source="/tests").publish_many(items)
    finally:
        await transport.close()


def service_env(engine: AsyncEngine, stream: Stream, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "TEST_DB": engine.url.render_as_string(hide_password=False),
        "TEST_STREAM": stream.name,
        **extra,
    }


def spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.timeout(300)
async def test_consumer_killed_between_commit_and_ack_never_doubles_an_effect(
    engine: AsyncEngine, jetstream_server: EmbeddedServer
) -> None:
    name = unique("KILL")
    stream = Stream(name, (f"{name}.>",))
    await publish_orders(jetstream_server, stream, 250)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tests.services.crashloop", jetstream_server.url, "250"],
        cwd=ROOT,
        # A killed consumer's fetched event returns after ack_wait: keep both small.
        env=service_env(engine, stream, TEST_ACK_WAIT="1", TEST_PREFETCH="1"),
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    killed = int(result.stdout.strip().splitlines()[-1])
    print(f"consumer killed between commit and ack {killed} times")  # shown with pytest -s
    assert killed == 250  # every planned kill happened before the work could finish
    assert await effect_counts(engine) == (250, 250)


async def test_paused_consumer_and_its_replacement_give_one_effect_per_event(
    engine: AsyncEngine, jetstream_server: EmbeddedServer
) -> None:
    name = unique("PAUSE")
    stream = Stream(name, (f"{name}.>",))
    await publish_orders(jetstream_server, stream, 20)
    env = service_env(engine, stream, TEST_ACK_WAIT="2", TEST_HANDLER_SECONDS="0.3")
    command = [sys.executable, "-m", "eventwire", "run", "tests.services.billing:app", "--url", jetstream_server.url]
    first = spawn(command, env)
    second = None
    try:
        for _ in range(300):
            if (await effect_counts(engine))[0] >= 2:
                break
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # mid-stream, past ack_wait: its events go to the other instance
        second = spawn(command, env)
        await asyncio.sleep(5.0)
        first.send_signal(signal.SIGCONT)
        for _ in range(600):
            if (await effect_counts(engine))[1] == 20:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)  # the resumed instance finishes what it held
    finally:
        for process in (first, second):
            if process is not None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
                process.wait(30)
    assert await effect_counts(engine) == (20, 20)


async def test_a_duplicate_past_the_dedup_window_gives_one_effect(
    engine: AsyncEngine, jetstream_server: EmbeddedServer
) -> None:
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_server.url))
    stream = Stream(unique("DUP"), ("dup-" + unique("") + ".>",), duplicate_window=1.0)
    await transport.ensure_stream(stream)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    outbox = Outbox(source="/services/orders")
    for number in range(5):
        async with sessions() as session, session.begin():
            await outbox.add(session, OrderCreated(order_id=f"o-{number}"), subject=stream.subjects[0][:-1] + "new")
    relay = OutboxRelay(engine)
    async with engine.begin() as conn:
        await relay._publish(transport, await relay._claim(conn))
        await conn.rollback()  # stalled: published, never marked
    await asyncio.sleep(1.5)  # past the stream's duplicate window
    assert await relay.relay_once(transport) == 5
    info = await transport.nc.jetstream().stream_info(stream.name)
    assert info.state.messages == 10  # the stream now holds every event twice

    inbox = Inbox(sessions)
    app = App(unique("billing"), middleware=[inbox])

    @app.handler(OrderCreated, stream=stream)
    async def bill(order: OrderCreated, delivery: Delivery) -> None:
        await delivery.session.execute(effects.insert().values(event_id=delivery.envelope.id, order_id=order.order_id))

    async with running(app, transport) as probe:
        await probe.wait_until(lambda: len([s for s in probe.settlements if s.outcome == "ack"]) == 10)
    assert await effect_counts(engine) == (5, 5)
    assert inbox.skipped == 5


async def _produce(
    sessions: async_sessionmaker[AsyncSession],
    outbox: Outbox,
    subject: str,
    producer: int,
    *,
    count: int,
    committed: set[str],
) -> None:
    """One producer: ``count`` transactions; every eleventh rolls back after writing its order and event."""
    for number in range(count):
        order_id = f"p{producer:02d}-{number:04d}"
        for attempt in range(50):
            try:
                async with sessions() as session, session.begin():
                    await session.execute(orders.insert().values(id=order_id, total=number))
                    await outbox.add(session, OrderCreated(order_id=order_id), subject=subject, key=order_id)
                    _roll_back_every_eleventh(number)
                committed.add(order_id)
                break
            except _RolledBack:
                break
            except OperationalError:  # SQLite: database is locked; try again
                await asyncio.sleep(0.01 * (attempt + 1))


class _RolledBack(Exception):
    pass


def _roll_back_every_eleventh(number: int) -> None:
    if number % 11 == 10:
        raise _RolledBack


async def _sent_rows(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        sent = (await conn.execute(select(func.count()).where(outbox_table.c.sent_at.is_not(None)))).scalar_one()
        pending = (await conn.execute(select(func.count()).where(outbox_table.c.sent_at.is_(None)))).scalar_one()
    return int(sent), int(pending)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("allow_batched", [False, True], ids=["pipelined", "fast-ingest"])
async def test_relay_killed_twice_under_20_producers_loses_and_doubles_nothing(
    engine: AsyncEngine, jetstream_server: EmbeddedServer, allow_batched: bool
) -> None:
    name = unique("RELAY")
    stream = Stream(name, (f"{name}.>",), allow_batched=allow_batched)
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_server.url))
    await transport.ensure_stream(stream)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    outbox = Outbox(source="/services/orders")
    committed: set[str] = set()
    per_producer = 550 if LONG else 220  # every eleventh transaction rolled back
    expected_commits = 20 * (per_producer - per_producer // 11)
    relay_command = [
        sys.executable,
        "-m",
        "eventwire",
        "relay",
        "--db",
        engine.url.render_as_string(hide_password=False),
        "--url",
        jetstream_server.url,
        "--batch-size",
        "200",
        "--poll-interval",
        "0.2",
        "--log-level",
        "WARNING",
    ]
    relay = spawn(relay_command, dict(os.environ))
    kills = 0
    producers = asyncio.gather(
        *(_produce(sessions, outbox, f"{name}.created", p, count=per_producer, committed=committed) for p in range(20))
    )
    try:
        for fraction in (1 / 3, 1 / 2):

            async def reached(share: float = fraction) -> bool:
                return (await _sent_rows(engine))[0] >= expected_commits * share

            await eventually(reached, timeout=240, interval=0.05)
            relay.kill()
            relay.wait(30)
            kills += 1
            relay = spawn(relay_command, dict(os.environ))
        await producers
        for _ in range(1200):
            if (await _sent_rows(engine))[1] == 0:
                break
            await asyncio.sleep(0.1)
        relay.terminate()
        assert relay.wait(30) == 0
    finally:
        relay.kill()
        producers.cancel()
    assert kills == 2
    assert len(committed) == expected_commits
    assert await _sent_rows(engine) == (expected_commits, 0)
    js = transport.nc.jetstream()
    info = await js.stream_info(name)
    published: list[tuple[str, str]] = []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(name, sequence)
        published.append(((msg.headers or {})["Nats-Msg-Id"], OrderCreated.FromString(msg.data or b"").order_id))
    await transport.close()
    assert len(published) == expected_commits  # each event id exactly once
    assert len({msg_id for msg_id, _ in published}) == expected_commits
    assert {order for _, order in published} == committed  # nothing rolled back, nothing missing
