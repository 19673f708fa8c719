"""What a handler's failure means: retry later (transient) or dead-letter now (permanent)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ._backoff import Backoff
from ._errors import ConfigError, DecodeError, EnvelopeError


class Retry(Exception):
    """Raise in a handler to have the event delivered again, after ``delay`` seconds if given."""

    def __init__(self, reason: str = "", *, delay: float | None = None) -> None:
        super().__init__(reason or "retry requested")
        if delay is not None and delay < 0:
            raise ConfigError("Retry.delay must not be negative")
        self.delay = delay


class Reject(Exception):
    """Raise in a handler for an event that can never succeed: it is dead-lettered at once."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RetryPolicy:
    """How a handler's failures are retried.

    ``max_deliveries`` bounds the deliveries of one event (the durable's
    ``max_deliver`` is set to it). ``backoff`` gives the delay before each
    redelivery: a :class:`Backoff`, or an explicit list of delays (the last one
    repeats). Exceptions in ``permanent`` (and :class:`Reject`) are
    dead-lettered on the spot; others are retried when they are in
    ``transient``, and dead-lettered otherwise.
    """

    max_deliveries: int = 10
    backoff: Backoff | Sequence[float] = Backoff()
    transient: tuple[type[BaseException], ...] = (Exception,)
    permanent: tuple[type[BaseException], ...] = field(default=(Reject, DecodeError, EnvelopeError))

    def __post_init__(self) -> None:
        if self.max_deliveries < 1:
            raise ConfigError("RetryPolicy.max_deliveries must be at least 1")
        if not isinstance(self.backoff, Backoff):
            delays = tuple(self.backoff)
            if not delays or any(d < 0 for d in delays):
                raise ConfigError("RetryPolicy.backoff must be a Backoff or a non-empty list of delays >= 0")
            object.__setattr__(self, "backoff", delays)

    def delay(self, delivery_count: int) -> float:
        """The delay before the redelivery that follows delivery number ``delivery_count``."""
        if isinstance(self.backoff, Backoff):
            return self.backoff.delay(delivery_count)
        delays = self.backoff
        return float(delays[min(delivery_count, len(delays)) - 1])

    def is_permanent(self, error: BaseException) -> bool:
        if isinstance(error, Retry):
            return False
        return isinstance(error, self.permanent) or not isinstance(error, self.transient)
