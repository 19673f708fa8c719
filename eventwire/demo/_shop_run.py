"""``eventwire demo``: the shop's five services as processes, orders through its HTTP API, and the checks.

Each service runs with ``eventwire run`` and its own SQLite database; the demo places orders with
``POST /orders``, waits until every one has settled, and then reads every service's database to check
what the shop promises: every order confirmed or cancelled, stock conserved, each confirmed order
charged once, every cancelled order's stock back and its charge (if any) refunded, one notification
per order, no saga unfinished and no outbox row unsent. With ``chaos`` a random service is killed
(SIGKILL) every few seconds and started again; the same checks must hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from .._connect_options import redact_url
from ..outbox import outbox_table
from ..saga import saga_table
from ..server import EmbeddedServer
from .shop import SERVICES
from .shop._prepare import prepare
from .shop._settings import INITIAL_STOCK, database_engine
from .shop.inventory import reservations_table, stock_table
from .shop.notifications import notifications_table
from .shop.orders import PRICES_CENTS, orders_table
from .shop.payments import payments_table


@dataclass
class ShopSummary:
    server: str
    orders: int
    confirmed: int = 0
    cancelled: Counter[str] = field(default_factory=Counter)
    refunded: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (invariant, held, figures)

    @property
    def held(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)


class _Service:
    def __init__(self, name: str, url: str, data: Path, environment: dict[str, str]) -> None:
        self.name = name
        self._command = [sys.executable, "-m", "eventwire", "run", f"eventwire.demo.shop.{name}:app",
                         "--log-level", "INFO", "--log-format", "json"]  # fmt: skip
        # The URL through the environment: user info in it stays out of the process list.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SHOP_DB_")}  # the demo's own databases
        self._environment = {**inherited, **environment, "SHOP_DATA": str(data), "EVENTWIRE_URL": url}
        self._log = data / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(self._command, env=self._environment, stdout=log, stderr=log)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def failed_early(self) -> str | None:
        """The last lines of the log of a process that exited by itself."""
        if self.process is None or self.process.poll() is None:
            return None
        lines = self._log.read_text(errors="replace").strip().splitlines()
        return f"{self.name} exited with {self.process.returncode}: {lines[-1] if lines else '(no output)'}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def run_shop_demo(
    url: str | None,
    orders: int,
    *,
    data: Path,
    chaos: bool = False,
    timeout: float = 180.0,
    on_progress: Callable[[int, int], None] = lambda placed, settled: None,
    environment: dict[str, str] | None = None,
    database: str | None = None,
) -> ShopSummary:
    """Run the shop on ``url`` (None: an embedded server) with its databases in ``data``; place ``orders``.

    ``environment`` is given to the services' processes (the connection's credentials). ``database``, a
    PostgreSQL URL (``postgresql+asyncpg://``), holds every service's tables instead, each service in a
    schema of its own (``shop_<service>``), emptied first.
    """
    server = None
    if url is None:
        server = await EmbeddedServer(store_dir=data / "jetstream").start_async()
        url = server.url
    summary = ShopSummary(server="embedded" if server is not None else url, orders=orders)
    port = _free_port()
    given = {**(environment or {}), "SHOP_HTTP_PORT": str(port)}
    if database is not None:
        await _empty_schemas(database)
        for name in SERVICES:
            given |= {f"SHOP_DB_{name.upper()}": database, f"SHOP_SCHEMA_{name.upper()}": f"shop_{name}"}
    services = {name: _Service(name, url, data, given) for name in SERVICES}
    engines = {
        name: database_engine(f"sqlite+aiosqlite:///{data / name}.db")
        if database is None
        else database_engine(database, f"shop_{name}")
        for name in SERVICES
    }
    try:
        for name, engine in engines.items():
            await prepare(name, engine)
        for service in services.values():
            service.start()
        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as http:
            await _until_up(http, services)
            chaos_task = asyncio.create_task(_chaos(services, summary)) if chaos else None
            try:
                run = f"o{secrets.token_hex(3)}"
                placed = await _place_all(http, run, orders, on_progress)
                await _until_settled(http, engines, orders, placed, on_progress, deadline=time.monotonic() + timeout)
            finally:
                if chaos_task is not None:
                    chaos_task.cancel()
                    await asyncio.gather(chaos_task, return_exceptions=True)
        summary.seconds = time.perf_counter() - started
        await _check(engines, summary)
    finally:
        for service in services.values():
            service.stop()
        for engine in engines.values():
            await engine.dispose()
        if server is not None:
            await asyncio.to_thread(server.stop)
    return summary


async def _empty_schemas(database: str) -> None:
    engine = database_engine(database)
    try:
        async with engine.begin() as conn:
            for name in SERVICES:
                await conn.execute(text(f"DROP SCHEMA IF EXISTS shop_{name} CASCADE"))
                await conn.execute(text(f"CREATE SCHEMA shop_{name}"))
    except (OSError, SQLAlchemyError) as exc:
        raise RuntimeError(f"cannot prepare the shop's schemas in {redact_url(database)}: {exc}") from None
    finally:
        await engine.dispose()


async def _until_up(http: httpx.AsyncClient, services: dict[str, _Service]) -> None:
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        for service in services.values():
            failure = service.failed_early()
            if failure is not None:
                raise RuntimeError(failure)
        with contextlib.suppress(httpx.HTTPError):
            if (await http.get("/orders")).status_code == 200:
                return
        await asyncio.sleep(0.2)
    raise RuntimeError("the orders service's HTTP API did not come up within 60 s")


async def _place_all(
    http: httpx.AsyncClient, run: str, orders: int, on_progress: Callable[[int, int], None]
) -> dict[str, list[tuple[str, int]]]:
    """POST every order (retrying while the orders service is down: the order id makes a retry harmless)."""
    placed: dict[str, list[tuple[str, int]]] = {}
    numbers = iter(range(1, orders + 1))
    skus = sorted(PRICES_CENTS)

    async def worker() -> None:
        for number in numbers:
            choose = random.Random(number)
            lines = [(sku, choose.randint(1, 3)) for sku in choose.sample(skus, choose.randint(1, 2))]
            order_id = f"{run}-{number:05d}"
            body = {"order_id": order_id, "customer_id": f"c-{number % 97}",
                    "items": [{"sku": sku, "quantity": quantity} for sku, quantity in lines]}  # fmt: skip
            while True:
                try:
                    response = await http.post("/orders", json=body)
                except httpx.HTTPError:
                    await asyncio.sleep(0.2)
                    continue
                if response.status_code in (200, 201):
                    break
                raise RuntimeError(f"POST /orders answered {response.status_code}: {response.text}")
            placed[order_id] = lines
            on_progress(len(placed), -1)

    await asyncio.gather(*(worker() for _ in range(16)))
    return placed


async def _until_settled(
    http: httpx.AsyncClient,
    engines: dict[str, Any],
    orders: int,
    placed: dict[str, list[tuple[str, int]]],
    on_progress: Callable[[int, int], None],
    *,
    deadline: float,
) -> None:
    """Until no order is pending and nothing more is on its way (see _quiet), or the deadline."""
    while time.monotonic() < deadline:
        try:
            counts = (await http.get("/orders")).json()
        except (httpx.HTTPError, ValueError):
            await asyncio.sleep(0.5)
            continue
        settled = counts.get("confirmed", 0) + counts.get("cancelled", 0)
        on_progress(len(placed), settled)
        if settled >= orders and not counts.get("pending") and await _quiet(engines, orders):
            return
        await asyncio.sleep(0.3)


async def _quiet(engines: dict[str, Any], orders: int) -> bool:
    """Every compensation done, every customer told, every outbox row sent: nothing more is on its way."""
    if await _owed_compensations(engines):
        return False
    told = (await _rows(engines["notifications"], select(func.count()).select_from(notifications_table)))[0][0]
    return told >= orders and await _unsent(engines) == 0


async def _unsent(engines: dict[str, Any]) -> int:
    query = select(func.count()).select_from(outbox_table).where(outbox_table.c.sent_at.is_(None))
    return sum([(await _rows(engine, query))[0][0] for engine in engines.values()])


async def _owed_compensations(engines: dict[str, Any]) -> int:
    """Cancelled orders whose stock is still held or whose charge still stands: their requests are on the way."""
    async with engines["orders"].connect() as conn:
        query = select(orders_table.c.order_id).where(orders_table.c.status == "cancelled")
        cancelled = set((await conn.execute(query)).scalars())
    async with engines["payments"].connect() as conn:
        query = select(payments_table.c.order_id).where(payments_table.c.status == "captured")
        charged = set((await conn.execute(query)).scalars())
    async with engines["inventory"].connect() as conn:
        query = select(reservations_table.c.order_id).where(reservations_table.c.status == "reserved")
        held = set((await conn.execute(query)).scalars())
    return len(cancelled & (charged | held))


async def _chaos(services: dict[str, _Service], summary: ShopSummary) -> None:
    """Every 2-4 s, SIGKILL a random service and start it again half a second later."""
    names = sorted(services)
    while True:
        await asyncio.sleep(random.uniform(2.0, 4.0))
        victim = services[random.choice(names)]
        victim.kill()
        summary.kills[victim.name] += 1
        await asyncio.sleep(0.5)
        victim.start()


async def _rows(engine: Any, query: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def _check(engines: dict[str, Any], summary: ShopSummary) -> None:
    """Read every service's database and record each invariant with its figures."""
    check = summary.checks
    orders = {r.order_id: r for r in await _rows(engines["orders"], select(orders_table))}
    status = Counter(r.status for r in orders.values())
    confirmed = {i for i, r in orders.items() if r.status == "confirmed"}
    cancelled = {i for i, r in orders.items() if r.status == "cancelled"}
    summary.confirmed = len(confirmed)
    summary.cancelled = Counter(orders[i].reason.split(":")[0] for i in cancelled)
    check.append(
        ("orders accepted = confirmed + cancelled", len(orders) == summary.orders == len(confirmed) + len(cancelled),
         f"{len(orders)} accepted, {len(confirmed)} confirmed, {len(cancelled)} cancelled, {status['pending']} pending")
    )  # fmt: skip

    confirmed_quantity: Counter[str] = Counter()
    for order_id in confirmed:
        for item in json.loads(orders[order_id].items):
            confirmed_quantity[item["sku"]] += item["quantity"]
    stock = dict(await _rows(engines["inventory"], select(stock_table.c.sku, stock_table.c.available)))
    conserved = all(INITIAL_STOCK[sku] - confirmed_quantity[sku] == stock.get(sku) for sku in INITIAL_STOCK)
    figures = ", ".join(
        f"{sku} {INITIAL_STOCK[sku]} - {confirmed_quantity[sku]} = {stock.get(sku)}" for sku in sorted(INITIAL_STOCK)
    )
    check.append(("stock conserved: initial - confirmed = final", conserved, figures))

    reservations = dict(
        await _rows(engines["inventory"], select(reservations_table.c.order_id, reservations_table.c.status))
    )
    held_for_cancelled = [i for i in cancelled if reservations.get(i) == "reserved"]
    not_held = [i for i in confirmed if reservations.get(i) != "reserved"]
    check.append(
        ("every cancelled order's stock released", not held_for_cancelled and not not_held,
         f"{sum(1 for i in cancelled if reservations.get(i) == 'released')} released, "
         f"{len(held_for_cancelled)} still held, {len(not_held)} confirmed without stock")
    )  # fmt: skip

    payments = {r.order_id: r for r in await _rows(engines["payments"], select(payments_table))}
    charged_once = all(payments.get(i) is not None and payments[i].status == "captured"
                       and payments[i].payment_id == orders[i].payment_id for i in confirmed)  # fmt: skip
    summary.refunded = sum(1 for i in cancelled if payments.get(i) is not None and payments[i].status == "refunded")
    still_charged = [i for i in cancelled if payments.get(i) is not None and payments[i].status == "captured"]
    check.append(
        ("each confirmed order captured exactly once, no cancelled one charged", charged_once and not still_charged,
         f"{len(confirmed)} captured, {summary.refunded} refunded after a late capture, {len(still_charged)} owed")
    )  # fmt: skip

    told = dict(
        await _rows(engines["notifications"], select(notifications_table.c.order_id, notifications_table.c.kind))
    )
    check.append(
        ("one notification per order, saying how it ended", told == {i: r.status for i, r in orders.items()},
         f"{len(told)} sent for {len(orders)} orders")
    )  # fmt: skip

    unfinished = (
        await _rows(
            engines["fulfilment"],
            select(func.count()).select_from(saga_table).where(saga_table.c.finished_at.is_(None)),
        )
    )[0][0]
    unsent = await _unsent(engines)
    check.append(("nothing left pending", unfinished == 0 and unsent == 0 and not status["pending"],
                  f"{unfinished} sagas unfinished, {unsent} outbox rows unsent"))  # fmt: skip
