"""``eventwire status`` on a real server: its figures are the server's own, its verdict is the exit code."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import nats
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

import eventwire
from eventwire import App, ConnectOptions, Delivery, Outgoing, Reject, RetryPolicy, Stream
from eventwire.outbox import Outbox, create_tables
from eventwire.server import EmbeddedServer
from eventwire.testing import running
from eventwire.transport import JetStreamTransport

from .events import OrderCreated

ROOT = Path(__file__).parent.parent
SERVICE = "fulfilment-of-orders-for-the-european-warehouses"  # long: piped output must not cut it
DURABLE = "reserve-stock-for-every-order-placed-in-the-european-shops"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventwire", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


async def workload(url: str) -> tuple[int, subprocess.CompletedProcess[str]]:
    """60 events handled (5 nak'd once, 1 dead-lettered), the App stopped, 40 more published.

    Returns the naks and ``status`` taken while the App still ran."""
    app = App(SERVICE)
    handled: list[int] = []

    orders = Stream("ORDERS", ("orders.>",))

    @app.handler(OrderCreated, stream=orders, durable=DURABLE, retry=RetryPolicy(backoff=[0.01]))
    async def handle(order: OrderCreated, delivery: Delivery) -> None:
        number = int(order.order_id)
        if number == 50:
            raise Reject("cannot be served")
        if number % 10 == 3 and number < 50 and delivery.delivery_count == 1:
            raise RuntimeError("flaky")  # 3, 13, 23, 33, 43: nak'd once each
        handled.append(number)

    transport = await JetStreamTransport.connect(ConnectOptions.from_url(url))
    async with running(app, transport) as probe:
        first = [Outgoing(OrderCreated(order_id=str(n)), subject="orders.created") for n in range(60)]
        await app.publisher.publish_many(first)
        await probe.wait_until(lambda: len(handled) == 59 and any(s.outcome == "term" for s in probe.settlements))
        await asyncio.sleep(0.3)  # the last acks reach the server
        while_running = await asyncio.to_thread(cli, "status", "--url", url)
    async with eventwire.connect(url, source="/tests/status") as publisher:
        await publisher.publish_many(
            [Outgoing(OrderCreated(order_id=str(n)), subject="orders.created") for n in range(60, 100)]
        )
    return len([s for s in probe.settlements if s.outcome == "nak"]), while_running


async def test_status_equals_the_servers_own_figures_and_its_exit_code_is_the_verdict(
    fresh_server: EmbeddedServer,
) -> None:
    url = fresh_server.url
    naks, running_status = await workload(url)
    stopped = await asyncio.to_thread(cli, "status", "--url", url, "--json")
    critical = await asyncio.to_thread(cli, "status", "--url", url, "--pending", "10:30")
    piped = await asyncio.to_thread(cli, "status", "--url", url)
    letters = await asyncio.to_thread(cli, "dlq", "list", "--url", url)
    letters_json = await asyncio.to_thread(cli, "dlq", "list", "--url", url, "--json")

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        stream_info = await js.stream_info("ORDERS")
        consumer_info = await js.consumer_info("ORDERS", DURABLE)
    finally:
        await nc.close()

    assert naks == 5
    assert running_status.returncode == 0, running_status.stdout + running_status.stderr
    assert stopped.returncode == 1, stopped.stderr  # nobody pulls while 40 messages wait: a warning
    report = json.loads(stopped.stdout)
    print(json.dumps(report, indent=2))
    (orders,) = [s for s in report["streams"] if s["name"] == "ORDERS"]
    assert (orders["messages"], orders["bytes"], orders["first_seq"], orders["last_seq"]) == (
        stream_info.state.messages,
        stream_info.state.bytes,
        stream_info.state.first_seq,
        stream_info.state.last_seq,
    )
    assert orders["messages"] == 100
    (consumer,) = orders["consumers"]
    assert consumer["name"] == DURABLE
    assert (
        consumer["pending"],
        consumer["ack_pending"],
        consumer["redelivered"],
        consumer["waiting_pulls"],
        consumer["delivered_stream_seq"],
        consumer["ack_floor_stream_seq"],
    ) == (
        consumer_info.num_pending,
        consumer_info.num_ack_pending,
        consumer_info.num_redelivered,
        consumer_info.num_waiting,
        consumer_info.delivered.stream_seq,
        consumer_info.ack_floor.stream_seq,
    )
    assert (consumer["pending"], consumer["ack_pending"], consumer["level"]) == (40, 0, "warning")
    assert consumer["problems"] == ["no client is pulling"]
    assert report["dead_letters"] == {SERVICE: 1}
    assert report["level"] == "warning"

    assert critical.returncode == 2, critical.stdout
    assert "critical: 40 pending" in critical.stdout
    assert DURABLE in piped.stdout and SERVICE in piped.stdout  # not a terminal: nothing cut short
    assert f"DLQ-{SERVICE}:1" in letters.stdout, letters.stdout
    (letter,) = json.loads(letters_json.stdout)
    assert (letter["id"], letter["reason"], letter["handler"]) == (f"DLQ-{SERVICE}:1", "rejected", "handle")


async def test_status_reports_the_outbox_backlog_with_db(fresh_server: EmbeddedServer, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}"
    engine = create_async_engine(url)
    await create_tables(engine)
    outbox = Outbox(source="/services/orders")
    async with AsyncSession(engine) as session, session.begin():
        for n in range(2):
            await outbox.add(session, OrderCreated(order_id=f"o-{n}"), subject="orders.created")
    await engine.dispose()
    await asyncio.sleep(1.1)
    report = await asyncio.to_thread(cli, "status", "--url", fresh_server.url, "--json", "--db", url)
    shown = await asyncio.to_thread(cli, "status", "--url", fresh_server.url, "--db", url)
    outbox_figures = json.loads(report.stdout)["outbox"]
    assert outbox_figures["pending_rows"] == 2 and outbox_figures["oldest_age"] >= 1.0
    assert re.search(r"outbox: 2 row\(s\) waiting, the oldest \d+s old", shown.stdout), shown.stdout
