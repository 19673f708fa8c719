"""Trace context for publishes: a PRODUCER span per event, its context in ``traceparent`` and ``tracestate``.

Spans follow OpenTelemetry's messaging conventions (``messaging.system`` = ``nats``, destination, operation,
message id = ``ce-id``) plus the CloudEvents attributes. Nothing happens until an SDK tracer provider is
configured: with the API's default provider the cost is one ``isinstance`` check per publish.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.trace import (
    NonRecordingSpan,
    ProxyTracerProvider,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from ._envelope import decode_value
from ._errors import EnvelopeError

TRACER = trace.get_tracer("eventwire")


def tracing_on() -> bool:
    """Whether an OpenTelemetry SDK (or any real tracer provider) is configured."""
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)


_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def remote_parent(headers: Mapping[str, str]) -> SpanContext | None:
    """The publisher's span context, from a W3C ``traceparent`` (CloudEvents' distributed tracing extension)."""
    value = headers.get("traceparent")
    if value is None:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None:  # another version of the format: the propagator knows them
        found = trace.get_current_span(propagate.extract({"traceparent": value})).get_span_context()
        return found if found.is_valid else None
    trace_state = None
    state = headers.get("tracestate")
    if state is not None:
        try:
            trace_state = TraceState.from_header([decode_value(state, "tracestate")])
        except EnvelopeError:
            trace_state = None
    found = SpanContext(
        int(match[1], 16),
        int(match[2], 16),
        is_remote=True,
        trace_flags=TraceFlags(int(match[3], 16)),
        trace_state=trace_state,
    )
    return found if found.is_valid else None


def start_producer_span(subject: str, headers: dict[str, str]) -> Span:
    """A PRODUCER span for one publish, child of the current context (a handler's span inside a handler);
    its context replaces ``traceparent`` and ``tracestate`` in ``headers``."""
    attributes = {"messaging.system": "nats", "messaging.destination.name": subject, "messaging.operation.type": "send"}
    if "ce-id" in headers:
        attributes["messaging.message.id"] = headers["ce-id"]
    if "ce-type" in headers:
        attributes["cloudevents.event_type"] = headers["ce-type"]
    parent = None
    if not trace.get_current_span().get_span_context().is_valid:
        given = remote_parent(headers)  # a caller's own trace context, e.g. from the request that led here
        if given is not None:
            parent = trace.set_span_in_context(NonRecordingSpan(given))
    span = TRACER.start_span(f"send {subject}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes)
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    for name in ("traceparent", "tracestate"):
        if name in carrier:
            headers[name] = carrier[name]
    return span


def end_span(span: Span, error: BaseException | None = None) -> None:
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))
    span.end()


def current_trace_context() -> tuple[str | None, str | None]:
    """The current span's ``traceparent`` and ``tracestate``, for an event sent later (an outbox row):
    its handling continues the trace of the code that wrote it."""
    if not tracing_on() or not trace.get_current_span().get_span_context().is_valid:
        return None, None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent"), carrier.get("tracestate")
