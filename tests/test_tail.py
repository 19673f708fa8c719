"""``eventwire tail`` on a real server: the last N of a filtered subject, then live events, decoded; nothing left."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import nats

import eventwire
from eventwire import Stream
from eventwire.server import EmbeddedServer

from .conftest import unique
from .events import OrderCreated

ROOT = Path(__file__).parent.parent


async def test_tail_shows_the_last_events_of_its_subject_then_new_ones_and_leaves_no_consumer(
    fresh_server: EmbeddedServer,
) -> None:
    name = unique("TAIL")
    stream = Stream(name, (f"{name}.>",))
    async with eventwire.connect(fresh_server.url, source="/tests/tail", streams=[stream]) as publisher:
        for n in range(20):  # a and b interleaved: the last 5 of a are not the stream's last 5
            await publisher.publish(OrderCreated(order_id=f"{'ab'[n % 2]}-{n}"), subject=f"{name}.{'ab'[n % 2]}")
        tail = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "eventwire",
            "tail",
            f"{name}.a",
            "--last",
            "5",
            "--json",
            "--import",
            "tests.events",
            "--url",
            fresh_server.url,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert tail.stdout is not None
        lines = [json.loads(await asyncio.wait_for(tail.stdout.readline(), 20)) for _ in range(5)]
        await publisher.publish(OrderCreated(order_id="b-late"), subject=f"{name}.b")
        await publisher.publish(OrderCreated(order_id="a-late"), subject=f"{name}.a", key="a-late")
        lines.append(json.loads(await asyncio.wait_for(tail.stdout.readline(), 20)))
    tail.send_signal(signal.SIGINT)
    _, errors = await asyncio.wait_for(tail.communicate(), 20)
    assert tail.returncode == 0, errors

    print("\n".join(json.dumps(line) for line in lines))
    assert [line["payload"]["orderId"] for line in lines] == ["a-10", "a-12", "a-14", "a-16", "a-18", "a-late"]
    assert [line["stream_sequence"] for line in lines] == [11, 13, 15, 17, 19, 22]
    late = lines[-1]
    assert (late["subject"], late["ce_type"], late["key"]) == (f"{name}.a", "shop.orders.v1.OrderCreated", "a-late")
    nc = await nats.connect(fresh_server.url)
    try:
        js = nc.jetstream()
        left = [c.name for c in await js.consumers_info(name)]
        state = (await js.stream_info(name)).state
    finally:
        await nc.close()
    assert left == [] and state.messages == 22  # nothing acked, nothing removed, no consumer left


async def test_tail_without_the_events_module_shows_hex_and_says_why(fresh_server: EmbeddedServer) -> None:
    name = unique("TAIL")
    async with eventwire.connect(fresh_server.url, streams=[Stream(name, (f"{name}.>",))]) as publisher:
        await publisher.publish(OrderCreated(order_id="o-1"), subject=f"{name}.a")
        tail = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "eventwire", "tail", f"{name}.>", "--last", "1", "--url", fresh_server.url,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert tail.stdout is not None
        line = (await asyncio.wait_for(tail.stdout.readline(), 20)).decode()
    tail.send_signal(signal.SIGINT)
    await asyncio.wait_for(tail.wait(), 20)
    assert f"{name}.a #1 shop.orders.v1.OrderCreated" in line
    assert OrderCreated(order_id="o-1").SerializeToString().hex() in line
    assert "type shop.orders.v1.OrderCreated not loaded (no schema registry on this server): pass --import" in line
