"""What the metrics cannot count as it happens: the server's view of durables and streams, polled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from .._streams import Durable
from ..transport import Transport
from ._metrics import HandlerMetrics, ServiceMetrics

logger = logging.getLogger("eventwire.metrics")

T = TypeVar("T")
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
    # A reading that hangs (a server gone quiet) must not stop the others for long, nor time out
    # just because a short interval was chosen.
    poller = _Poller(metrics, transport, durables, backlogs, timeout=max(interval, 5.0))
    while True:
        await poller.refresh()
        await asyncio.sleep(interval)


class _Poller:
    """One refresh after another. A figure that cannot be read keeps its last value (a failover under way,
    a database restarting); the first failure of each figure is logged as a warning, and its recovery."""

    def __init__(
        self,
        metrics: ServiceMetrics,
        transport: Transport,
        durables: Sequence[tuple[HandlerMetrics, Durable]],
        backlogs: Sequence[Backlog],
        *,
        timeout: float,
    ) -> None:
        self._metrics = metrics
        self._transport = transport
        self._durables = durables
        self._backlogs = backlogs
        self._timeout = timeout
        self._failing: set[str] = set()

    async def refresh(self) -> None:
        metrics, transport = self._metrics, self._transport
        metrics.connected = int(transport.connected)
        metrics.reconnects = transport.reconnects
        if self._backlogs:
            backlog = await self._read("the outbox backlog", self._outbox_backlog())
            if backlog is not None:
                metrics.outbox_pending_rows, metrics.outbox_oldest_age = backlog
        if not transport.connected:
            return
        for handler, durable in self._durables:
            state = await self._read(f"durable {durable.name}", transport.durable_state(durable))
            if state is not None:
                handler.consumers[durable.name] = (state.num_pending, state.num_ack_pending)
        if metrics.dead_letter_stream is not None:
            stream = metrics.dead_letter_stream
            size = await self._read(f"stream {stream}", transport.stream_size(stream))
            if size is not None:
                metrics.dead_letter_messages = size

    async def _outbox_backlog(self) -> tuple[int, float | None]:
        rows, oldest = 0, None
        for backlog in self._backlogs:
            count, age = await backlog()
            rows += count
            if age is not None:
                oldest = age if oldest is None else max(oldest, age)
        return rows, oldest

    async def _read(self, what: str, reading: Awaitable[T]) -> T | None:
        try:
            async with asyncio.timeout(self._timeout):  # not wait_for: on 3.11 it can swallow a cancellation
                value = await reading
        except Exception as exc:
            if what not in self._failing:
                self._failing.add(what)
                logger.warning(
                    "%s: metrics cannot read %s (%s); its figures stay as they were",
                    self._metrics.service,
                    what,
                    repr(exc) if not str(exc) else f"{type(exc).__name__}: {exc}",
                )
            return None
        if what in self._failing:
            self._failing.discard(what)
            logger.info("%s: metrics read %s again", self._metrics.service, what)
        return value
