"""``eventwire demo``: orders → inventory → notifications on a real JetStream server."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .. import ConnectOptions, Outgoing, PublishAck
from ..server import EmbeddedServer
from ._services import DemoState, inventory_service, notifications_service, orders_service
from .contracts.shop.orders.v1.orders_pb2 import LineItem, OrderCreated

__all__ = ["DemoSummary", "inventory_service", "notifications_service", "orders_service", "run_demo"]

_SKUS = ("sku-apple", "sku-pear", "sku-plum")


@dataclass(frozen=True)
class DemoSummary:
    server: str
    orders: int
    published: int
    duplicates: int
    handled: dict[str, int]
    outcomes: dict[str, int]
    redeliveries: int
    seconds: float
    complete: bool


def _orders(run_id: str, count: int) -> Iterator[Outgoing]:
    now_ms = int(time.time() * 1000)
    for number in range(1, count + 1):
        order_id = f"{run_id}-{number:06d}"
        sku = _SKUS[number % len(_SKUS)]
        order = OrderCreated(
            order_id=order_id,
            customer_id=f"cust-{number % 97}",
            items=[LineItem(sku=sku, quantity=1 + number % 3)],
            total_cents=1_000 + number % 5_000,
            created_at_ms=now_ms,
        )
        yield Outgoing(order, subject="orders.created", key=order_id, msg_id=f"ord-{order_id}")


async def run_demo(connect: ConnectOptions | None = None, orders: int = 1000, *, timeout: float = 120.0) -> DemoSummary:
    """Run the three services until every order has reached notifications (or ``timeout``).

    Without ``connect`` an embedded server with a temporary store is started and
    removed; with it, the streams and durables stay on that server.
    """
    server = None
    if connect is None:
        server = await EmbeddedServer().start_async()
        connect = ConnectOptions.from_url(server.url)
    state = DemoState(run_id=f"demo{secrets.token_hex(3)}", orders=orders)
    apps = [orders_service(), inventory_service(state=state), notifications_service(state=state)]
    try:
        for app in apps:
            await app.start(connect=connect)
        started = time.perf_counter()
        results = await apps[0].publisher.publish_many(_orders(state.run_id, orders))
        errors = [r for r in results if not isinstance(r, PublishAck)]
        if errors:
            raise errors[0]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.all_notified.wait(), timeout)
        elapsed = time.perf_counter() - started
        redeliveries = sum(c.redelivered for app in apps for c in app.consumers)
    finally:
        for app in reversed(apps):
            await app.stop()
        if server is not None:
            await asyncio.to_thread(server.stop)
    acks = [r for r in results if isinstance(r, PublishAck)]
    return DemoSummary(
        server=", ".join(connect.shown_servers) if server is None else "embedded",
        orders=orders,
        published=len(acks),
        duplicates=sum(a.duplicate for a in acks),
        handled={"inventory": state.handled["inventory"], "notifications": state.handled["notifications"]},
        outcomes=dict(state.outcomes),
        redeliveries=redeliveries,
        seconds=elapsed,
        complete=len(state.notified) == orders,
    )
