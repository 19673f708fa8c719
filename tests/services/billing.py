"""A billing service for crash tests: each OrderCreated leaves one row in test_effects, through the inbox.

Configured by environment: TEST_DB (SQLAlchemy URL), TEST_STREAM (stream name, subjects ``<name>.>``),
TEST_ACK_WAIT (seconds), TEST_PREFETCH, TEST_HANDLER_SECONDS (time one event takes), and TEST_KILL_AFTER_COMMIT
(probability of SIGKILL right after the inbox transaction commits and before the ack).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal

from sqlalchemy import Column, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from eventwire import App, Delivery, Next, Stream
from eventwire.inbox import Inbox
from tests.events import OrderCreated

effects_metadata = MetaData()
effects = Table("test_effects", effects_metadata, Column("event_id", String(100)), Column("order_id", String(50)))

STREAM = Stream(os.environ["TEST_STREAM"], (os.environ["TEST_STREAM"] + ".>",))
KILL_AFTER_COMMIT = float(os.environ.get("TEST_KILL_AFTER_COMMIT", "0"))
HANDLER_SECONDS = float(os.environ.get("TEST_HANDLER_SECONDS", "0"))

engine = create_async_engine(os.environ["TEST_DB"])
inbox = Inbox(async_sessionmaker(engine, expire_on_commit=False))


def crash_after_commit(next_step: Next) -> Next:
    """Outside the inbox: its transaction has committed, the ack is not sent yet."""

    async def maybe_crash(delivery: Delivery) -> None:
        await next_step(delivery)
        if KILL_AFTER_COMMIT and random.random() < KILL_AFTER_COMMIT:
            os.kill(os.getpid(), signal.SIGKILL)

    return maybe_crash


app = App("billing", middleware=[crash_after_commit, inbox], idle_heartbeat=0.5, pull_expires=2.0)


@app.handler(
    OrderCreated,
    stream=STREAM,
    durable="billing",
    ack_wait=float(os.environ.get("TEST_ACK_WAIT", "30")),
    prefetch=int(os.environ.get("TEST_PREFETCH", "8")),
)
async def bill(order: OrderCreated, delivery: Delivery) -> None:
    if HANDLER_SECONDS:
        await asyncio.sleep(HANDLER_SECONDS)
    await delivery.session.execute(insert(effects).values(event_id=delivery.envelope.id, order_id=order.order_id))
