"""The payments service: a simulated card gateway that charges and refunds, each once (the inbox).

``SHOP_PAYMENT_FAILURE_RATE`` (0.1) of the charges are declined; each takes up to
``SHOP_PAYMENT_LATENCY`` seconds (0.05); ``SHOP_PAYMENT_SLOW_RATE`` (0.02) of them answer only after
``SHOP_PAYMENT_SLOW_SECONDS`` (6), past the saga's payment timeout, so the saga cancels and then refunds.
Run it: ``eventwire run eventwire.demo.shop.payments:app``.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ... import App, Delivery, Publication
from ...inbox import claim_event
from ...outbox import Outbox
from .._fulfilment import ACK_WAIT, FULFILMENT, PAYMENTS, STEP_RETRY, outbox_relay, unix_ms
from ..contracts.shop.payments.v1.payments_pb2 import (
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    PaymentRequested,
    RefundRequested,
)
from ._settings import open_database, setting

metadata = MetaData()
payments_table = Table(
    "shop_payments",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("payment_id", String(64), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # captured → refunded, or declined
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def payments_service(
    sessions: async_sessionmaker[AsyncSession] | None = None,
    *,
    failure_rate: float = 0.1,
    latency: float = 0.05,
    slow_rate: float = 0.02,
    slow_seconds: float = 6.0,
    url: str | None = None,
) -> App:
    outbox = Outbox(source="/services/payments")
    app = App(
        "payments",
        streams=[FULFILMENT, PAYMENTS],
        publishes=[
            Publication(PaymentCaptured, "payments.captured"),
            Publication(PaymentFailed, "payments.failed"),
            Publication(PaymentRefunded, "payments.refunded"),
        ],
        url=url,
        relays=[] if sessions is None else [outbox_relay(sessions)],
    )

    @app.handler(
        PaymentRequested,
        RefundRequested,
        stream=FULFILMENT,
        subject="fulfilment.*.requested",
        concurrency=32,
        ordered_by="key",
        retry=STEP_RETRY,
        ack_wait=ACK_WAIT,
    )
    async def charge_or_refund(request: Any, delivery: Delivery) -> None:
        """A PaymentRequested or a RefundRequested."""
        assert sessions is not None
        order_id = request.order_id
        if isinstance(request, PaymentRequested):
            # The gateway call, outside the transaction (it holds SQLite's one write lock); an answer that
            # depends on the order alone, so that a redelivery asks the same and hears the same.
            gateway = random.Random(order_id)
            slow = gateway.random() < slow_rate
            declined = not slow and gateway.random() < failure_rate
            await asyncio.sleep(slow_seconds if slow else gateway.uniform(0, latency))
        async with sessions() as session, session.begin():
            if not await claim_event(session, delivery.handler, delivery.envelope.id):
                return
            charged = (
                await session.execute(
                    select(payments_table.c.status, payments_table.c.amount_cents)
                    .where(payments_table.c.order_id == order_id)
                    .with_for_update()
                )
            ).first()
            now = datetime.now(UTC)
            if isinstance(request, RefundRequested):
                if charged is None or charged.status != "captured":
                    return
                await session.execute(
                    update(payments_table)
                    .where(payments_table.c.order_id == order_id)
                    .values(status="refunded", updated_at=now)
                )
                amount = charged.amount_cents
                refunded = PaymentRefunded(order_id=order_id, payment_id=request.payment_id, amount_cents=amount)
                await outbox.add(session, refunded, subject="payments.refunded", key=order_id)
                return
            if charged is not None:
                return  # charged (or declined) already: the answer went out with it
            payment_id = f"pay-{order_id}"
            await session.execute(
                insert(payments_table).values(
                    order_id=order_id, payment_id=payment_id, amount_cents=request.amount_cents,
                    status="declined" if declined else "captured", updated_at=now,
                )
            )  # fmt: skip
            if declined:
                failed = PaymentFailed(order_id=order_id, reason="card declined")
                await outbox.add(session, failed, subject="payments.failed", key=order_id)
                return
            captured = PaymentCaptured(
                order_id=order_id, payment_id=payment_id, amount_cents=request.amount_cents, captured_at_ms=unix_ms(now)
            )
            await outbox.add(session, captured, subject="payments.captured", key=order_id)

    return app


def _from_environment() -> App:
    _, sessions = open_database("payments")
    return payments_service(
        sessions,
        failure_rate=setting("PAYMENT_FAILURE_RATE", 0.1),
        latency=setting("PAYMENT_LATENCY", 0.05),
        slow_rate=setting("PAYMENT_SLOW_RATE", 0.02),
        slow_seconds=setting("PAYMENT_SLOW_SECONDS", 6.0),
    )


app = _from_environment()
