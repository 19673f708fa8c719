"""Seconds since the epoch, as the running event loop sees them."""

from __future__ import annotations

import asyncio
import time


def wall_time() -> float:
    """``time.time()``; on a loop that keeps time of its own (``VirtualTimeLoop``), that loop's wall time.

    Timers due at a wall-clock moment (a saga's timeout, a message schedule's ``@at``) then come due on
    virtual time in tests, like every delay measured on ``loop.time()``.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return time.time()
    own: object = getattr(loop, "wall_time", None)
    return own() if callable(own) else time.time()
