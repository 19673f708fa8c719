"""``eventwire publish``: JSON checked against the contract, the full envelope, the ack printed; a handler gets it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

from eventwire import App, ConnectOptions, Delivery, Stream
from eventwire.server import EmbeddedServer
from eventwire.testing import running
from eventwire.transport import JetStreamTransport

from .conftest import unique
from .events import OrderCreated
from .test_cli_first_hour import one_line_error

ROOT = Path(__file__).parent.parent


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventwire", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


async def test_an_event_published_from_the_command_line_reaches_a_handler(
    fresh_server: EmbeddedServer, tmp_path: Path
) -> None:
    name = unique("PUB")
    (tmp_path / "orders_service.py").write_text(
        textwrap.dedent(
            f"""
            from eventwire import App, Publication, Stream
            from tests.events import OrderCreated
            app = App(
                "orders",
                streams=[Stream("{name}", ("{name}.>",))],
                publishes=[Publication(OrderCreated, "{name}.created")],
            )
            """
        )
    )
    app = App("billing")
    received: list[tuple[OrderCreated, str | None, str]] = []

    @app.handler(OrderCreated, stream=Stream(name, (f"{name}.>",)))
    async def handle(order: OrderCreated, delivery: Delivery) -> None:
        received.append((order, delivery.envelope.subject, delivery.envelope.source))

    data = '{"orderId": "o-7", "totalCents": "1250", "items": [{"sku": "sku-pear", "quantity": 2}]}'
    args = ("publish", "shop.orders.v1.OrderCreated", "--data", data, "--import", "orders_service", "--app-dir")
    url = ("--url", fresh_server.url)
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(fresh_server.url))
    async with running(app, transport) as probe:
        stored = await asyncio.to_thread(cli, *args, str(tmp_path), "--key", "o-7", "--msg-id", "cli-7", *url)
        again = await asyncio.to_thread(cli, *args, str(tmp_path), "--msg-id", "cli-7", *url)
        assert stored.returncode == 0, stored.stderr
        await probe.wait_until(lambda: len(received) == 1)
        wrong = await asyncio.to_thread(
            cli, "publish", "shop.orders.v1.OrderCreated", "--data", '{"totalCents": "many"}',
            "--import", "tests.events", "--subject", f"{name}.created", *url,
        )  # fmt: skip
    assert stored.stdout == f"shop.orders.v1.OrderCreated on {name}.created: stored in {name} at sequence 1\n"
    assert again.stdout == (
        f"shop.orders.v1.OrderCreated on {name}.created: a duplicate of {name} sequence 1, not stored again\n"
    )
    ((order, key, source),) = received
    assert (order.order_id, order.total_cents, order.items[0].sku) == ("o-7", 1250, "sku-pear")
    assert (key, source) == ("o-7", "/cli")
    line = one_line_error(wrong)
    assert wrong.returncode == 2
    assert line.startswith("error: --data does not fit shop.orders.v1.OrderCreated: Failed to parse totalCents field")
