"""Dead-lettering: a dead_letter outcome is stored, then the original termed; if storing fails, nak'd."""

from __future__ import annotations

from collections.abc import Callable

from .._dead_letters import DeadLetterWriter
from .._delivery import HandlerSpec
from .._outcome import Outcome
from .._retry import Reject
from ..transport import InboundMessage
from ._decode import Step

# A handler's traceback helps; the parser's, for bad input, is noise; a Reject says all in its message.
_WITH_TRACEBACK = ("rejected", "max-deliveries")


def dead_lettering(spec: HandlerSpec, writer: DeadLetterWriter | None) -> Callable[[Step], Step]:
    name = spec.name
    policy = spec.retry

    def wrap(inner: Step) -> Step:
        async def dead_letter(message: InboundMessage) -> Outcome:
            outcome = await inner(message)
            if outcome.kind != "dead_letter":
                return outcome
            reason = outcome.reason or "dead-letter"
            error = outcome.error
            why = f"{reason}: {outcome.detail or repr(error)}"
            trace = error if reason in _WITH_TRACEBACK and not isinstance(error, Reject) else None
            if writer is None:
                return Outcome.term(f"{why} (no dead-letter stream)", trace)
            if await writer.write(message, handler=name, reason=reason, error=error, detail=outcome.detail):
                return Outcome("term", f"dead-lettered, {why}", error=trace, dead_lettered=reason)
            delay = policy.delay(message.delivery_count)
            return Outcome.nak(delay, f"dead-letter stream unavailable, retry in {delay:.3f}s; {why}")

        return dead_letter

    return wrap
