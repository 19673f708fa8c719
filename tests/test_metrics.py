"""Metrics and health endpoints on a real server: the scraped figures equal what happened."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from eventwire import App, ConnectOptions, Delivery, Outgoing, Reject, RetryPolicy, Stream
from eventwire.observability import HealthServer
from eventwire.outbox import Outbox, OutboxRelay, create_tables
from eventwire.server import EmbeddedServer
from eventwire.testing import MemoryBroker, MemoryTransport, running
from eventwire.transport import JetStreamTransport, Transport

from .conftest import eventually, unique
from .events import OrderCreated

DOCS = Path(__file__).parent.parent / "docs"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(text: str, service: str) -> Samples:
    """Every sample of ``service``, by name and labels (the service label left out)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if labels.pop("service", None) == service:
                samples[sample.name, frozenset(labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def workload_app(service: str, stream: Stream, **settings: object) -> App:
    """A handler that fails the first delivery of every fifth event and rejects the poison one."""
    app = App(service, metrics_interval=0.2, **settings)  # type: ignore[arg-type]

    @app.handler(OrderCreated, stream=stream, retry=RetryPolicy(backoff=[0.05]))
    async def handle(order: OrderCreated, delivery: Delivery) -> None:
        if order.order_id == "poison":
            raise Reject("cannot be served")
        if int(order.order_id.removeprefix("o-")) % 5 == 0 and delivery.delivery_count == 1:
            raise RuntimeError("flaky")

    return app


async def run_workload(app: App, transport: Transport, stream: Stream) -> str:
    """Publish 20 events and a poison one, wait until all are settled and polled; return the scrape."""
    async with running(app, transport) as probe:
        items = [Outgoing(OrderCreated(order_id=f"o-{i}"), subject=f"{stream.name}.a") for i in range(20)]
        await app.publisher.publish_many(items)
        await app.publisher.publish(OrderCreated(order_id="poison"), subject=f"{stream.name}.a")
        await probe.wait_until(lambda: len([s for s in probe.settlements if s.outcome != "nak"]) == 21)
        await asyncio.sleep(0.5)  # a metrics poll after the last settlement
        if app.health_port is None:
            return generate_latest(REGISTRY).decode()
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://127.0.0.1:{app.health_port}/metrics")).text


def check_workload(samples: Samples, stream: Stream) -> None:
    labels = {"handler": "handle", "stream": stream.name, "type": "shop.orders.v1.OrderCreated"}
    assert value(samples, "eventwire_deliveries_total", **labels, outcome="ack") == 20
    assert value(samples, "eventwire_deliveries_total", **labels, outcome="nak") == 4  # o-0, o-5, o-10, o-15
    assert value(samples, "eventwire_deliveries_total", **labels, outcome="dead_letter") == 1
    assert value(samples, "eventwire_redeliveries_total", handler="handle") == 4
    assert value(samples, "eventwire_dead_letters_total", handler="handle", reason="rejected") == 1
    assert value(samples, "eventwire_handler_duration_seconds_count", handler="handle") == 25
    assert value(samples, "eventwire_handlers_in_flight", handler="handle") == 0
    published = {"type": "shop.orders.v1.OrderCreated", "outcome": "stored"}
    assert value(samples, "eventwire_published_total", **published) == 21
    assert value(samples, "eventwire_publish_duration_seconds_count", type="shop.orders.v1.OrderCreated") == 1
    durable = {"handler": "handle", "stream": stream.name, "durable": f"{stream.name.lower()}-handle"}
    assert value(samples, "eventwire_consumer_pending_messages", **durable) == 0
    assert value(samples, "eventwire_consumer_ack_pending_messages", **durable) == 0
    assert value(samples, "eventwire_dead_letter_messages", stream=f"DLQ-{stream.name.lower()}") == 1
    assert value(samples, "eventwire_connected") == 1


def named_stream() -> Stream:
    name = unique("MET")
    return Stream(name, (f"{name}.>",))


async def test_scraped_metrics_equal_what_happened(jetstream_server: EmbeddedServer) -> None:
    stream = named_stream()
    service = stream.name.lower()
    app = workload_app(service, stream, metrics_port=0, metrics_host="127.0.0.1")
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_server.url))
    scraped = await run_workload(app, transport, stream)
    print("\n".join(line for line in scraped.splitlines() if service in line and "_bucket" not in line))
    check_workload(scrape(scraped, service), stream)


@pytest.mark.virtual_time
async def test_the_memory_transport_reports_the_same_metrics() -> None:
    stream = named_stream()
    app = workload_app(stream.name.lower(), stream, metrics=True)
    scraped = await run_workload(app, MemoryTransport(MemoryBroker()), stream)
    check_workload(scrape(scraped, stream.name.lower()), stream)


async def test_readyz_follows_start_up_and_the_connection(fresh_server: EmbeddedServer) -> None:
    stream = named_stream()
    app = workload_app(stream.name.lower(), stream, metrics_port=0, metrics_host="127.0.0.1")
    fresh_server.kill()
    starting = asyncio.create_task(
        app.start(connect=ConnectOptions.from_url(fresh_server.url, reconnect_time_wait=0.1, first_connect_deadline=20))
    )
    try:
        await eventually(lambda: app.health_port not in (None, 0), timeout=10)
        base = f"http://127.0.0.1:{app.health_port}"
        async with httpx.AsyncClient() as client:

            async def status(path: str) -> int:
                return (await client.get(base + path)).status_code

            assert (await status("/healthz"), await status("/readyz")) == (200, 503)  # no server yet
            not_ready = (await client.get(base + "/readyz")).json()
            fresh_server.restart()
            await starting
            assert await status("/readyz") == 200
            fresh_server.kill()
            await eventually(lambda: not app.transport.connected, timeout=10)
            down = (await client.get(base + "/readyz")).json()
            assert await status("/healthz") == 200
            fresh_server.restart()
            await eventually(lambda: app.transport.connected, timeout=15)
            assert await status("/readyz") == 200
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await app.stop()
    assert not_ready == {"ready": False, "problems": [f"{app.name} is not started"]}
    assert down == {"ready": False, "problems": ["not connected to NATS"]}


