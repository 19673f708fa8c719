"""An asyncio event loop on virtual time, so tests of delays and timeouts do not sleep.

When nothing is ready to run and no I/O is pending, the loop jumps its clock
straight to the next timer instead of waiting for it (Trio's autojump clock).
Everything that reads ``loop.time()`` or sleeps — the memory transport's nak
delays and ack-wait timers, the consumer's heartbeats, ``asyncio.sleep`` and
``asyncio.wait_for`` in handlers — sees the same consistent virtual time.

Real I/O still works (a ready socket is served first), but a timer never waits
for it: use this loop with the memory transport, not with a real broker.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # No timer at all: only real I/O (a thread's call_soon_threadsafe, a signal) can wake us.
            return list(super().select(None))
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
        super().__init__(selector=_JumpingSelector(self.clock))
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self.clock.now()


def virtual_time_loop(**_: Any) -> VirtualTimeLoop:
    """A loop factory for ``asyncio.Runner`` or pytest-asyncio."""
    return VirtualTimeLoop()
