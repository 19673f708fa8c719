"""Building a handler's settlement chain, in the one order the package docstring documents."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .._dead_letters import DeadLetterWriter
from .._delivery import HandlerSpec, Middleware
from .._publisher import Publisher
from ..contracts import EventRegistry
from ._dead_letters import dead_lettering
from ._decode import Step, decoding
from ._retry import retrying

Observer = Callable[[Step], Step]


def settlement_chain(
    spec: HandlerSpec,
    *,
    publisher: Publisher,
    registry: EventRegistry | None,
    dead_letters: DeadLetterWriter | None,
    middleware: Sequence[Middleware] = (),
    observers: Sequence[Observer] = (),
    stopping: Callable[[], bool] = lambda: False,
    service: str | None = None,
) -> Step:
    """The step a consumer runs for each delivery of ``spec``'s durable; it returns the outcome to apply."""
    handler = spec.call()
    for wrap in reversed(middleware):
        handler = wrap(handler)
    step = dead_lettering(spec, dead_letters)(
        decoding(spec, publisher, registry)(retrying(spec, stopping, service)(handler))
    )
    for observe in reversed(observers):
        step = observe(step)
    return step
