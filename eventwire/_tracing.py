"""Trace context for publishes: a PRODUCER span per event, its context in ``traceparent`` and ``tracestate``.

Spans follow OpenTelemetry's messaging conventions (``messaging.system`` = ``nats``, destination, operation,
message id = ``ce-id``) plus the CloudEvents attributes. Nothing happens until an SDK tracer provider is
configured: with the API's default provider the cost is one ``isinstance`` check per publish.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.trace import ProxyTracerProvider, Span, SpanKind, Status, StatusCode

from ._envelope import encode_value

TRACER = trace.get_tracer("eventwire")


def tracing_on() -> bool:
    """Whether an OpenTelemetry SDK (or any real tracer provider) is configured."""
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)


def event_attributes(headers: Mapping[str, str]) -> dict[str, str]:
    attributes = {}
    for header, attribute in (
        ("ce-id", "messaging.message.id"),
        ("ce-type", "cloudevents.event_type"),
        ("ce-source", "cloudevents.event_source"),
        ("ce-subject", "cloudevents.event_subject"),
    ):
        value = headers.get(header)
        if value is not None:
            attributes[attribute] = value
    if "messaging.message.id" in attributes:
        attributes["cloudevents.event_id"] = attributes["messaging.message.id"]
    return attributes


def start_producer_span(subject: str, headers: dict[str, str]) -> Span:
    """A PRODUCER span for one publish, child of the current context (a handler's span inside a handler);
    its context replaces ``traceparent`` and ``tracestate`` in ``headers``."""
    span = TRACER.start_span(
        f"send {subject}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.destination.name": subject,
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            **event_attributes(headers),
        },
    )
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    for name in ("traceparent", "tracestate"):
        if name in carrier:
            headers[name] = encode_value(carrier[name])
    return span


def end_span(span: Span, error: BaseException | None = None) -> None:
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))
    span.end()
