"""`eventwire ui` in a real browser: Debian's Chromium, headless, driven by Playwright, against the demo's streams.

Each page is written as a screenshot to EVENTWIRE_SCREENSHOTS (default: a temporary folder, printed);
docs/console.md shows the ones of a run (``EVENTWIRE_SCREENSHOTS=docs/console``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import nats.js.errors
import pytest
from playwright.async_api import Page, async_playwright

from eventwire import App, ConnectOptions, Publisher, Reject
from eventwire.demo._fulfilment import ORDERS
from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import LineItem, OrderCreated
from eventwire.server import EmbeddedServer
from eventwire.transport import JetStreamTransport

from .conftest import eventually

ROOT = Path(__file__).parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOP = [
    f"eventwire.demo.shop.{service}:app"
    for service in ("orders", "inventory", "payments", "fulfilment", "notifications")
]
FULFILMENT_DURABLE = "fulfilment-saga-fulfilment-order_created"
# Headless as root in a closed network: no sandbox, and none of Chromium's calls home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip

pytestmark = pytest.mark.timeout(180)


@dataclass
class Running:
    process: subprocess.Popen[str]
    link: str
    log: Path

    @property
    def base(self) -> str:
        return self.link.split("/?")[0]

    @property
    def token(self) -> str:
        return self.link.split("token=")[1]


def start_console(url: str, folder: Path, *extra: str) -> Running:
    log = folder / f"console-{len(list(folder.glob('console-*.log')))}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "eventwire", "ui", *SHOP, "--url", url, "--port", "0", "--sample-interval", "0.5",
             *extra],
            cwd=ROOT, env={**os.environ, "SHOP_DATA": str(folder / "shop")}, stdout=sink, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
    for _ in range(300):
        found = re.search(r"eventwire console on (\S+)", log.read_text())
        if found:
            return Running(process, found.group(1), log)
        if process.poll() is not None:
            raise AssertionError(log.read_text())
        time.sleep(0.1)
    raise AssertionError(f"the console did not start: {log.read_text()}")


def stop_console(running: Running) -> str:
    running.process.terminate()
    running.process.wait(30)
    return running.log.read_text()


@pytest.fixture(scope="module")
def shop_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A server holding the demo's streams after 20 orders, and one dead letter of a service 'audit'."""
    folder = tmp_path_factory.mktemp("console")
    with EmbeddedServer(store_dir=folder / "js") as server:
        demo = subprocess.run(
            [sys.executable, "-m", "eventwire", "demo", "--orders", "20", "--url", server.url, "--data", str(folder)],
            cwd=ROOT, capture_output=True, text=True, timeout=150, env={**os.environ, "EVENTWIRE_URL": ""},
            check=False,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stdout + demo.stderr
        asyncio.run(_dead_letter_of_audit(server.url))
        yield server


async def _dead_letter_of_audit(url: str) -> None:
    audit = App("audit", streams=[ORDERS])

    @audit.handler(OrderCreated, stream=ORDERS, subject="orders.created")
    async def check(order: OrderCreated) -> None:
        if order.order_id in ("o-dead", "o-junk"):
            raise Reject("customer c-9 is on the blocked list")

    await audit.start(url)
    try:
        for order_id in ("o-dead", "o-junk"):
            order = OrderCreated(order_id=order_id, customer_id="c-9", items=[LineItem(sku="sku-pear", quantity=1)])
            await audit.publisher.publish(order, subject="orders.created", key=order_id)
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()

            async def dead_lettered() -> bool:
                try:
                    return (await js.stream_info("DLQ-audit")).state.messages == 2
                except nats.js.errors.NotFoundError:
                    return False

            await eventually(dead_lettered, timeout=30)
        finally:
            await nc.close()
    finally:
        await audit.stop()


@pytest.fixture(scope="module")
def console(shop_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_console(shop_server.url, tmp_path_factory.mktemp("ui"))
    yield running
    output = stop_console(running)
    assert output.count(running.token) == 1, output  # printed once, in the link; never logged


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("EVENTWIRE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots in {folder}")
    return folder


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is required in CI ({CHROMIUM}): .ci/run installs Debian's chromium")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt install chromium)")
    return CHROMIUM


@pytest.fixture
async def page(console: Running, chromium: str) -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            opened = await browser.new_page(viewport={"width": 1500, "height": 1000})
            await opened.goto(console.link)  # sets the token's cookie and drops it from the address
            await opened.wait_for_selector("body[data-loaded='topology']")
            yield opened
        finally:
            await browser.close()


async def _go(page: Page, base: str, where: str) -> None:
    await page.evaluate("delete document.body.dataset.loaded")  # a change of the hash only: the same document
    await page.goto(f"{base}/#/{where}")
    await page.wait_for_selector(f"body[data-loaded='{where.split('?', maxsplit=1)[0]}']")


async def test_the_topology_shows_the_demos_services(page: Page, console: Running, screenshots: Path) -> None:
    assert page.url == f"{console.base}/"
    graph = await page.text_content("#topology-graph svg") or ""
    shown = await page.inner_text("main")
    await page.screenshot(path=str(screenshots / "topology.png"), full_page=True)
    for service in ("orders", "inventory", "payments", "fulfilment", "notifications"):
        assert service in graph
    for stream in ("ORDERS", "INVENTORY", "PAYMENTS", "FULFILMENT"):
        assert stream in graph
    assert f"{FULFILMENT_DURABLE}: " in graph and "pending" in graph
    assert "audit-check (not listed)" in graph  # a durable on the server that no listed App declares
    assert "Topology: 5 services" in shown


async def _publish_orders(url: str, count: int) -> None:
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(url))
    try:
        publisher = Publisher(transport, source="/tests")
        for number in range(count):
            order = OrderCreated(order_id=f"o-more-{number}", items=[LineItem(sku="sku-apple", quantity=1)])
            await publisher.publish(order, subject="orders.created", key=f"o-more-{number}")
    finally:
        await transport.close()


async def test_a_consumers_chart_follows_more_events(
    page: Page, console: Running, shop_server: EmbeddedServer, screenshots: Path
) -> None:
    await _go(page, console.base, "streams")
    chart = f"section[data-stream='ORDERS'] tr[data-consumer='{FULFILMENT_DURABLE}'] svg.chart"
    before = int(await page.get_attribute(chart, "data-pending") or "-1")
    points = int(await page.get_attribute(chart, "data-points") or "0")

    await _publish_orders(shop_server.url, 5)
    await page.wait_for_function(
        "([selector, wanted]) => document.querySelector(selector)?.getAttribute('data-pending') === wanted",
        arg=[chart, str(before + 5)],
        timeout=20_000,
    )
    after_points = int(await page.get_attribute(chart, "data-points") or "0")
    line = await page.get_attribute(f"{chart} polyline.pending", "points")
    await page.screenshot(path=str(screenshots / "streams.png"), full_page=True)
    assert before >= 0
    assert after_points > points
    heights = [float(point.split(",")[1]) for point in (line or "").split()]
    assert heights[-1] < heights[0]  # the line rose (SVG's y grows downwards)


async def test_an_events_page_shows_decoded_payloads(page: Page, console: Running, screenshots: Path) -> None:
    await _go(page, console.base, "events?stream=ORDERS&from_sequence=1&type=shop.orders.v1.OrderCreated")
    first = await page.inner_text("#events tr[data-sequence='1']")
    await page.screenshot(path=str(screenshots / "events.png"), full_page=True)
    await _go(page, console.base, "events?stream=ORDERS&subject=orders.created&type=shop.orders.v1.OrderCancelled")
    none = await page.inner_text("main")
    assert "shop.orders.v1.OrderCreated" in first
    assert re.search(r'"orderId":"o\w+-00001"', first), first
    assert '"items":[{"sku":"sku-' in first
    assert "no event matches" in none


async def test_replaying_a_dead_letter_delivers_it_and_removes_it(
    page: Page, console: Running, shop_server: EmbeddedServer, screenshots: Path
) -> None:
    nc = await nats.connect(shop_server.url)
    js = nc.jetstream()
    try:
        pending_before = (await js.consumer_info("ORDERS", FULFILMENT_DURABLE)).num_pending
        await _go(page, console.base, "dead-letters?service=audit")
        row = "tr[data-letter='DLQ-audit:1']"
        shown = await page.inner_text(row)
        await page.screenshot(path=str(screenshots / "dead-letters.png"), full_page=True)
        await page.click(f"{row} button.replay")
        await page.wait_for_selector("#recipients")
        recipients = await page.inner_text("#recipients")
        await page.screenshot(path=str(screenshots / "replay-confirmation.png"))
        await page.click("#dialog-confirm")
        await page.wait_for_selector(row, state="detached")
        outcome = await page.inner_text("#outcome")
        last = await js.get_msg("ORDERS", (await js.stream_info("ORDERS")).state.last_seq)
        pending_after = (await js.consumer_info("ORDERS", FULFILMENT_DURABLE)).num_pending
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.get_msg("DLQ-audit", 1)
    finally:
        await nc.close()
    assert "rejected" in shown and "customer c-9 is on the blocked list" in shown and '"orderId":"o-dead"' in shown
    assert set(recipients.split()) >= {"audit-check", FULFILMENT_DURABLE}
    assert outcome.startswith("Replayed DLQ-audit:1 as ORDERS #")
    assert (last.headers or {}).get("Eventwire-Replayed-From") == "DLQ-audit:1"
    assert OrderCreated.FromString(last.data or b"").order_id == "o-dead"
    assert pending_after == pending_before + 1


async def test_purging_a_dead_letter_deletes_it_and_delivers_nothing(
    page: Page, console: Running, shop_server: EmbeddedServer, screenshots: Path
) -> None:
    nc = await nats.connect(shop_server.url)
    js = nc.jetstream()
    try:
        last_before = (await js.stream_info("ORDERS")).state.last_seq
        await _go(page, console.base, "dead-letters?service=audit")
        row = "tr[data-letter='DLQ-audit:2']"
        await page.click(f"{row} button.purge")
        title = await page.inner_text("#dialog-title")
        await page.click("#dialog-cancel")  # first thoughts: nothing happens
        still_there = await page.is_visible(row)
        await page.click(f"{row} button.purge")
        await page.click("#dialog-confirm")
        await page.wait_for_selector(row, state="detached")
        outcome = await page.inner_text("#outcome")
        last_after = (await js.stream_info("ORDERS")).state.last_seq
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.get_msg("DLQ-audit", 2)
    finally:
        await nc.close()
    assert title == "Purge DLQ-audit:2?" and still_there
    assert outcome == "Purged DLQ-audit:2."
    assert last_after == last_before


async def test_elsewhere_than_loopback_nothing_is_served_without_the_token(
    shop_server: EmbeddedServer, tmp_path: Path
) -> None:
    running = await asyncio.to_thread(start_console, shop_server.url, tmp_path, "--host", "0.0.0.0")
    port = running.base.rsplit(":", 1)[1]
    base = f"http://127.0.0.1:{port}"
    letter = f"{base}/api/dead-letters/DLQ-audit/99/replay"
    try:
        async with httpx.AsyncClient() as http:
            page = await http.get(f"{base}/")
            read = await http.get(f"{base}/api/topology")
            wrong = await http.get(f"{base}/api/topology", headers={"Authorization": "Bearer not-it"})
            bearer = await http.get(f"{base}/api/topology", headers={"Authorization": f"Bearer {running.token}"})
            linked = await http.get(f"{base}/?token={running.token}")
        async with httpx.AsyncClient(cookies={"eventwire_console": linked.cookies["eventwire_console"]}) as browser:
            forged = await browser.post(letter)  # what a cross-site form could send with the cookie
            evil = {"X-Eventwire-Console": "1", "Origin": "https://evil.example"}
            foreign = await browser.post(letter, headers=evil)
            own = await browser.post(letter, headers={"X-Eventwire-Console": "1", "Origin": base})
    finally:
        output = await asyncio.to_thread(stop_console, running)
    assert (page.status_code, read.status_code, wrong.status_code) == (401, 401, 401)
    assert "token" in read.json()["error"] and running.token not in read.text
    assert bearer.status_code == 200 and "orders" in bearer.json()["services"]
    assert linked.status_code == 303 and linked.headers["location"] == "/"
    assert (
        "httponly" in linked.headers["set-cookie"].lower() and "samesite=strict" in linked.headers["set-cookie"].lower()
    )
    assert (forged.status_code, foreign.status_code) == (403, 403)
    assert own.status_code == 404  # through every check; that dead letter does not exist
    assert output.count(running.token) == 1, output


async def test_on_loopback_reads_are_open_and_changes_need_the_token(console: Running) -> None:
    letter = f"{console.base}/api/dead-letters/DLQ-audit/99/replay"
    async with httpx.AsyncClient() as http:
        read = await http.get(f"{console.base}/api/streams")
        change = await http.post(letter, headers={"X-Eventwire-Console": "1"})
        rebound = await http.get(
            f"{console.base}/api/streams", headers={"Host": f"evil.example:{console.base.rsplit(':', 1)[1]}"}
        )
        session = await http.get(f"{console.base}/api/session")
        events = f"{console.base}/api/streams/ORDERS/events"
        since_ever = await http.get(events, params={"from_time": "2000-01-01T00:00:00Z", "limit": 3})
        from_now = await http.get(events, params={"from_time": "2100-01-01T00:00:00Z"})
    assert [e["sequence"] for e in since_ever.json()["events"]] == [1, 2, 3]
    assert from_now.json()["events"] == []
    assert read.status_code == 200 and any(s["name"] == "ORDERS" for s in read.json()["streams"])
    assert change.status_code == 401
    assert rebound.status_code == 403  # a page whose DNS name was rebound to 127.0.0.1
    assert session.json() == {"can_change": False}