def exported_names(text: str) -> tuple[set[str], set[str]]:
    """The eventwire metric families in a scrape, and every sample name Prometheus stores for them."""
    families: set[str] = set()
    samples: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("eventwire_"):
            families.add(family.name)
            samples.update(family.name + suffix for suffix in suffixes[family.type])
    return families, samples


def named_metrics(text: str) -> set[str]:
    return set(re.findall(r"\beventwire_[a-z_]+", text))


async def test_the_demos_apps_share_one_endpoint_and_the_dashboard_names_what_it_exports(
    jetstream_server: EmbeddedServer,
) -> None:
    from eventwire.demo import inventory_service, notifications_service, orders_service
    from eventwire.demo._services import DemoState
    from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import LineItem

    state = DemoState(run_id="metrics", orders=30)
    apps = [orders_service(), inventory_service(state=state), notifications_service(state=state)]
    endpoint = HealthServer([app.readiness for app in apps], port=0, host="127.0.0.1")
    await endpoint.start()
    try:
        for app in apps:
            app.enable_metrics()
            await app.start(connect=ConnectOptions.from_url(jetstream_server.url))
        orders = [
            Outgoing(
                OrderCreated(order_id=f"metrics-{n:06d}", items=[LineItem(sku="sku-pear", quantity=1)]),
                subject="orders.created",
            )
            for n in range(30)
        ]
        await apps[0].publisher.publish_many(orders)
        await asyncio.wait_for(state.all_notified.wait(), 60)
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{endpoint.port}/metrics")).text
    finally:
        for app in reversed(apps):
            await app.stop()
        await endpoint.stop()
    published = scrape(text, "orders")
    assert value(published, "eventwire_published_total", type="shop.orders.v1.OrderCreated", outcome="stored") >= 30
    inventory, notifications = scrape(text, "inventory"), scrape(text, "notifications")
    assert any(name == "eventwire_deliveries_total" for name, _ in inventory)
    assert any(name == "eventwire_deliveries_total" for name, _ in notifications)

    families, samples = exported_names(text)
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", []) if "expr" in target
    ]
    in_dashboard = named_metrics(json.dumps(dashboard))
    assert len(queries) >= 20 and in_dashboard
    assert in_dashboard <= samples, f"not exported: {sorted(in_dashboard - samples)}"
    assert {name for name in families if not any(n.startswith(name) for n in in_dashboard)} == set()
    page = (DOCS / "observability.md").read_text()
    in_page = named_metrics(page)
    histograms = {name for name in families if name + "_bucket" in samples}
    assert in_page <= samples | histograms, f"not exported: {sorted(in_page - samples - histograms)}"
    table = {row.split("`")[1] for row in page.splitlines() if row.startswith("| `eventwire_")}
    assert table == {name + "_total" if name + "_total" in samples else name for name in families}


async def test_the_outbox_backlog_is_reported_while_nats_is_away(fresh_server: EmbeddedServer, tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'service.db'}")
    await create_tables(engine)
    stream = named_stream()
    service = stream.name.lower()
    received: list[str] = []
    app = App(service, metrics=True, metrics_interval=0.2, relays=[OutboxRelay(engine, publish_deadline=1.0)])

    @app.handler(OrderCreated, stream=stream)
    async def handle(order: OrderCreated) -> None:
        received.append(order.order_id)

    def outbox_figures() -> tuple[float, float | None]:
        samples = scrape(generate_latest(REGISTRY).decode(), service)
        age = samples.get(("eventwire_outbox_oldest_pending_age_seconds", frozenset()))
        return value(samples, "eventwire_outbox_pending_rows"), age

    outbox = Outbox(source=f"/services/{service}")
    try:
        await app.start(connect=ConnectOptions.from_url(fresh_server.url, reconnect_time_wait=0.1))
        await eventually(lambda: outbox_figures() == (0, None), timeout=5)
        fresh_server.kill()
        await eventually(lambda: not app.transport.connected, timeout=10)
        async with AsyncSession(engine) as session, session.begin():
            for n in range(3):
                await outbox.add(session, OrderCreated(order_id=f"o-{n}"), subject=f"{stream.name}.a")
        await eventually(lambda: outbox_figures()[0] == 3, timeout=5)
        await asyncio.sleep(0.5)
        rows, away = outbox_figures()
        fresh_server.restart()
        await eventually(lambda: sorted(received) == ["o-0", "o-1", "o-2"], timeout=20)
        await eventually(lambda: outbox_figures() == (0, None), timeout=5)
    finally:
        await app.stop()
        await engine.dispose()
    print(f"3 rows waiting, the oldest {away:.2f}s old, while NATS was away")
    assert rows == 3 and away is not None and away >= 0.5


@pytest.mark.virtual_time
async def test_the_health_server_leaves_logging_to_the_process(caplog: pytest.LogCaptureFixture) -> None:
    """uvicorn's own logging set-up would give its loggers a text handler of their own, deaf to --log-format."""
    stream = named_stream()
    app = workload_app(stream.name.lower(), stream, metrics_port=0, metrics_host="127.0.0.1")
    async with running(app):
        logging.getLogger("uvicorn.error").warning("from the health server")
    assert "from the health server" in caplog.messages
