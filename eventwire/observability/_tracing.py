"""The CONSUMER span of each handling: a child of the span that published the event, with its outcome."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._delivery import HandlerSpec
from .._envelope import decode_value
from .._errors import EnvelopeError
from .._outcome import Outcome
from .._tracing import TRACER, end_span, event_attributes
from ..middleware import Step
from ..transport import InboundMessage

_FAILED = ("nak", "term", "dead_letter")


def _parent_of(headers: Mapping[str, str]) -> context.Context:
    carrier = {}
    for name in ("traceparent", "tracestate"):
        value = headers.get(name)
        if value is not None:
            try:
                carrier[name] = decode_value(value, name)
            except EnvelopeError:
                continue  # a malformed trace context starts a new trace
    return propagate.extract(carrier)


def tracing_observer(spec: HandlerSpec, service: str) -> Callable[[Step], Step]:
    """The outermost step: a CONSUMER span around each delivery; nak, term and dead letters set its status."""
    durable = spec.durable.name

    def wrap(inner: Step) -> Step:
        async def traced(message: InboundMessage) -> Outcome:
            headers = message.headers or {}
            span = TRACER.start_span(
                f"process {message.subject}",
                context=_parent_of(headers),
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "nats",
                    "messaging.destination.name": message.subject,
                    "messaging.operation.type": "process",
                    "messaging.operation.name": "process",
                    "messaging.consumer.group.name": durable,
                    "messaging.message.delivery_count": message.delivery_count,
                    "eventwire.service": service,
                    "eventwire.handler": spec.name,
                    "eventwire.stream_sequence": message.stream_sequence,
                    **event_attributes(headers),
                },
            )
            token = context.attach(trace.set_span_in_context(span))
            try:
                outcome = await inner(message)
            except BaseException as exc:
                end_span(span, exc)
                raise
            finally:
                context.detach(token)
            kind = "dead_letter" if outcome.dead_lettered is not None else outcome.kind
            span.set_attribute("eventwire.outcome", kind)
            if kind in _FAILED:
                span.set_status(Status(StatusCode.ERROR, (outcome.reason or kind)[:200]))
            span.end()
            return outcome

        return traced

    return wrap
