"""Traces: one per order across the demo's three services, with the messaging conventions, alike on both transports."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from eventwire import App, ConnectOptions, Delivery, Outgoing, Reject, Stream
from eventwire.demo import inventory_service, notifications_service, orders_service
from eventwire.demo._services import DemoState
from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import LineItem, OrderCreated
from eventwire.outbox import Outbox, OutboxRelay, create_tables
from eventwire.server import EmbeddedServer
from eventwire.testing import MemoryBroker, MemoryTransport, running
from eventwire.transport import JetStreamTransport, Transport

from .conftest import unique


class Recorder(SpanExporter):
    """Keeps the spans that end while a test records; the provider is the process's, for good."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.recording = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.recording:
            self.spans.extend(spans)
        return SpanExportResult.SUCCESS


@pytest.fixture(scope="session")
def recorder() -> Recorder:
    recorder = Recorder()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(recorder))
    trace.set_tracer_provider(provider)
    return recorder


@pytest.fixture
def spans(recorder: Recorder) -> Iterator[list[ReadableSpan]]:
    recorder.spans.clear()
    recorder.recording = True
    yield recorder.spans
    recorder.recording = False


def tree(spans: Sequence[ReadableSpan]) -> str:
    """One trace, parent before children, indented."""
    children: dict[int | None, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        children[span.parent.span_id if span.parent else None].append(span)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in sorted(children[parent], key=lambda s: s.start_time or 0):
            attributes = span.attributes or {}
            lines.append(
                f"{'  ' * depth}{span.name} [{span.kind.name}] type={attributes.get('cloudevents.event_type')} "
                f"id={attributes.get('messaging.message.id')} "
                f"group={attributes.get('messaging.consumer.group.name', '-')} status={span.status.status_code.name}"
            )
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)


async def test_one_trace_per_order_spans_the_three_services(
    jetstream_server: EmbeddedServer, spans: list[ReadableSpan]
) -> None:
    state = DemoState(run_id="traced", orders=5)
    apps = [orders_service(), inventory_service(state=state), notifications_service(state=state)]
    for app in apps:
        await app.start(connect=ConnectOptions.from_url(jetstream_server.url))
    try:
        orders = [
            Outgoing(
                OrderCreated(order_id=f"traced-{n:06d}", items=[LineItem(sku="sku-apple", quantity=1)]),
                subject="orders.created",
                key=f"traced-{n:06d}",
            )
            for n in range(1, 6)  # the demo's warehouse fails every 25th order, 0 included
        ]
        await apps[0].publisher.publish_many(orders)
        await asyncio.wait_for(state.all_notified.wait(), 30)
        await asyncio.sleep(0.2)  # the last consumer spans end after their acks
    finally:
        for app in reversed(apps):
            await app.stop()
    by_trace: dict[int, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        by_trace[span.context.trace_id].append(span)
    traces = [t for t in by_trace.values() if any(s.name == "send orders.created" for s in t)]
    print(tree(traces[0]))
    assert len(traces) == 5
    for spans_of_order in traces:
        shape = sorted((s.name, s.kind) for s in spans_of_order)
        assert shape == [
            ("process inventory.reserved", SpanKind.CONSUMER),
            ("process orders.created", SpanKind.CONSUMER),
            ("send inventory.reserved", SpanKind.PRODUCER),
            ("send orders.created", SpanKind.PRODUCER),
        ]
        by_name = {s.name: s for s in spans_of_order}
        chain = [
            "send orders.created",
            "process orders.created",
            "send inventory.reserved",
            "process inventory.reserved",
        ]
        for parent, child in itertools.pairwise(chain):
            parent_context = by_name[child].parent
            assert parent_context is not None and parent_context.span_id == by_name[parent].context.span_id
        consumed = by_name["process orders.created"].attributes or {}
        sent = by_name["send orders.created"].attributes or {}
        assert consumed["messaging.system"] == sent["messaging.system"] == "nats"
        assert consumed["messaging.operation.type"] == "process" and sent["messaging.operation.type"] == "send"
        assert consumed["messaging.destination.name"] == "orders.created"
        assert consumed["messaging.consumer.group.name"] == "svc-inventory"
        assert consumed["messaging.message.id"] == sent["messaging.message.id"]
        assert consumed["cloudevents.event_type"] == "shop.orders.v1.OrderCreated"
        assert consumed["eventwire.outcome"] == "ack"
        assert all(s.status.status_code is StatusCode.UNSET for s in spans_of_order)


Shape = tuple[str, str, str, tuple[tuple[str, object], ...]]


def shapes(spans: Sequence[ReadableSpan]) -> list[Shape]:
    """What a trace says, without ids, times or sequence numbers (which differ from run to run)."""
    kept = ("messaging.system", "messaging.operation.type", "messaging.consumer.group.name", "eventwire.outcome")
    return sorted(
        (
            s.name.split(".", 1)[-1] if "." in s.name else s.name,
            s.kind.name,
            s.status.status_code.name,
            tuple((k, (s.attributes or {}).get(k)) for k in kept),
        )
        for s in spans
    )


async def _traced_workload(transport: Transport, spans: list[ReadableSpan]) -> list[Shape]:
    name = unique("TR")
    stream = Stream(name, (f"{name}.>",))
    app = App("traced")

    @app.handler(OrderCreated, stream=stream)
    async def handle(order: OrderCreated, delivery: Delivery) -> None:
        if order.order_id == "refused":
            raise Reject("cannot be served")

    spans.clear()
    async with running(app, transport) as probe:
        for order_id in ("o-1", "refused"):
            await probe.publish(OrderCreated(order_id=order_id), subject=f"{name}.created")
        await asyncio.sleep(0.2)
    return shapes(spans)


async def test_failures_set_the_span_status_and_both_transports_trace_alike(
    jetstream_server: EmbeddedServer, spans: list[ReadableSpan]
) -> None:
    on_jetstream = await _traced_workload(
        await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_server.url)), spans
    )
    on_memory = await _traced_workload(MemoryTransport(MemoryBroker()), spans)
    assert on_memory == on_jetstream
    statuses = {(name, kind, status) for name, kind, status, _ in on_jetstream}
    assert ("created", "CONSUMER", "ERROR") in statuses  # the rejected one, dead-lettered
    assert ("created", "CONSUMER", "UNSET") in statuses
    outcomes = {value for *_, attributes in on_jetstream for key, value in attributes if key == "eventwire.outcome"}
    assert outcomes >= {"ack", "dead_letter"}


