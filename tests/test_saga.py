"""The saga primitive through the shop's fulfilment saga, on the memory broker (timer table) and on
nats-server (message schedules, and the timer table): every path, and the faults a step must survive."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import ServerVersion
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from eventwire import App, ConnectOptions, Delivery, EventwireError, Outcome
from eventwire._delivery import Middleware, Next
from eventwire.demo._fulfilment import FULFILMENT, INVENTORY, ORDERS, PAYMENTS, Fulfilment, fulfilment_service
from eventwire.demo.contracts.shop.inventory.v1.inventory_pb2 import (
    StockRejected,
    StockReleaseRequested,
    StockReservationRequested,
    StockReserved,
)
from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import LineItem, OrderCreated
from eventwire.demo.contracts.shop.payments.v1.payments_pb2 import (
    PaymentCaptured,
    PaymentFailed,
    PaymentRequested,
    RefundRequested,
)
from eventwire.inbox import create_tables as create_inbox_tables
from eventwire.outbox import create_tables as create_outbox_tables
from eventwire.saga import Saga, SagaTimerFired, saga_table
from eventwire.saga import create_tables as create_saga_tables
from eventwire.server import EmbeddedServer
from eventwire.testing import VirtualTimeLoop
from eventwire.transport import JetStreamTransport, Transport
from eventwire.transport.memory import MemoryBroker, MemoryTransport

from .conftest import eventually

PAYMENT_TIMEOUT = 1.5


@dataclass
class Gateway:
    """What the stub participants do per order, and what they saw."""

    payment: dict[str, str] = field(default_factory=dict)  # order id -> capture | fail | silent | late
    stock: dict[str, bool] = field(default_factory=dict)  # order id -> in stock (default True)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)  # (event type, order id)
    armed: dict[str, str] = field(default_factory=dict)  # order id -> payment timer id, read while paying
    late: list[tuple[App, PaymentCaptured]] = field(default_factory=list)


def participants(gateway: Gateway, engine: AsyncEngine) -> App:
    """Inventory and payments as stubs: they answer the saga's requests as ``gateway`` says."""
    app = App("participants", streams=[FULFILMENT, INVENTORY, PAYMENTS])

    @app.handler(
        StockReservationRequested,
        PaymentRequested,
        StockReleaseRequested,
        RefundRequested,
        stream=FULFILMENT,
        subject="fulfilment.>",
    )
    async def answer(request: Any, delivery: Delivery) -> None:
        order_id = request.order_id
        gateway.requests[(type(request).__name__, order_id)] += 1
        if isinstance(request, StockReservationRequested):
            if gateway.stock.get(order_id, True):
                await delivery.publish(StockReserved(order_id=order_id), subject="inventory.reserved", key=order_id)
            else:
                rejected = StockRejected(order_id=order_id, sku=request.lines[0].sku, reason="out of stock")
                await delivery.publish(rejected, subject="inventory.rejected", key=order_id)
        elif isinstance(request, PaymentRequested):
            async with engine.connect() as conn:
                row = (await conn.execute(select(saga_table.c.timers).where(saga_table.c.saga_key == order_id))).first()
            if row is not None and "payment" in json.loads(row.timers):
                gateway.armed[order_id] = json.loads(row.timers)["payment"]["id"]
            what = gateway.payment.get(order_id, "capture")
            captured = PaymentCaptured(
                order_id=order_id, payment_id=f"pay-{order_id}", amount_cents=request.amount_cents
            )
            if what == "capture":
                await delivery.publish(captured, subject="payments.captured", key=order_id)
            elif what == "fail":
                await delivery.publish(
                    PaymentFailed(order_id=order_id, reason="card declined"), subject="payments.failed", key=order_id
                )
            elif what == "late":
                gateway.late.append((app, captured))

    return app


