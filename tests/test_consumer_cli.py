"""``eventwire consumer pause | resume | reset`` against a running handler on a real server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from nats.aio.client import ServerVersion

from eventwire import App, ConnectOptions, Delivery, Outgoing, Stream
from eventwire.cli._consumer import PAUSE_SINCE, RESET_SINCE, require_version
from eventwire.server import EmbeddedServer
from eventwire.testing import running
from eventwire.transport import JetStreamTransport

from .conftest import eventually, unique
from .events import OrderCreated
from .test_cli_first_hour import one_line_error

ROOT = Path(__file__).parent.parent


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventwire", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


async def test_pause_holds_deliveries_resume_restarts_them_reset_replays_from_a_sequence(
    fresh_server: EmbeddedServer,
) -> None:
    name = unique("CONS")
    url = ("--url", fresh_server.url)
    app = App("billing")
    received: list[tuple[str, int]] = []

    @app.handler(OrderCreated, stream=Stream(name, (f"{name}.>",)), durable="billing")
    async def handle(order: OrderCreated, delivery: Delivery) -> None:
        received.append((order.order_id, delivery.delivery_count))

    def orders(numbers: range) -> list[Outgoing]:
        return [Outgoing(OrderCreated(order_id=f"o-{n}"), subject=f"{name}.created") for n in numbers]

    transport = await JetStreamTransport.connect(ConnectOptions.from_url(fresh_server.url))
    async with running(app, transport):
        await app.publisher.publish_many(orders(range(1, 6)))
        await eventually(lambda: len(received) == 5)
        paused = await asyncio.to_thread(cli, "consumer", "pause", "billing", "--for", "10m", *url)
        await app.publisher.publish_many(orders(range(6, 9)))
        await asyncio.sleep(2.0)  # a pull or two: nothing comes while paused
        while_paused = len(received)
        status = await asyncio.to_thread(cli, "status", *url)
        resumed = await asyncio.to_thread(cli, "consumer", "resume", "billing", *url)
        await eventually(lambda: len(received) == 8, timeout=20)
        reset = await asyncio.to_thread(cli, "consumer", "reset", "billing", "--to-sequence", "3", *url)
        await eventually(lambda: len(received) == 14, timeout=20)
        back = ("consumer", "reset", "billing", "--to-time", "1h", "--stream", name)
        to_time = await asyncio.to_thread(cli, *back, *url)
        await eventually(lambda: len(received) == 22, timeout=20)
    missing = await asyncio.to_thread(cli, "consumer", "resume", "nosuch", *url)

    assert paused.returncode == 0 and paused.stdout.startswith("billing: paused until "), paused.stderr
    assert while_paused == 5
    assert "paused until" in status.stdout and status.returncode == 1  # a warning, not critical
    assert resumed.stdout == "billing: resumed\n"
    assert reset.stdout == f"billing on {name}: reset, delivering again from stream sequence 3\n"
    assert to_time.stdout == f"billing on {name}: reset, delivering again from stream sequence 1\n"
    assert [order for order, _ in received] == [f"o-{n}" for n in (*range(1, 9), *range(3, 9), *range(1, 9))]
    assert one_line_error(missing) == "error: no stream has a durable 'nosuch'"


def test_an_older_server_is_named_instead_of_a_silent_request(capsys: pytest.CaptureFixture[str]) -> None:
    """Only nats-server 2.15 is at hand here: the version check is tested on the version a server reports."""
    older = SimpleNamespace(connected_server_version=ServerVersion("2.10.22"))
    for needed, what in ((PAUSE_SINCE, "pausing a consumer"), (RESET_SINCE, "resetting a consumer")):
        with pytest.raises(typer.Exit) as stopped:
            require_version(older, needed, what)  # type: ignore[arg-type]
        assert stopped.value.exit_code == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: pausing a consumer needs nats-server 2.11.0 or later; this server is 2.10.22",
        "error: resetting a consumer needs nats-server 2.14.0 or later; this server is 2.10.22",
    ]
