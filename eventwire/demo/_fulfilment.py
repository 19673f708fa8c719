"""The fulfilment saga: order created → reserve stock → capture payment → confirm, or compensate.

Payment failed, or no answer within ``payment_timeout``: the stock goes back and the order is
cancelled. A capture that arrives after that (the gateway was only slow) is refunded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .. import App, Backoff, Publication, RetryPolicy, Stream
from ..outbox import Outbox, OutboxRelay
from ..saga import Saga, SagaStep, TimerMode
from .contracts.shop.inventory.v1.inventory_pb2 import (
    StockLine,
    StockRejected,
    StockReleased,
    StockReleaseRequested,
    StockReservationRequested,
    StockReserved,
)
from .contracts.shop.orders.v1.orders_pb2 import OrderCancelled, OrderConfirmed, OrderCreated
from .contracts.shop.payments.v1.payments_pb2 import (
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    PaymentRequested,
    RefundRequested,
)

ORDERS = Stream("ORDERS", ("orders.>",), description="Orders placed by customers")
INVENTORY = Stream("INVENTORY", ("inventory.>",), description="Stock reservations and releases")
PAYMENTS = Stream("PAYMENTS", ("payments.>",), description="Charges and refunds")
FULFILMENT = Stream("FULFILMENT", ("fulfilment.>",), description="The fulfilment saga's requests and outcomes")

STEP_RETRY = RetryPolicy(max_deliveries=20, backoff=Backoff(initial=0.05, maximum=1.0))
# How soon the shop's events come back after their process died (a long handler sends heartbeats).
ACK_WAIT = 5.0


@dataclass
class Fulfilment:
    """One order's way through fulfilment."""

    status: str = "reserving"  # reserving → paying → confirmed | cancelled
    customer_id: str = ""
    amount_cents: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)
    payment_id: str = ""
    reason: str = ""


def fulfilment_service(
    sessions: async_sessionmaker[AsyncSession] | None = None,
    *,
    timers: TimerMode = "schedules",
    payment_timeout: float = 5.0,
    url: str | None = None,
) -> tuple[App, Saga[Fulfilment]]:
    """The fulfilment App and its saga; ``sessions`` opens its database (tables: ``eventwire db init``).

    Without ``sessions`` the App is only described (``eventwire asyncapi``, ``topology``, ``authz``).
    """
    relays = [] if sessions is None else [outbox_relay(sessions)]
    app = App(
        "fulfilment",
        streams=[ORDERS, INVENTORY, PAYMENTS, FULFILMENT],
        url=url,
        relays=relays,
        publishes=[  # through the saga's outbox
            Publication(StockReservationRequested, "fulfilment.stock.reserve-requested"),
            Publication(StockReleaseRequested, "fulfilment.stock.release-requested"),
            Publication(PaymentRequested, "fulfilment.payment.requested"),
            Publication(RefundRequested, "fulfilment.refund.requested"),
            Publication(OrderConfirmed, "fulfilment.order.confirmed"),
            Publication(OrderCancelled, "fulfilment.order.cancelled"),
        ],
    )
    # On the subjects the saga reads, but no step of it: acknowledged and skipped, not dead-lettered.
    app.registry.register(StockReleased)
    app.registry.register(PaymentRefunded)
    outbox = Outbox(source=app.source, registry=app.registry, streams=[FULFILMENT])
    saga: Saga[Fulfilment] = Saga(
        app, "fulfilment", Fulfilment, sessions=_described(sessions), outbox=outbox, timers=timers, ack_wait=ACK_WAIT
    )

    @saga.on(OrderCreated, stream=ORDERS, subject="orders.created", starts=True, retry=STEP_RETRY)
    async def order_created(order: OrderCreated, step: SagaStep[Fulfilment]) -> None:
        if not step.is_new:
            return  # the same order placed again under another event id: its saga runs already
        step.state.customer_id = order.customer_id
        step.state.amount_cents = order.total_cents
        step.state.lines = [{"sku": item.sku, "quantity": item.quantity} for item in order.items]
        lines = [StockLine(sku=item.sku, quantity=item.quantity) for item in order.items]
        await step.send(
            StockReservationRequested(order_id=step.key, lines=lines), subject="fulfilment.stock.reserve-requested"
        )

    @saga.on(StockReserved, StockRejected, stream=INVENTORY, subject="inventory.>", retry=STEP_RETRY)
    async def stock_answered(event: StockReserved | StockRejected, step: SagaStep[Fulfilment]) -> None:
        if step.state.status != "reserving":
            return
        if isinstance(event, StockRejected):
            await _cancel(step, f"out of stock: {event.sku}", release=False)
            return
        step.state.status = "paying"
        state = step.state
        payment = PaymentRequested(order_id=step.key, customer_id=state.customer_id, amount_cents=state.amount_cents)
        await step.send(payment, subject="fulfilment.payment.requested")
        step.schedule("payment", after=payment_timeout)

    @saga.on(PaymentCaptured, PaymentFailed, stream=PAYMENTS, subject="payments.>", retry=STEP_RETRY)
    async def payment_answered(event: PaymentCaptured | PaymentFailed, step: SagaStep[Fulfilment]) -> None:
        if isinstance(event, PaymentFailed):
            if step.state.status == "paying":
                step.cancel("payment")
                await _cancel(step, f"payment failed: {event.reason}", release=True)
            return
        if step.state.status == "paying":
            step.cancel("payment")
            step.state.status = "confirmed"
            step.state.payment_id = event.payment_id
            await step.send(
                OrderConfirmed(order_id=step.key, payment_id=event.payment_id, confirmed_at_ms=unix_ms()),
                subject="fulfilment.order.confirmed",
            )
            step.finish()
        elif step.state.status == "cancelled":
            # The gateway answered after we gave up on it: give the money back.
            await step.send(
                RefundRequested(order_id=step.key, payment_id=event.payment_id), subject="fulfilment.refund.requested"
            )

    @saga.on_timeout("payment")
    async def payment_timed_out(step: SagaStep[Fulfilment]) -> None:
        if step.state.status == "paying":
            await _cancel(step, "no answer from payments in time", release=True)

    return app, saga


async def _cancel(step: SagaStep[Fulfilment], reason: str, *, release: bool) -> None:
    step.state.status = "cancelled"
    step.state.reason = reason
    if release:
        await step.send(
            StockReleaseRequested(order_id=step.key, reason=reason), subject="fulfilment.stock.release-requested"
        )
    cancelled = OrderCancelled(order_id=step.key, reason=reason, cancelled_at_ms=unix_ms())
    await step.send(cancelled, subject="fulfilment.order.cancelled")
    step.finish()


def unix_ms(at: datetime | None = None) -> int:
    """``at`` (default: now) in Unix milliseconds, as the shop's contracts carry time."""
    return int((at.timestamp() if at is not None else time.time()) * 1000)


def outbox_relay(sessions: async_sessionmaker[AsyncSession]) -> OutboxRelay:
    """The relay of a shop service's outbox, on the engine its sessions are bound to."""
    bind = sessions.kw.get("bind")
    if bind is None:
        raise ValueError("a shop service's sessions must be bound to an engine")
    return OutboxRelay(bind, poll_interval=0.05)


def _described(sessions: async_sessionmaker[AsyncSession] | None) -> async_sessionmaker[AsyncSession]:
    # An App only described never runs a step.
    return sessions if sessions is not None else async_sessionmaker()
