"""A billing service for crash tests: each OrderCreated leaves one row in test_effects, through the inbox.

Configured by environment: TEST_DB (SQLAlchemy URL), TEST_STREAM (stream name, subjects ``<name>.>``),
TEST_ACK_WAIT (seconds), TEST_PREFETCH and TEST_HANDLER_SECONDS (time one event takes). A supervisor that forks
the service (tests.services.crashloop) sets ``kill_at_commit`` to have the process SIGKILL itself right after that
many inbox transactions have committed, before the ack.
"""

from __future__ import annotations

import asyncio
import os
import signal

from sqlalchemy import Column, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from eventwire import App, Delivery, Next, Stream
from eventwire.inbox import Inbox
from tests.events import OrderCreated

effects_metadata = MetaData()
effects = Table("test_effects", effects_metadata, Column("event_id", String(100)), Column("order_id", String(50)))

STREAM = Stream(os.environ["TEST_STREAM"], (os.environ["TEST_STREAM"] + ".>",))
HANDLER_SECONDS = float(os.environ.get("TEST_HANDLER_SECONDS", "0"))

engine = create_async_engine(os.environ["TEST_DB"])
inbox = Inbox(async_sessionmaker(engine, expire_on_commit=False))
kill_at_commit: int | None = None
_commits = 0


def crash_after_commit(next_step: Next) -> Next:
    """Outside the inbox: its transaction has committed, the ack is not sent yet."""

    async def maybe_crash(delivery: Delivery) -> None:
        global _commits
        await next_step(delivery)
        _commits += 1
        if _commits == kill_at_commit:
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
