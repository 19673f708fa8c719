"""Exponential backoff with a cap and jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ._errors import ConfigError


@dataclass(frozen=True, slots=True)
class Backoff:
    """``delay(n) = min(maximum, initial * multiplier ** (n - 1))``, less up to ``jitter`` of it.

    Jitter only shortens a delay, so ``maximum`` is a true cap, and spreads
    retries of many clients that failed at the same moment.
    """

    initial: float = 1.0
    multiplier: float = 2.0
    maximum: float = 60.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial < 0:
            raise ConfigError("Backoff.initial must not be negative")
        if self.multiplier < 1:
            raise ConfigError("Backoff.multiplier must be at least 1")
        if self.maximum < self.initial:
            raise ConfigError("Backoff.maximum must be at least Backoff.initial")
        if not 0 <= self.jitter <= 1:
            raise ConfigError("Backoff.jitter must be between 0 and 1")

    def delay(self, attempt: int) -> float:
        """The delay before retry number ``attempt`` (1 for the first retry)."""
        exponent = min(max(attempt - 1, 0), 64)
        base = min(self.maximum, self.initial * self.multiplier**exponent)
        if self.jitter:
            base *= 1 - self.jitter * random.random()
        return base
