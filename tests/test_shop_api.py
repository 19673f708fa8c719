"""The orders service's HTTP API: create, read, validation errors naming the field, and the order's state
following the saga's outcome."""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from eventwire import App
from eventwire.demo._fulfilment import FULFILMENT
from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import OrderConfirmed
from eventwire.demo.shop import SERVICES
from eventwire.demo.shop._http import HttpApi
from eventwire.demo.shop._settings import INITIAL_STOCK, create_tables, open_database
from eventwire.demo.shop.orders import metadata, orders_service
from eventwire.outbox import outbox_table
from eventwire.testing import running
from eventwire.transport.memory import MemoryBroker, MemoryTransport


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[httpx.AsyncClient, App, object]]:
    monkeypatch.setenv("SHOP_DATA", str(tmp_path))
    engine, sessions = open_database("orders")
    await create_tables(engine, metadata)
    broker = MemoryBroker()
    service = orders_service(sessions, port=0)
    outcomes = App("fulfilment-stub", streams=[FULFILMENT])
    async with running(service, MemoryTransport(broker)), running(outcomes, MemoryTransport(broker)):
        http_api = next(r for r in service._relays if isinstance(r, HttpApi))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_api.port}") as client:
            yield client, outcomes, engine
    await engine.dispose()


async def test_an_order_is_created_read_and_follows_its_outcome(api: tuple[httpx.AsyncClient, App, object]) -> None:
    client, outcomes, engine = api
    body = {"order_id": "o-1", "customer_id": "c-1", "items": [{"sku": "sku-pear", "quantity": 2}]}
    created = await client.post("/orders", json=body)
    again = await client.post("/orders", json=body)  # a retry: the same order, nothing new
    assert (created.status_code, created.json()) == (201, {"order_id": "o-1", "status": "pending", "total_cents": 300})
    assert again.status_code == 200 and again.json()["status"] == "pending"
    async with engine.connect() as conn:  # type: ignore[attr-defined]
        rows = (await conn.execute(select(outbox_table.c.id, outbox_table.c.subject))).all()
    assert [tuple(row) for row in rows] == [("ord-o-1", "orders.created")]  # one event, with the order's commit

    confirmed = OrderConfirmed(order_id="o-1", payment_id="pay-o-1")
    await outcomes.publisher.publish(confirmed, subject="fulfilment.order.confirmed", key="o-1")

    for _ in range(100):  # the outcome arrives through the broker: the order's state follows
        if (await client.get("/orders/o-1")).json()["status"] == "confirmed":
            break
        await asyncio.sleep(0.05)
    order = (await client.get("/orders/o-1")).json()
    assert order["status"] == "confirmed"
    assert order["payment_id"] == "pay-o-1" and order["items"] == [{"sku": "sku-pear", "quantity": 2}]
    assert (await client.get("/orders")).json() == {"confirmed": 1}
    missing = await client.get("/orders/nope")
    assert (missing.status_code, missing.json()) == (404, {"error": "no order nope"})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", "body"),
        ({"customer_id": "c-1"}, "items"),
        ({"items": [{"sku": "sku-pear", "quantity": 1}]}, "customer_id"),
        ({"customer_id": "c-1", "items": [{"sku": "sku-kiwi", "quantity": 1}]}, "items[0].sku"),
        ({"customer_id": "c-1", "items": [{"sku": "sku-pear", "quantity": 1}, {"sku": "sku-pear", "quantity": 0}]},
         "items[1].quantity"),
        ({"order_id": "o 1", "customer_id": "c-1", "items": [{"sku": "sku-pear", "quantity": 1}]}, "order_id"),
    ],
)  # fmt: skip
async def test_an_invalid_order_is_422_naming_the_field(
    api: tuple[httpx.AsyncClient, App, object], body: object, field: str
) -> None:
    client, _, engine = api
    if isinstance(body, str):
        response = await client.post("/orders", content=body, headers={"content-type": "application/json"})
    else:
        response = await client.post("/orders", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == field and response.json()["error"].startswith(f"{field}: ")
    async with engine.connect() as conn:  # type: ignore[attr-defined]
        assert (await conn.execute(select(outbox_table.c.id))).all() == []


def test_shop_init_prepares_each_services_database(tmp_path: Path) -> None:
    run = functools.partial(
        subprocess.run, capture_output=True, text=True, timeout=60, env={**os.environ, "SHOP_DATA": str(tmp_path)}
    )
    prepared = run([sys.executable, "-m", "eventwire.demo.shop", "init"])
    again = run([sys.executable, "-m", "eventwire.demo.shop", "init", "inventory"])
    unknown = run([sys.executable, "-m", "eventwire.demo.shop", "init", "billing"])

    assert prepared.returncode == 0, prepared.stderr
    assert [line.split(":")[0] for line in prepared.stdout.splitlines()] == list(SERVICES)
    with sqlite3.connect(tmp_path / "inventory.db") as db:
        stock = dict(db.execute("SELECT sku, available FROM shop_stock").fetchall())
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert stock == INITIAL_STOCK  # stocked once: the second init left it as it was
    assert {"eventwire_outbox", "eventwire_inbox", "shop_stock", "shop_reservations"} <= tables
    assert again.returncode == 0, again.stderr
    assert (unknown.returncode, unknown.stderr.splitlines()[0].startswith("error: no service 'billing'")) == (2, True)
