"""The CONSUMER span of each handling: a child of the span that published the event, with its outcome."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry import context, trace
from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode

from .._delivery import HandlerSpec
from .._outcome import Outcome
from .._tracing import TRACER, end_span, remote_parent
from ..middleware import Step
from ..transport import InboundMessage

_FAILED = ("nak", "term", "dead_letter")


def tracing_observer(spec: HandlerSpec) -> Callable[[Step], Step]:
    """The outermost step: a CONSUMER span around each delivery, a child of the span that published it.

    nak, term and dead letters set its status. An event whose trace context says it is not sampled gets
    no span (the decision was made where the trace began, as the default parent-based sampler honours
    it); its context still reaches what the handler publishes.
    """
    durable = spec.durable.name

    def wrap(inner: Step) -> Step:
        async def traced(message: InboundMessage) -> Outcome:
            headers = message.headers or {}
            parent = remote_parent(headers)
            if parent is not None and not parent.trace_flags.sampled:
                token = context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
                try:
                    return await inner(message)
                finally:
                    context.detach(token)
            attributes = {
                "messaging.system": "nats",
                "messaging.destination.name": message.subject,
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": durable,
            }
            if "ce-id" in headers:
                attributes["messaging.message.id"] = headers["ce-id"]
            if "ce-type" in headers:
                attributes["cloudevents.event_type"] = headers["ce-type"]
            span = TRACER.start_span(
                f"process {message.subject}",
                context=trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
            )
            token = context.attach(trace.set_span_in_context(span))
            try:
                outcome = await inner(message)
            except BaseException as exc:
                end_span(span, exc)
                raise
            finally:
                context.detach(token)
            label = outcome.label
            span.set_attribute("eventwire.outcome", label)
            if label in _FAILED:
                span.set_status(Status(StatusCode.ERROR, (outcome.reason or label)[:200]))
            span.end()
            return outcome

        return traced

    return wrap
