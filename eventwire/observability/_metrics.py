"""Prometheus metrics: counted in plain integers on the hot path, turned into metric families at scrape time.

One collector, registered once in ``prometheus_client``'s default registry, reports every App of the
process that has metrics on; the ``service`` label keeps them apart. Labels are few and bounded: service,
handler, stream, durable, event type (only the types a handler or publisher declares; anything else is
``other``), outcome and dead-letter reason. Never an id.
"""

from __future__ import annotations

import bisect
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .._delivery import HandlerSpec
from .._outcome import Outcome
from ..middleware import Step
from ..transport import InboundMessage

# Seconds, from a local broker's sub-millisecond round trips to handlers that call slow services.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OTHER = "other"


class Histogram:
    """Bucket counts, a sum and a count, without locks: the event loop is the only writer."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return buckets


@dataclass(eq=False)
class HandlerMetrics:
    handler: str
    stream: str
    durable: str
    types: frozenset[str]
    deliveries: Counter[tuple[str, str]] = field(default_factory=Counter)
    duration: Histogram = field(default_factory=Histogram)
    in_flight: int = 0
    redeliveries: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    # Durable name → (pending, ack pending) as last read: one durable, or one per partition.
    consumers: dict[str, tuple[int, int]] = field(default_factory=dict)
    # A partitioned handler's partition durables → whether this instance holds the pin, read at scrape time.
    pins: Callable[[], dict[str, bool]] | None = None


@dataclass(eq=False)
class ServiceMetrics:
    """What one App did and sees; :class:`EventwireCollector` exports it."""

    service: str
    published: Counter[tuple[str, str]] = field(default_factory=Counter)
    publish_retries: int = 0
    publish_duration: dict[str, Histogram] = field(default_factory=dict)
    handlers: dict[str, HandlerMetrics] = field(default_factory=dict)
    dead_letter_stream: str | None = None
    dead_letter_messages: int | None = None
    outbox_pending_rows: int | None = None
    outbox_oldest_age: float | None = None
    connected: int = 0
    reconnects: int = 0

    def __post_init__(self) -> None:
        _COLLECTOR.add(self)

    def handler(self, spec: HandlerSpec) -> HandlerMetrics:
        metrics = HandlerMetrics(
            spec.name,
            spec.durable.stream,
            spec.durable.name,
            frozenset(t.DESCRIPTOR.full_name for t in spec.event_types),
        )
        self.handlers[spec.name] = metrics
        return metrics

    def publish_done(self, ce_type: str, outcome: str, seconds: float | None = None) -> None:
        self.published[ce_type, outcome] += 1
        if seconds is not None:
            histogram = self.publish_duration.get(ce_type)
            if histogram is None:
                histogram = self.publish_duration[ce_type] = Histogram()
            histogram.observe(seconds)


def metrics_observer(metrics: HandlerMetrics) -> Callable[[Step], Step]:
    """An outer step: counts every delivery by the outcome the chain returns, and times it."""
    clock = time.perf_counter
    deliveries = metrics.deliveries
    known = metrics.types

    def wrap(inner: Step) -> Step:
        async def observe(message: InboundMessage) -> Outcome:
            if message.delivery_count > 1:
                metrics.redeliveries += 1
            metrics.in_flight += 1
            started = clock()
            try:
                outcome = await inner(message)
            finally:
                metrics.in_flight -= 1
                metrics.duration.observe(clock() - started)
            ce_type = (message.headers or {}).get("ce-type", OTHER)
            if ce_type not in known:
                ce_type = OTHER
            deliveries[ce_type, outcome.label] += 1
            if outcome.dead_lettered is not None:
                metrics.dead_letters[outcome.dead_lettered] += 1
            return outcome

        return observe

    return wrap


class EventwireCollector(Collector):
    """Every App's metrics, as Prometheus metric families."""

    def __init__(self) -> None:
        self._services: weakref.WeakSet[ServiceMetrics] = weakref.WeakSet()
        self._registered = False

    def add(self, service: ServiceMetrics) -> None:
        if not self._registered:
            REGISTRY.register(self)
            self._registered = True
        self._services.add(service)

    def collect(self) -> Iterator[Metric]:
        services = sorted(self._services, key=lambda s: s.service)
        yield from _publishing(services)
        yield from _consuming(services)
        yield from _operations(services)


def _publishing(services: Iterable[ServiceMetrics]) -> Iterator[Metric]:
    published = CounterMetricFamily(
        "eventwire_published",
        "Events published, by result: stored, duplicate (deduplicated) or failed.",
        labels=["service", "type", "outcome"],
    )
    retries = CounterMetricFamily(
        "eventwire_publish_retries", "Publish attempts sent again after a timeout or no responders.", labels=["service"]
    )
    duration = HistogramMetricFamily(
        "eventwire_publish_duration_seconds", "From publish() to the broker's ack.", labels=["service", "type"]
    )
    for s in services:
        for (ce_type, outcome), count in sorted(s.published.items()):
            published.add_metric([s.service, ce_type, outcome], count)
        retries.add_metric([s.service], s.publish_retries)
        for ce_type, histogram in sorted(s.publish_duration.items()):
            duration.add_metric([s.service, ce_type], histogram.cumulative(), histogram.sum)
    yield from (published, retries, duration)


