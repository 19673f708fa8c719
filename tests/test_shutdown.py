"""Graceful shutdown of a service process (DESIGN §7), driven by real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
from nats.aio.client import Client as NatsClient

from eventwire import App, Stream
from eventwire.server import EmbeddedServer

from .conftest import eventually, unique
from .events import OrderCreated

ROOT = Path(__file__).parent.parent
CE = {"ce-specversion": "1.0", "ce-source": "/tests", "ce-type": "shop.orders.v1.OrderCreated"}


def start_service(server: EmbeddedServer, stream: str, marks: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "eventwire", "run", "tests.services.slow:app", "--url", server.url],
        cwd=ROOT,
        env={**os.environ, "TEST_STREAM": stream, "TEST_MARK_DIR": str(marks), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def publish_orders(nc: NatsClient, stream: str, count: int) -> None:
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    for i in range(count):
        await js.publish(
            f"{stream}.created", OrderCreated(order_id=f"o-{i}").SerializeToString(), headers={**CE, "ce-id": f"id-{i}"}
        )


async def nats_connect(server: EmbeddedServer) -> NatsClient:
    return await nats.connect(server.url)


async def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int:
    code = await asyncio.to_thread(process.wait, timeout)
    return code


async def test_sigterm_mid_handler_finishes_acks_and_exits_zero(
    jetstream_server: EmbeddedServer, raw_nc: NatsClient, tmp_path: Path
) -> None:
    stream = unique("SIG")
    await publish_orders(raw_nc, stream, 5)
    service = start_service(jetstream_server, stream, tmp_path, TEST_HANDLER_SECONDS="1.5")
    try:
        await eventually((tmp_path / "started-o-0").exists, timeout=30)
        service.send_signal(signal.SIGTERM)
        code = await wait_exit(service, 20)
    finally:
        service.kill()
    output = service.stdout.read().decode() if service.stdout else ""
    assert code == 0, output
    assert (tmp_path / "finished-o-0").exists(), output
    assert sorted(os.listdir(tmp_path)) == ["finished-o-0", "started-o-0"]

    info = await raw_nc.jetstream().consumer_info(stream, "slowsvc-slow")
    assert info.ack_floor.stream_seq == 1

    handled: list[str] = []
    fresh = App("slowsvc", url=jetstream_server.url, idle_heartbeat=0.5)

    @fresh.handler(OrderCreated, stream=Stream(stream, (f"{stream}.>",)), ack_wait=30.0, prefetch=10)
    async def slow(event: OrderCreated) -> None:
        handled.append(event.order_id)

    async with fresh:
        # Well inside ack_wait (30 s): the fetched-but-not-started events were nak'd back at shutdown.
        await eventually(lambda: len(handled) == 4, timeout=5)
        await asyncio.sleep(0.3)
    assert sorted(handled) == ["o-1", "o-2", "o-3", "o-4"]


async def test_second_signal_exits_at_once(
    jetstream_server: EmbeddedServer, raw_nc: NatsClient, tmp_path: Path
) -> None:
    stream = unique("SIG")
    await publish_orders(raw_nc, stream, 1)
    service = start_service(jetstream_server, stream, tmp_path, TEST_HANDLER_SECONDS="60")
    try:
        await eventually((tmp_path / "started-o-0").exists, timeout=30)
        service.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        assert service.poll() is None  # still waiting for the 60-second handler
        started = time.monotonic()
        service.send_signal(signal.SIGTERM)
        code = await wait_exit(service, 10)
    finally:
        service.kill()
    assert code == 128 + signal.SIGTERM
    assert time.monotonic() - started < 5
    assert not (tmp_path / "finished-o-0").exists()
    info = await raw_nc.jetstream().consumer_info(stream, "slowsvc-slow")
    assert info.ack_floor.stream_seq == 0  # not acked: it will be redelivered


async def test_sigterm_while_reconnecting_exits_at_once(fresh_server: EmbeddedServer, tmp_path: Path) -> None:
    """Nothing can be acked while disconnected: the shutdown does not wait for the 60-second handler."""
    nc = await nats_connect(fresh_server)
    stream = unique("SIG")
    try:
        await publish_orders(nc, stream, 1)
    finally:
        await nc.close()
    service = start_service(fresh_server, stream, tmp_path, TEST_HANDLER_SECONDS="60")
    try:
        await eventually((tmp_path / "started-o-0").exists, timeout=30)
        fresh_server.kill()
        await asyncio.sleep(1.0)  # the service has noticed and is reconnecting
        started = time.monotonic()
        service.send_signal(signal.SIGTERM)
        code = await wait_exit(service, 20)
        took = time.monotonic() - started
    finally:
        service.kill()
    output = service.stdout.read().decode() if service.stdout else ""
    print(f"exited {took:.2f}s after SIGTERM while disconnected")
    assert code == 0, output
    assert took < 3.0, output
    assert "stopping while disconnected" in output
    assert "Traceback" not in output
