"""An asyncio event loop on virtual time, so tests of delays and timeouts do not sleep.

When nothing is ready to run and no I/O is pending, the loop jumps its clock
straight to the next timer instead of waiting for it (Trio's autojump clock).
Everything that reads ``loop.time()`` or sleeps — the memory transport's nak
delays and ack-wait timers, the consumer's heartbeats, ``asyncio.sleep`` and
``asyncio.wait_for`` in handlers — sees the same consistent virtual time.

Real I/O still works (a ready socket is served first), but a timer never waits
for it: use this loop with the memory transport, not with a real broker. Work
handed to a thread is the exception: while a ``run_in_executor`` call (so
``asyncio.to_thread``) or an aiosqlite query is on its way, the clock stands
still and the loop waits for the thread in real time, so a database write
never looks slower than a timeout. Other thread work can do the same through
:meth:`VirtualTimeLoop.hold_clock_until`.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Callable
from concurrent.futures import Executor
from queue import SimpleQueue
from typing import Any, TypeVar

_T = TypeVar("_T")


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock
        self.held = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # No timer at all: only real I/O (a thread's call_soon_threadsafe, a signal) can wake us.
            return list(super().select(None))
        if self.held:
            # A thread is still working: its answer (through the self-pipe) comes before any timer.
            return list(super().select(0.05))
        self._clock.advance(timeout)
        return []


class VirtualClock:
    """The time of a :class:`VirtualTimeLoop`; tests may also move it forward by hand."""

    def __init__(self, start: float = 0.0) -> None:
        # Near zero, sums of delays stay exact far longer than near a monotonic clock's 10^4.
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += seconds


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is a :class:`VirtualClock` that jumps when idle."""

    def __init__(self, clock: VirtualClock | None = None) -> None:
        self.clock = clock or VirtualClock()
        self._jumping = _JumpingSelector(self.clock)
        super().__init__(selector=self._jumping)
        self._clock_resolution = 1e-9
        self._wall_at_zero = time.time() - self.clock.now()
        _hold_clock_for_aiosqlite()

    def time(self) -> float:
        return self.clock.now()

    def wall_time(self) -> float:
        """Seconds since the epoch on this loop: the real time it started, moved on as its clock moves."""
        return self._wall_at_zero + self.clock.now()

    def hold_clock_until(self, future: asyncio.Future[Any]) -> None:
        """Keep the clock still until ``future`` (resolved from another thread) is done."""
        if future.done():
            return
        self._jumping.held += 1
        future.add_done_callback(self._release_clock)

    def _release_clock(self, _: asyncio.Future[Any]) -> None:
        self._jumping.held -= 1

    def run_in_executor(  # type: ignore[override]
        self, executor: Executor | None, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        future = super().run_in_executor(executor, func, *args)
        self.hold_clock_until(future)
        return future


def virtual_time_loop(**_: Any) -> VirtualTimeLoop:
    """A loop factory for ``asyncio.Runner`` or pytest-asyncio."""
    return VirtualTimeLoop()


class _ClockHoldingQueue(SimpleQueue):  # type: ignore[type-arg]
    """aiosqlite's request queue: each request carries the future its worker thread resolves."""

    def put_nowait(self, item: Any) -> None:
        future = item[0]
        if future is not None and isinstance(future.get_loop(), VirtualTimeLoop):
            future.get_loop().hold_clock_until(future)
        super().put_nowait(item)


def _hold_clock_for_aiosqlite() -> None:
    try:
        from aiosqlite import core
    except ImportError:
        return
    # Connections made from now on queue their requests through the holding queue.
    if getattr(core, "SimpleQueue", None) is SimpleQueue:
        core.SimpleQueue = _ClockHoldingQueue  # type: ignore[attr-defined]