@dataclass
class Shop:
    saga: Saga[Fulfilment]
    app: App
    gateway: Gateway
    engine: AsyncEngine
    orders: App
    outcomes: Counter[tuple[str, str]]

    async def place(self, order_id: str) -> None:
        order = OrderCreated(
            order_id=order_id, customer_id="c-1", items=[LineItem(sku="apple", quantity=2)], total_cents=500
        )
        await self.orders.publisher.publish(order, subject="orders.created", key=order_id, msg_id=f"ord-{order_id}")

    async def state(self, order_id: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(saga_table.c.state, saga_table.c.finished_at, saga_table.c.version).where(
                        saga_table.c.saga_key == order_id
                    )
                )
            ).first()
        assert row is not None, order_id
        return {**json.loads(row.state), "finished": row.finished_at is not None, "version": row.version}

    async def outcome(self, order_id: str) -> str:
        await eventually(lambda: any(o == order_id for _, o in self.outcomes), timeout=30)
        return next(t for t, o in self.outcomes if o == order_id)


async def _database(tmp_path: Path) -> AsyncEngine:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'fulfilment.db'}")

    def pragmas(connection: Any, _: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    event.listen(engine.sync_engine, "connect", pragmas)
    for create in (create_outbox_tables, create_inbox_tables, create_saga_tables):
        await create(engine)
    return engine


@contextlib.asynccontextmanager
async def shop(
    connect: Callable[[], Any],
    tmp_path: Path,
    *,
    timers: str,
    middleware: Middleware | None = None,
    payment_timeout: float = PAYMENT_TIMEOUT,
) -> AsyncIterator[Shop]:
    engine = await _database(tmp_path)
    gateway = Gateway()
    app, saga = fulfilment_service(
        async_sessionmaker(engine, expire_on_commit=False),
        timers=timers,  # type: ignore[arg-type]
        payment_timeout=payment_timeout,
    )
    if middleware is not None:
        app._middleware = (middleware,)
    outcomes: Counter[tuple[str, str]] = Counter()
    orders = App("orders", streams=[ORDERS])
    notifications = App("notifications", streams=[FULFILMENT])

    @notifications.handler(*_outcome_types(), stream=FULFILMENT, subject="fulfilment.order.>")
    async def record(outcome: Any) -> None:
        outcomes[(type(outcome).__name__, outcome.order_id)] += 1

    apps = [app, participants(gateway, engine), orders, notifications]
    try:
        for started in apps:
            await started.start(transport=await connect())
        yield Shop(saga, app, gateway, engine, orders, outcomes)
    finally:
        for started in reversed(apps):
            await started.stop()
        await engine.dispose()


def _outcome_types() -> tuple[type[Any], ...]:
    from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import OrderCancelled, OrderConfirmed

    return OrderConfirmed, OrderCancelled


async def happy_path_confirms_with_one_capture(connect: Callable[[], Any], timers: str, tmp_path: Path) -> None:
    async with shop(connect, tmp_path, timers=timers) as s:
        await s.place("o-1")
        assert await s.outcome("o-1") == "OrderConfirmed"
        state = await s.state("o-1")
        requests = dict(s.gateway.requests)
        # The capture cancelled the payment timer: its due time passes without a firing (even an ignored one).
        await asyncio.sleep(PAYMENT_TIMEOUT + 1.0)
        ignored = s.saga.ignored_timers
        s.saga.retention = 0.001
        pruned = await s.saga.prune()
        async with s.engine.connect() as conn:
            left = (await conn.execute(select(saga_table.c.saga_key))).all()
    assert state["status"] == "confirmed" and state["finished"] and state["payment_id"] == "pay-o-1"
    assert requests == {("StockReservationRequested", "o-1"): 1, ("PaymentRequested", "o-1"): 1}
    assert s.outcomes == {("OrderConfirmed", "o-1"): 1}
    assert ignored == 0
    assert (pruned, left) == (1, [])


async def payment_failure_releases_the_stock_and_cancels(
    connect: Callable[[], Any], timers: str, tmp_path: Path
) -> None:
    async with shop(connect, tmp_path, timers=timers) as s:
        s.gateway.payment["o-2"] = "fail"
        s.gateway.stock["o-3"] = False
        await s.place("o-2")
        await s.place("o-3")
        assert await s.outcome("o-2") == "OrderCancelled"
        assert await s.outcome("o-3") == "OrderCancelled"
        await eventually(lambda: ("StockReleaseRequested", "o-2") in s.gateway.requests)
        failed, rejected = await s.state("o-2"), await s.state("o-3")
    assert failed["reason"] == "payment failed: card declined" and failed["finished"]
    assert rejected["reason"] == "out of stock: apple"
    assert ("StockReleaseRequested", "o-3") not in s.gateway.requests  # nothing was reserved


async def no_payment_answer_times_out_releases_and_cancels(
    connect: Callable[[], Any], timers: str, tmp_path: Path
) -> None:
    async with shop(connect, tmp_path, timers=timers) as s:
        s.gateway.payment["o-4"] = "silent"
        loop = asyncio.get_running_loop()
        placed = loop.time()
        await s.place("o-4")
        assert await s.outcome("o-4") == "OrderCancelled"
        took = loop.time() - placed
        await eventually(lambda: ("StockReleaseRequested", "o-4") in s.gateway.requests)
        state = await s.state("o-4")
    print(f"\ntimed out {took:.2f}s after the order (payment timeout {PAYMENT_TIMEOUT}s)")
    assert state["reason"] == "no answer from payments in time"
    if isinstance(loop, VirtualTimeLoop):  # exact: the due time plus at most one poll of the timer table
        assert PAYMENT_TIMEOUT <= took <= PAYMENT_TIMEOUT + s.saga.poll_interval + 0.1
    else:
        assert PAYMENT_TIMEOUT <= took < PAYMENT_TIMEOUT + 5.0


async def a_late_timer_and_a_late_capture_after_the_saga_finished(
    connect: Callable[[], Any], timers: str, tmp_path: Path
) -> None:
    """A timer firing after the saga moved on changes nothing; a capture after the timeout is refunded."""
    async with shop(connect, tmp_path, timers=timers) as s:
        await s.place("o-5")
        assert await s.outcome("o-5") == "OrderConfirmed"
        before = await s.state("o-5")
        # The payment timer of o-5 as it was armed, firing now: as a schedule that came due while its cancel
        # was on its way, or the timer table's row of an instance that stalled.
        await _fire_late(s, "o-5", s.gateway.armed["o-5"])
        await eventually(lambda: s.saga.ignored_timers >= 1, timeout=30)
        after = await s.state("o-5")

        s.gateway.payment["o-6"] = "late"
        await s.place("o-6")
        assert await s.outcome("o-6") == "OrderCancelled"  # timed out
        app, captured = s.gateway.late[0]
        await app.publisher.publish(captured, subject="payments.captured", key="o-6")
        await eventually(lambda: ("RefundRequested", "o-6") in s.gateway.requests)
    assert after == before  # not one step more
    assert s.outcomes[("OrderCancelled", "o-5")] == 0


async def _fire_late(s: Shop, order_id: str, timer_id: str) -> None:
    if s.saga.timer_mode == "table":
        from datetime import UTC, datetime

        from eventwire.saga import saga_timers_table

        now = datetime.fromtimestamp(s.saga.clock(), UTC)
        async with s.engine.begin() as conn:
            await conn.execute(
                saga_timers_table.insert().values(
                    saga="fulfilment", saga_key=order_id, timer="payment", timer_id=timer_id, due_at=now
                )
            )
        s.saga._wake.set()
        return
    fired = SagaTimerFired(saga="fulfilment", key=order_id, timer="payment", timer_id=timer_id)
    await s.orders.publisher.publish(
        fired, subject=f"sagas.fulfilment.fulfilment.fired.{order_id}.payment", key=order_id
    )


async def a_redelivered_event_repeats_no_step(connect: Callable[[], Any], timers: str, tmp_path: Path) -> None:
    async with shop(connect, tmp_path, timers=timers, payment_timeout=60.0) as s:
        s.gateway.payment["o-7"] = "silent"
        await s.place("o-7")
        await eventually(lambda: ("PaymentRequested", "o-7") in s.gateway.requests)
        # The same StockReserved event (same ce-id) stored a second time, under another msg id: as a
        # redelivery after a lost ack, or a producer's retry after the duplicate window.
        first = await s.state("o-7")
        transport = s.orders.transport
        encoder = s.orders.publisher._encoder
        copy = encoder.encode(StockReserved(order_id="o-7"), "inventory.reserved", key="o-7", event_id="rsv-event-o-7")
        for msg_id in ("a", "b"):
            await transport.publish(copy.subject, copy.payload, {**copy.headers, "Nats-Msg-Id": msg_id}, timeout=5)
        await eventually(lambda: sum(c.handled for c in s.app.consumers) >= 4, timeout=30)
        await asyncio.sleep(0.5)
        second = await s.state("o-7")
    assert s.gateway.requests[("PaymentRequested", "o-7")] == 1
    # The copy's first delivery was one step (status is paying: it returned at once), its second none.
    assert second["version"] == first["version"] + 1


async def a_crash_between_the_steps_commit_and_its_ack_loses_and_doubles_nothing(
    connect: Callable[[], Any], timers: str, tmp_path: Path
) -> None:
    crashed: list[str] = []

    def crash_after_commit(next_step: Next) -> Next:
        async def step(delivery: Delivery) -> Outcome | None:
            outcome = await next_step(delivery)  # the step committed
            if delivery.handler.endswith("stock_answered") and not crashed:
                crashed.append(delivery.envelope.id)
                raise ConnectionError("the process died before its ack")
            return outcome

        return step

    async with shop(connect, tmp_path, timers=timers, middleware=crash_after_commit) as s:
        await s.place("o-8")
        assert await s.outcome("o-8") == "OrderConfirmed"
        await asyncio.sleep(0.5)
        state = await s.state("o-8")
    assert crashed
    assert s.gateway.requests[("PaymentRequested", "o-8")] == 1
    assert s.outcomes == {("OrderConfirmed", "o-8"): 1}
    assert state["version"] == 3  # created, stock answered, payment answered: each step once


CASES = [
    happy_path_confirms_with_one_capture,
    payment_failure_releases_the_stock_and_cancels,
    no_payment_answer_times_out_releases_and_cancels,
    a_late_timer_and_a_late_capture_after_the_saga_finished,
    a_redelivered_event_repeats_no_step,
    a_crash_between_the_steps_commit_and_its_ack_loses_and_doubles_nothing,
]


# On the memory broker the cases run on virtual time: a timeout costs no real second.
@pytest.mark.virtual_time
@pytest.mark.parametrize("timers", ["schedules", "table"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
async def test_on_the_memory_broker(case: Callable[..., Any], timers: str, tmp_path: Path) -> None:
    broker = MemoryBroker()

    async def connect() -> Transport:
        return MemoryTransport(broker)

    await case(connect, timers, tmp_path)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("timers", ["schedules", "table"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
async def test_on_nats_server(
    case: Callable[..., Any], timers: str, fresh_server: EmbeddedServer, tmp_path: Path
) -> None:
    async def connect() -> Transport:
        return await JetStreamTransport.connect(ConnectOptions.from_url(fresh_server.url))

    await case(connect, timers, tmp_path)


async def test_a_saga_on_schedules_refuses_to_start_on_a_server_before_2_12(
    fresh_server: EmbeddedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await _database(tmp_path)
    app, _ = fulfilment_service(async_sessionmaker(engine), timers="schedules")
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(fresh_server.url))
    monkeypatch.setattr(type(transport.nc), "connected_server_version", property(lambda _: ServerVersion("2.11.15")))
    try:
        with pytest.raises(EventwireError) as refused:
            await app.start(transport=transport)
    finally:
        await app.stop()
        await engine.dispose()
    assert str(refused.value) == (
        "stream 'SAGA_FULFILMENT_FULFILMENT': allow_msg_schedules: needs nats-server 2.12.0 or later; "
        "this one is 2.11.15"
    )
