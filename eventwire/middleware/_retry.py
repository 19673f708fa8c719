"""The retry policy: a handler's exception becomes a nak with backoff, a retry in place, or a dead letter."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .._delivery import Delivery, HandlerSpec, Middleware, Next, describe, log_fields
from .._outcome import Outcome
from .._retry import Retry

logger = logging.getLogger("eventwire.consumer")


def retrying(spec: HandlerSpec, stopping: Callable[[], bool], service: str | None = None) -> Middleware:
    """Apply ``spec.retry``; in ordered modes retry in place, holding the key, unless the App is stopping."""
    policy = spec.retry
    in_place = spec.ordered_by is not None
    name = spec.name

    def wrap(inner: Next) -> Next:
        async def retry(delivery: Delivery) -> Outcome | None:
            attempt = delivery.delivery_count
            while True:
                try:
                    return await inner(delivery)
                except Exception as exc:
                    if policy.is_permanent(exc):
                        return Outcome.dead_letter("rejected", error=exc)
                    if attempt >= policy.max_deliveries:
                        return Outcome.dead_letter("max-deliveries", error=exc)
                    delay = exc.delay if isinstance(exc, Retry) and exc.delay is not None else policy.delay(attempt)
                    reason = f"handler {name} raised {exc!r}; retry in {delay:.3f}s"
                    if not in_place or stopping():
                        return Outcome.nak(delay, reason)
                # Ordered: retry here, holding the key, so no later event of it overtakes this one.
                if logger.isEnabledFor(logging.WARNING):
                    envelope = delivery.envelope
                    where = describe(delivery.message, envelope.type, envelope.id)
                    fields = log_fields(
                        delivery.message, envelope.type, envelope.id, service=service, handler=name, outcome="retry"
                    )
                    logger.warning(
                        "%s (in place, attempt %d) [%s]", reason, attempt, where, extra={"eventwire": fields}
                    )
                await asyncio.sleep(delay)
                attempt += 1

        return retry

    return wrap
