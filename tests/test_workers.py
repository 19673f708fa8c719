"""``eventwire run --workers N``: worker processes sharing an App's durables, under a supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from eventwire import ConnectOptions, Outgoing, Publisher, Stream
from eventwire.server import EmbeddedServer
from eventwire.transport import JetStreamTransport

from .conftest import eventually, recorded, unique
from .events import OrderCreated

ROOT = Path(__file__).parent.parent
EVENTS = 600


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


@pytest.mark.timeout(180)
async def test_a_killed_worker_is_restarted_nothing_is_lost_and_sigterm_ends_all_cleanly(
    jetstream_server: EmbeddedServer, tmp_path: Path
) -> None:
    name = unique("WORK")
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_server.url))
    await transport.ensure_stream(Stream(name, (f"{name}.>",)))
    await Publisher(transport, source="/tests").publish_many(
        [Outgoing(OrderCreated(order_id=f"o-{i:04d}"), subject=f"{name}.created") for i in range(EVENTS)]
    )
    record = tmp_path / "record.txt"
    env = {**os.environ, "TEST_STREAM": name, "TEST_RECORD": str(record), "TEST_HANDLER_SECONDS": "0.02"}
    command = [sys.executable, "-m", "eventwire", "run", "tests.services.recorder:app", "--workers", "2"]
    log = tmp_path / "supervisor.log"
    with log.open("wb") as sink:
        supervisor = await asyncio.create_subprocess_exec(
            *command, "--url", jetstream_server.url, "--log-level", "INFO", cwd=ROOT, env=env, stderr=sink
        )
    try:
        await eventually(lambda: len({pid for pid, *_ in recorded(record)}) == 2, timeout=60)
        first_workers = _children(supervisor.pid)
        victim = next(iter(first_workers))
        os.kill(victim, signal.SIGKILL)
        await eventually(lambda: len(_children(supervisor.pid) - first_workers) == 1, timeout=30)
        replacement = (_children(supervisor.pid) - first_workers).pop()
        everything = {f"o-{i:04d}" for i in range(EVENTS)}
        await eventually(lambda: {order for _, order, *_ in recorded(record)} == everything, timeout=90)
        # Every event acked: what the killed worker held unacked was redelivered and handled.
        await eventually(lambda: _acked_all(transport, name), timeout=30)
        workers = _children(supervisor.pid)
        supervisor.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(supervisor.wait(), 60)
    finally:
        if supervisor.returncode is None:
            supervisor.kill()
        await transport.close()
    text = log.read_text()
    assert code == 0, text
    assert "was killed by SIGKILL; restarting it" in text
    assert any(pid == replacement for pid, *_ in recorded(record))  # the new worker took part
    assert not any(_alive(pid) for pid in workers)
    assert "all 2 workers shut down cleanly" in text


async def _acked_all(transport: JetStreamTransport, stream: str) -> bool:
    info = await transport.nc.jetstream().consumer_info(stream, "recorder")
    return bool(info.ack_floor.stream_seq == EVENTS and info.num_ack_pending == 0)


def test_a_handler_that_orders_its_events_is_refused_more_than_one_worker() -> None:
    done = subprocess.run(  # noqa: PLW1510 - the exit code is what is tested
        [
            sys.executable,
            "-m",
            "eventwire",
            "run",
            "tests.services.ordered:app",
            "--workers",
            "2",
            "--url",
            "nats://127.0.0.1:1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "handler handle has ordered_by='key'" in lines[0] and "--workers 1" in lines[0]