@pytest.mark.virtual_time
async def test_a_trace_not_sampled_where_it_began_records_nothing_and_still_propagates(
    spans: list[ReadableSpan],
) -> None:
    name = unique("TR")
    stream = Stream(name, (f"{name}.>",))
    unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    app = App("untraced")

    @app.handler(OrderCreated, stream=stream)
    async def handle(order: OrderCreated, delivery: Delivery) -> None:
        if order.order_id == "o-1":
            await delivery.publish(OrderCreated(order_id="o-2"), subject=f"{name}.next")

    async with running(app) as probe:
        await app.publisher.publish(OrderCreated(order_id="o-1"), subject=f"{name}.created", traceparent=unsampled)
        await probe.wait_until(lambda: len([s for s in probe.settlements if s.outcome == "ack"]) == 2)
        follow_up = next(p for p in probe.published if p.subject == f"{name}.next")
    assert spans == []  # neither the publishes nor the handlings were recorded
    assert follow_up.envelope is not None and follow_up.envelope.traceparent is not None
    assert follow_up.envelope.traceparent.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert follow_up.envelope.traceparent.endswith("-00")


async def test_an_event_written_to_the_outbox_in_a_handler_continues_its_trace(
    spans: list[ReadableSpan], tmp_path: Path
) -> None:
    name = unique("TR")
    stream = Stream(name, (f"{name}.>",))
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'service.db'}")
    await create_tables(engine)
    outbox = Outbox(source="/services/orders")
    app = App("outboxed")

    @app.handler(OrderCreated, stream=stream)
    async def handle(order: OrderCreated, delivery: Delivery) -> None:
        if order.order_id == "o-1":
            async with AsyncSession(engine) as session, session.begin():
                await outbox.add(session, OrderCreated(order_id="o-2"), subject=f"{name}.next")

    transport = MemoryTransport(MemoryBroker())
    try:
        async with running(app, transport) as probe:
            await app.publisher.publish(OrderCreated(order_id="o-1"), subject=f"{name}.created")
            await probe.wait_until(lambda: len(probe.settlements) == 1)
            assert await OutboxRelay(engine).relay_once(transport) == 1
            await probe.wait_until(lambda: len(probe.settlements) == 2)
    finally:
        await engine.dispose()
    by_name = {s.name: s for s in spans}
    first, relayed = by_name[f"process {name}.created"], by_name[f"process {name}.next"]
    assert relayed.context.trace_id == first.context.trace_id == by_name[f"send {name}.created"].context.trace_id
    assert relayed.parent is not None and relayed.parent.span_id == first.context.span_id


@pytest.mark.virtual_time
async def test_a_publish_cancelled_while_retrying_ends_its_span(spans: list[ReadableSpan]) -> None:
    app = App("cancelled")
    subject = f"{unique('nowhere')}.created"  # no stream: "no responders", sent again until the deadline
    async with running(app):
        publishing = asyncio.create_task(app.publisher.publish(OrderCreated(order_id="o-1"), subject=subject))
        await asyncio.sleep(1.0)
        publishing.cancel()
        await asyncio.gather(publishing, return_exceptions=True)
        many = asyncio.create_task(
            app.publisher.publish_many([Outgoing(OrderCreated(order_id="o-2"), subject=subject)])
        )
        await asyncio.sleep(1.0)
        many.cancel()
        await asyncio.gather(many, return_exceptions=True)
    ended = [s for s in spans if s.name == f"send {subject}"]
    assert [(s.status.status_code, s.status.description) for s in ended] == [(StatusCode.ERROR, "CancelledError: ")] * 2
