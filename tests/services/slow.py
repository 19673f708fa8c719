"""A service for process-level tests, configured by environment variables.

TEST_STREAM: stream name (subjects ``<name>.>``); TEST_MARK_DIR: where the
handler leaves ``started-<order>`` and ``finished-<order>`` files;
TEST_HANDLER_SECONDS: how long one event takes; TEST_SHUTDOWN_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from eventwire import App, Stream
from tests.events import OrderCreated

STREAM = Stream(os.environ["TEST_STREAM"], (os.environ["TEST_STREAM"] + ".>",))
MARKS = Path(os.environ["TEST_MARK_DIR"])
SECONDS = float(os.environ.get("TEST_HANDLER_SECONDS", "2"))

app = App(
    "slowsvc",
    idle_heartbeat=0.5,
    pull_expires=2.0,
    shutdown_timeout=float(os.environ.get("TEST_SHUTDOWN_TIMEOUT", "30")),
)


@app.handler(OrderCreated, stream=STREAM, ack_wait=30.0, prefetch=10)
async def slow(event: OrderCreated) -> None:
    (MARKS / f"started-{event.order_id}").touch()
    await asyncio.sleep(SECONDS)
    (MARKS / f"finished-{event.order_id}").touch()
