"""The pull loop's answers to the server's statuses, on a real nats-server."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from eventwire import App, ConnectOptions, Delivery, Stream
from eventwire._streams import Durable
from eventwire.server import EmbeddedServer
from eventwire.testing import running
from eventwire.transport import InboundMessage, JetStreamTransport

from .conftest import eventually, unique
from .events import OrderCreated


async def test_a_pull_answered_503_is_sent_again_after_a_short_backoff(
    jetstream_server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """No consumer answers yet (as right after a failover): the next request follows within the 2 s backoff cap,
    not after two missed heartbeats (here 2 x 5 s)."""
    caplog.set_level(logging.INFO, logger="eventwire.transport")
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_server.url), idle_heartbeat=5.0)
    name = unique("P")
    stream = Stream(name, (f"{name}.>",))
    durable = Durable("later", name, f"{name}.>")
    await transport.ensure_stream(stream)
    received: list[InboundMessage] = []
    loop = asyncio.get_running_loop()
    pull = await transport.pull(durable, received.append, lambda: 10 - len(received), min_batch=1)
    try:
        await asyncio.sleep(1.5)  # requests answered 503, each after a longer backoff
        await transport.ensure_durable(durable)
        await transport.publish(f"{name}.a", b"x", {"Nats-Msg-Id": "one"}, timeout=5)
        created = loop.time()
        await eventually(lambda: len(received) == 1, timeout=15)
        took = loop.time() - created
    finally:
        await pull.stop()
        await transport.close()
    print(f"delivered {took:.2f}s after the durable appeared")
    assert took < 2.5
    refusals = [r.getMessage() for r in caplog.records if "status 503" in r.getMessage()]
    assert len(refusals) == 1  # one line however many requests were refused
    assert "\n" not in refusals[0] and refusals[0].endswith("s")


async def test_a_deleted_durable_stops_its_handler_with_the_reason(jetstream_server: EmbeddedServer) -> None:
    """... and ``/healthz`` turns 503, so an orchestrator restarts the service."""
    name = unique("P")
    stream = Stream(name, (f"{name}.>",))
    app = App(unique("pull"), metrics_port=0, metrics_host="127.0.0.1")

    @app.handler(OrderCreated, stream=stream, durable="doomed")
    async def handle(event: OrderCreated, delivery: Delivery) -> None:
        pass

    transport = await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_server.url))
    async with running(app, transport), httpx.AsyncClient() as client:
        healthz = f"http://127.0.0.1:{app.health_port}/healthz"
        alive = (await client.get(healthz)).status_code
        await transport.nc.jetstream().delete_consumer(name, "doomed")
        await eventually(lambda: bool(app.problems()), timeout=20)
        problems = app.problems()
        dead = await client.get(healthz)
    assert alive == 200
    assert (dead.status_code, dead.text) == (503, problems[0] + "\n")
    # The server says "Consumer Deleted" to a request it holds; one still queued is dropped, and the
    # 503s that follow lead to a look at the durable.
    assert problems in (
        [f"handler handle: stream '{name}': consumer doomed: Consumer Deleted: pulling stopped"],
        [f"handler handle: stream '{name}': consumer doomed: the durable was deleted: pulling stopped"],
    )
