"""What the metrics cannot count as it happens: the server's view of durables and streams, polled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from .._streams import Durable
from ..transport import Transport
from ._metrics import HandlerMetrics, ServiceMetrics

logger = logging.getLogger("eventwire.metrics")

Backlog = Callable[[], Awaitable[tuple[int, float | None]]]


async def poll_metrics(
    metrics: ServiceMetrics,
    transport: Transport,
    durables: Sequence[tuple[HandlerMetrics, Durable]],
    *,
    backlogs: Sequence[Backlog] = (),
    interval: float = 5.0,
) -> None:
    """Refresh pending counts, the dead-letter stream's size, outbox backlogs and the connection state, forever."""
    while True:
        await refresh(metrics, transport, durables, backlogs)
        await asyncio.sleep(interval)


async def refresh(
    metrics: ServiceMetrics,
    transport: Transport,
    durables: Sequence[tuple[HandlerMetrics, Durable]],
    backlogs: Sequence[Backlog] = (),
) -> None:
    metrics.connected = int(transport.connected)
    metrics.reconnects = transport.reconnects
    if not transport.connected:
        return
    for handler, durable in durables:
        # A poll that fails (a failover under way) keeps the last figures; the next one tries again.
        with contextlib.suppress(Exception):
            state = await transport.durable_state(durable)
            handler.pending, handler.ack_pending = state.num_pending, state.num_ack_pending
    if metrics.dead_letter_stream is not None:
        with contextlib.suppress(Exception):
            metrics.dead_letter_messages = await transport.stream_size(metrics.dead_letter_stream)
    if backlogs:
        rows, oldest = 0, None
        for backlog in backlogs:
            try:
                count, age = await backlog()
            except Exception as exc:
                logger.debug("outbox backlog not read: %r", exc)
                continue
            rows += count
            if age is not None:
                oldest = age if oldest is None else max(oldest, age)
        metrics.outbox_pending_rows, metrics.outbox_oldest_age = rows, oldest
