"""``eventwire authz``: the permissions it prints are enough for the demo's services, and no more."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventwire import App, ConnectOptions, Outgoing, PermissionDenied, Publication, PublishAck
from eventwire._authz import grant_for
from eventwire.demo import inventory_service, notifications_service, orders_service
from eventwire.demo._services import ORDERS, DemoState
from eventwire.demo.contracts.shop.inventory.v1.inventory_pb2 import StockReserved
from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import LineItem, OrderCreated

from .secured import PASSWORD, secured_server

ROOT = Path(__file__).parent.parent
SERVICES = [
    "eventwire.demo:orders_service()",
    "eventwire.demo:inventory_service()",
    "eventwire.demo:notifications_service()",
]


def test_a_service_may_publish_what_it_declares_and_work_its_own_streams_and_durables() -> None:
    orders = grant_for(orders_service())
    assert orders.publish == (
        "orders.created",
        "$JS.API.STREAM.INFO.ORDERS",
        "$JS.API.STREAM.CREATE.ORDERS",
        "$JS.API.STREAM.UPDATE.ORDERS",
        "$JS.API.STREAM.INFO.KV_eventwire_schemas",
        "$JS.API.STREAM.CREATE.KV_eventwire_schemas",
        "$KV.eventwire_schemas.types.shop.orders.v1.OrderCreated",
        "$KV.eventwire_schemas.schemas.shop.orders.v1.OrderCreated.*",
        "$JS.API.DIRECT.GET.KV_eventwire_schemas.$KV.eventwire_schemas.types.shop.orders.v1.OrderCreated",
        "$JS.API.DIRECT.GET.KV_eventwire_schemas.$KV.eventwire_schemas.schemas.shop.orders.v1.OrderCreated.*",
    )
    assert (orders.inbox_prefix, orders.subscribe) == ("_INBOX_orders", ("_INBOX_orders.>",))
    inventory = grant_for(inventory_service())
    assert {"inventory.reserved", "inventory.rejected", "dlq.inventory.>"} <= set(inventory.publish)
    assert {
        "$JS.API.CONSUMER.MSG.NEXT.ORDERS.svc-inventory",
        "$JS.ACK.ORDERS.svc-inventory.>",
        "$JS.ACK.*.*.ORDERS.svc-inventory.>",
        "$JS.API.STREAM.INFO.DLQ-inventory",
    } <= set(inventory.publish)
    assert not any(subject.startswith("orders.") for subject in inventory.publish)


@pytest.fixture
def generated() -> str:
    """What ``eventwire authz`` prints for the demo's three services."""
    return subprocess.run(
        [sys.executable, "-m", "eventwire", "authz", *SERVICES], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.timeout(120)
async def test_the_demo_runs_on_the_generated_permissions_and_nothing_more(generated: str, tmp_path: Path) -> None:
    users = ", ".join(
        f'{{ user: "{name}", password: "{PASSWORD}", permissions: ${name.upper()}_PERMISSIONS }}'
        for name in ("orders", "inventory", "notifications")
    )
    server = secured_server(tmp_path, generated + f"authorization {{ users = [ {users} ] }}\n")
    try:

        def options(service: str) -> ConnectOptions:
            return ConnectOptions.from_url(
                server.url, user=service, password=PASSWORD, inbox_prefix=f"_INBOX_{service}"
            )

        state = DemoState(run_id="authz", orders=200)
        apps = [orders_service(), inventory_service(state=state), notifications_service(state=state)]
        for app in apps:
            await app.start(connect=options(app.name))
        try:
            orders = [
                Outgoing(
                    OrderCreated(order_id=f"authz-{n:06d}", items=[LineItem(sku="sku-apple", quantity=1)]),
                    subject="orders.created",
                    key=f"authz-{n:06d}",
                )
                for n in range(200)
            ]
            results = await apps[0].publisher.publish_many(orders)
            await asyncio.wait_for(state.all_notified.wait(), 60)
            started = time.monotonic()
            with pytest.raises(PermissionDenied) as caught:
                await apps[0].publisher.publish(StockReserved(order_id="forged"), subject="inventory.reserved")
            refused_after = time.monotonic() - started
        finally:
            for app in reversed(apps):
                await app.stop()
    finally:
        server.stop()
    assert all(isinstance(r, PublishAck) for r in results)
    assert len(state.notified) == 200
    assert caught.value.subject == "inventory.reserved" and refused_after < 2.0


async def test_a_service_without_the_registrys_permissions_fails_at_start_naming_them_unless_it_does_not_register(
    tmp_path: Path,
) -> None:
    grant = grant_for(orders_service())
    publish = [s for s in grant.publish if "eventwire_schemas" not in s]  # everything but the registry
    permissions = f'{{ publish: {{ allow: {list(publish)} }}, subscribe: {{ allow: ["_INBOX_orders.>"] }} }}'
    user = f'{{ user: "orders", password: "{PASSWORD}", permissions: {permissions} }}'.replace("'", '"')
    server = secured_server(tmp_path, f"authorization {{ users = [ {user} ] }}\n")
    options = ConnectOptions.from_url(server.url, user="orders", password=PASSWORD, inbox_prefix="_INBOX_orders")
    try:
        with pytest.raises(PermissionDenied) as caught:
            await orders_service().start(connect=options)
        quiet = App("orders", streams=[ORDERS], publishes=[Publication(OrderCreated, "orders.created")],
                    register_schemas=False)  # fmt: skip
        await quiet.start(connect=options)
        await quiet.stop()
    finally:
        server.stop()
    assert caught.value.subject == "$JS.API.STREAM.INFO.KV_eventwire_schemas"
    assert "key-value bucket eventwire_schemas" in str(caught.value)
