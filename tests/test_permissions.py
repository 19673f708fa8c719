"""Permissions a user lacks: typed errors at once, a stopped handler that says why, never a re-run loop."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventwire import App, ConnectOptions, Delivery, Outgoing, PermissionDenied, Publisher, Stream
from eventwire.server import EmbeddedServer
from eventwire.transport import JetStreamTransport

from .conftest import eventually, unique
from .events import OrderCreated
from .secured import PASSWORD, secured_server

ROOT = Path(__file__).parent.parent

# One user per missing permission; everything else allowed.
USERS = {
    "admin": "{}",
    "no-stream-info": '{ publish: { allow: [">"], deny: ["$JS.API.STREAM.INFO.>"] } }',
    "no-pull": '{ publish: { allow: [">"], deny: ["$JS.API.CONSUMER.MSG.NEXT.>"] } }',
    "no-ack": '{ publish: { allow: [">"], deny: ["$JS.ACK.>"] } }',
    "orders-only": '{ publish: { allow: ["orders.>", "$JS.API.>", "_INBOX.>"] }, subscribe: { allow: ["_INBOX.>"] } }',
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    users = ", ".join(
        f'{{ user: "{name}", password: "{PASSWORD}", permissions: {grant} }}' for name, grant in USERS.items()
    )
    started = secured_server(tmp_path_factory.mktemp("permissions"), f"authorization {{ users = [ {users} ] }}\n")
    try:
        yield started
    finally:
        started.stop()


def options(server: EmbeddedServer, user: str) -> ConnectOptions:
    return ConnectOptions.from_url(server.url, user=user, password=PASSWORD)


async def transport_for(server: EmbeddedServer, user: str) -> JetStreamTransport:
    return await JetStreamTransport.connect(options(server, user), pull_expires=2.0, idle_heartbeat=0.5)


async def test_publish_outside_the_grant_fails_at_once_and_is_not_retried(server: EmbeddedServer) -> None:
    admin = await transport_for(server, "admin")
    limited = await transport_for(server, "orders-only")
    try:
        name = unique("PERM")
        await admin.ensure_stream(Stream(name, ("orders.>", "payments.>")))
        publisher = Publisher(limited, source="/services/orders", deadline=30.0)
        assert (await publisher.publish(OrderCreated(order_id="ok"), subject="orders.created")).sequence == 1
        started = time.monotonic()
        with pytest.raises(PermissionDenied) as caught:
            await publisher.publish(OrderCreated(order_id="no"), subject="payments.captured")
        single = time.monotonic() - started
        results = await publisher.publish_many(
            [Outgoing(OrderCreated(order_id=f"m-{i}"), subject="payments.captured") for i in range(5)]
            + [Outgoing(OrderCreated(order_id="fine"), subject="orders.created")]
        )
        many = time.monotonic() - started - single
        print(f"refused publish raised after {single * 1000:.0f} ms; publish_many of 6 took {many * 1000:.0f} ms")
        assert (caught.value.operation, caught.value.subject) == ("publish", "payments.captured")
        assert str(caught.value) == "permission denied: publish to payments.captured"
        assert single < 2.0 and many < 2.0  # the deadline is 30 s
        assert [type(r).__name__ for r in results] == ["PermissionDenied"] * 5 + ["PublishAck"]
        assert (await admin.nc.jetstream().stream_info(name)).state.messages == 2  # nothing refused was stored
    finally:
        await limited.close()
        await admin.close()


def test_an_app_without_stream_info_permission_exits_1_naming_the_api_subject(server: EmbeddedServer) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "eventwire",
            "run",
            "eventwire.demo:orders_service()",
            "--url",
            server.url,
            "--user",
            "no-stream-info",
        ],
        cwd=ROOT,
        env={**os.environ, "EVENTWIRE_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - started
    print(f"exit {result.returncode} after {took:.1f}s: {result.stderr.strip()}")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1
    assert lines[-1] == ("error: permission denied: publish to $JS.API.STREAM.INFO.ORDERS (needed to provision ORDERS)")
    assert "Traceback" not in result.stderr
    assert took < 10  # not the 5 s JetStream API timeout, then a retry


async def _app_with_a_handler(
    server: EmbeddedServer, user: str, calls: list[int], **handler: object
) -> tuple[App, Stream, JetStreamTransport]:
    name = unique("PERM")
    stream = Stream(name, (f"{name}.>",))
    app = App(unique("perm"), dead_letters=False)

    @app.handler(OrderCreated, stream=stream, durable="worker", **handler)  # type: ignore[arg-type]
    async def work(event: OrderCreated, delivery: Delivery) -> None:
        calls.append(delivery.delivery_count)
        await asyncio.sleep(0.05)  # the server's refusal of the first ack arrives meanwhile

    admin = await transport_for(server, "admin")
    await admin.ensure_stream(stream)
    await Publisher(admin, source="/tests").publish_many(
        [Outgoing(OrderCreated(order_id=f"o-{i}"), subject=f"{name}.created") for i in range(10)]
    )
    await app.start(connect=options(server, user))
    return app, stream, admin


async def test_a_consumer_that_may_not_pull_stops_loudly_and_the_app_turns_unhealthy(
    server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    app, stream, admin = await _app_with_a_handler(server, "no-pull", calls)
    try:
        await eventually(lambda: bool(app.problems()), timeout=5)
        await asyncio.sleep(1.0)
        problems = app.problems()
    finally:
        await app.stop()
        await admin.close()
    subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream.name}.worker"
    assert calls == []
    assert problems == [f"handler work: permission denied: publish to {subject} (pull requests of durable worker)"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(subject in message and "handler work stopped" in message for message in errors), errors


async def test_a_consumer_whose_acks_are_refused_does_not_rerun_its_handler(
    server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    app, stream, admin = await _app_with_a_handler(server, "no-ack", calls, ack_wait=1.0)
    try:
        await eventually(lambda: bool(app.problems()), timeout=5)
        await asyncio.sleep(3.0)  # three times ack_wait: a handler re-run for redeliveries would show here
        problems = app.problems()
    finally:
        await app.stop()
        await admin.close()
    print(f"handler ran {len(calls)} time(s) before the refused ack stopped it: {calls}")
    assert calls and set(calls) == {1}  # never a redelivery
    assert len(calls) <= 3  # the one whose ack was refused, and what had started before the refusal arrived
    assert len(problems) == 1
    assert f".{stream.name}.worker.>" in problems[0] and "$JS.ACK." in problems[0]
    assert "acks of durable worker" in problems[0]