def _consuming(services: Iterable[ServiceMetrics]) -> Iterator[Metric]:
    handler_labels = ["service", "handler"]
    deliveries = CounterMetricFamily(
        "eventwire_deliveries",
        "Deliveries settled, by outcome: ack, nak, term, dead_letter, skipped.",
        labels=["service", "handler", "stream", "type", "outcome"],
    )
    duration = HistogramMetricFamily(
        "eventwire_handler_duration_seconds",
        "From dispatch to outcome: the handler with its middleware, decoding and dead-lettering.",
        labels=handler_labels,
    )
    in_flight = GaugeMetricFamily(
        "eventwire_handlers_in_flight", "Deliveries being handled now.", labels=handler_labels
    )
    redeliveries = CounterMetricFamily(
        "eventwire_redeliveries", "Deliveries with a delivery count above one.", labels=handler_labels
    )
    dead_letters = CounterMetricFamily(
        "eventwire_dead_letters", "Dead letters stored, by reason.", labels=["service", "handler", "reason"]
    )
    consumer_labels = ["service", "handler", "stream", "durable"]
    pending = GaugeMetricFamily(
        "eventwire_consumer_pending_messages", "Messages the durable has not delivered yet.", labels=consumer_labels
    )
    ack_pending = GaugeMetricFamily(
        "eventwire_consumer_ack_pending_messages", "Deliveries not acked yet.", labels=consumer_labels
    )
    pinned = GaugeMetricFamily(
        "eventwire_partition_pinned",
        "1 for each partition durable this instance holds the pin of (the others are absent).",
        labels=consumer_labels,
    )
    for s in services:
        for h in s.handlers.values():
            if h.pins is not None:
                for durable, held in sorted(h.pins().items()):
                    if held:
                        pinned.add_metric([s.service, h.handler, h.stream, durable], 1)
            for (ce_type, outcome), count in sorted(h.deliveries.items()):
                deliveries.add_metric([s.service, h.handler, h.stream, ce_type, outcome], count)
            duration.add_metric([s.service, h.handler], h.duration.cumulative(), h.duration.sum)
            in_flight.add_metric([s.service, h.handler], h.in_flight)
            redeliveries.add_metric([s.service, h.handler], h.redeliveries)
            for reason, count in sorted(h.dead_letters.items()):
                dead_letters.add_metric([s.service, h.handler, reason], count)
            for durable, (waiting, unacked) in sorted(h.consumers.items()):
                pending.add_metric([s.service, h.handler, h.stream, durable], waiting)
                ack_pending.add_metric([s.service, h.handler, h.stream, durable], unacked)
    yield from (deliveries, duration, in_flight, redeliveries, dead_letters, pending, ack_pending)
    if pinned.samples:  # only services with partitioned handlers have it (docs/scaling.md)
        yield pinned


def _operations(services: Iterable[ServiceMetrics]) -> Iterator[Metric]:
    dead_letter_messages = GaugeMetricFamily(
        "eventwire_dead_letter_messages", "Messages in the service's dead-letter stream.", labels=["service", "stream"]
    )
    outbox_rows = GaugeMetricFamily(
        "eventwire_outbox_pending_rows", "Committed outbox rows not yet published.", labels=["service"]
    )
    outbox_age = GaugeMetricFamily(
        "eventwire_outbox_oldest_pending_age_seconds", "Age of the oldest unpublished outbox row.", labels=["service"]
    )
    connected = GaugeMetricFamily("eventwire_connected", "1 while connected to NATS, else 0.", labels=["service"])
    reconnects = CounterMetricFamily(
        "eventwire_reconnects", "Times the connection came back after a loss.", labels=["service"]
    )
    for s in services:
        if s.dead_letter_stream is not None and s.dead_letter_messages is not None:
            dead_letter_messages.add_metric([s.service, s.dead_letter_stream], s.dead_letter_messages)
        if s.outbox_pending_rows is not None:
            outbox_rows.add_metric([s.service], s.outbox_pending_rows)
        if s.outbox_oldest_age is not None:
            outbox_age.add_metric([s.service], s.outbox_oldest_age)
        connected.add_metric([s.service], s.connected)
        reconnects.add_metric([s.service], s.reconnects)
    yield from (dead_letter_messages, outbox_rows, outbox_age, connected, reconnects)


_COLLECTOR = EventwireCollector()
