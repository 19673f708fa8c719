"""Frozen processes: a SIGSTOPped cluster node is left within the keepalive bound; a SIGSTOPped consumer, resumed,
handles nothing the server took back meanwhile."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventwire import ConnectOptions, Outgoing, Publisher, Stream
from eventwire.server import EmbeddedServer
from eventwire.testing import EmbeddedCluster
from eventwire.transport import JetStreamTransport

from .conftest import eventually, recorded, unique
from .events import OrderCreated

ROOT = Path(__file__).parent.parent


@pytest.mark.timeout(120)
async def test_a_frozen_node_is_left_within_the_keepalive_bound_and_publishing_resumes(
    jetstream_cluster: EmbeddedCluster,
) -> None:
    cluster = jetstream_cluster
    options = ConnectOptions.from_url(cluster.url)
    bound = options.ping_interval * (options.max_outstanding_pings + 1) + 2 * options.connect_timeout
    transport = await JetStreamTransport.connect(options)
    stream = Stream(unique("FRZ"), ("frozen.>",), replicas=3)
    await transport.ensure_stream(stream)
    publisher = Publisher(transport, source="/tests", deadline=60.0)
    await publisher.publish(OrderCreated(order_id="before"), subject="frozen.a", msg_id="before")
    assert transport.nc.connected_url is not None
    frozen = cluster.node_for(transport.nc.connected_url.port or 0)
    loop = asyncio.get_running_loop()
    frozen.pause()
    paused_at = loop.time()
    try:
        moved_at = None
        sending = asyncio.create_task(
            publisher.publish(OrderCreated(order_id="during"), subject="frozen.a", msg_id="during")
        )
        while not sending.done():
            url = transport.nc.connected_url
            if moved_at is None and transport.connected and url is not None and url.port != frozen.port:
                moved_at = loop.time()
            await asyncio.sleep(0.05)
        ack = await sending
        acked_at = loop.time()
    finally:
        frozen.resume()
    info = await transport.nc.jetstream().stream_info(stream.name)
    await transport.close()
    assert moved_at is not None
    moved, resumed = moved_at - paused_at, acked_at - paused_at
    print(f"left the frozen node after {moved:.1f}s (bound {bound:.0f}s); publish acked after {resumed:.1f}s")
    assert moved <= bound
    assert resumed <= bound + 10  # a new stream leader, if the frozen node led the stream
    assert (ack.sequence, info.state.messages) == (2, 2)  # the retried publish was stored once


def _spawn(command: list[str], env: dict[str, str], *, keep_log: bool = False) -> subprocess.Popen[bytes]:
    log = subprocess.PIPE if keep_log else subprocess.DEVNULL
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)


@pytest.mark.timeout(120)
async def test_a_resumed_consumer_skips_what_waited_past_ack_wait(
    jetstream_server: EmbeddedServer, tmp_path: Path
) -> None:
    name = unique("PAUSE")
    stream = Stream(name, (f"{name}.>",))
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_server.url))
    await transport.ensure_stream(stream)
    await Publisher(transport, source="/tests").publish_many(
        [Outgoing(OrderCreated(order_id=f"o-{i:02d}"), subject=f"{name}.created") for i in range(30)]
    )
    await transport.close()
    record = tmp_path / "record.txt"
    env = {**os.environ, "TEST_STREAM": name, "TEST_RECORD": str(record), "TEST_ACK_WAIT": "2"}
    command = [sys.executable, "-m", "eventwire", "run", "tests.services.recorder:app", "--url", jetstream_server.url]
    first = _spawn(command, env, keep_log=True)
    second = None
    try:
        await eventually(lambda: any(pid == first.pid for pid, *_ in recorded(record)), timeout=30)
        first.send_signal(signal.SIGSTOP)  # with up to eight fetched events waiting in its buffer
        second = _spawn(command, env)
        await asyncio.sleep(5.0)  # past ack_wait: the server hands the first one's events to the second
        resumed_at = time.time()
        first.send_signal(signal.SIGCONT)
        for _ in range(400):
            if {order for _, order, *_ in recorded(record)} >= {f"o-{i:02d}" for i in range(30)}:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
    finally:
        for process in (first, second):
            if process is not None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        _, first_log = first.communicate(timeout=30)
        if second is not None:
            second.wait(30)
    rows = recorded(record)
    by_second = {order for pid, order, *_ in rows if second is not None and pid == second.pid}
    first_after_resume = [
        (order, delivery) for pid, order, delivery, at in rows if pid == first.pid and at > resumed_at
    ]
    print(f"the second instance took over {len(by_second)} events; the first, resumed, ran {first_after_resume}")
    assert {order for _, order, *_ in rows} == {f"o-{i:02d}" for i in range(30)}
    assert by_second  # the pause did hand events over
    assert not {order for order, _ in first_after_resume} & by_second  # nothing the server took back
    assert "waited here longer than ack_wait" in first_log.decode()
