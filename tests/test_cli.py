from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from eventwire._connect_options import redact_url
from eventwire.cli import cli
from eventwire.server import EmbeddedServer

from .conftest import POSTGRES, postgres_engine

ROOT = Path(__file__).parent.parent


def eventwire(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventwire", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


INVARIANTS = (
    "orders accepted = confirmed",
    "stock conserved",
    "every cancelled order's stock",
    "each confirmed order captured",
    "one notification per order",
    "nothing left pending",
)


def _assert_invariants_held(stdout: str) -> None:
    for invariant in INVARIANTS:
        assert re.search(rf"✓ {re.escape(invariant)}", stdout), (invariant, stdout)
    assert "✗" not in stdout


@pytest.mark.timeout(300)
def test_demo_runs_the_shop_as_processes_and_every_invariant_holds() -> None:
    result = eventwire("demo", "--orders", "300", env={"EVENTWIRE_URL": "", "COLUMNS": "200"}, timeout=280)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "eventwire demo on embedded" in result.stdout
    assert re.search(r"300 placed, \d+ confirmed, \d+ cancelled", result.stdout)
    assert re.search(r"300 accepted, \d+ confirmed, \d+ cancelled, 0 pending", result.stdout)
    _assert_invariants_held(result.stdout)


@pytest.mark.timeout(400)
def test_demo_with_chaos_kills_services_and_every_invariant_still_holds() -> None:
    result = eventwire("demo", "--orders", "300", "--chaos", env={"EVENTWIRE_URL": "", "COLUMNS": "200"}, timeout=380)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    kills = re.search(r"services killed \(SIGKILL\)\s+│\s+(\d+):", result.stdout)
    assert kills is not None and int(kills.group(1)) >= 3, result.stdout
    _assert_invariants_held(result.stdout)


async def test_demo_with_url_leaves_its_streams_on_that_server(fresh_server: EmbeddedServer, tmp_path: Path) -> None:
    result = eventwire("demo", "--orders", "40", "--url", fresh_server.url, "--data", str(tmp_path), timeout=200)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"eventwire demo on {fresh_server.url}" in result.stdout
    nc = await nats.connect(fresh_server.url)
    try:
        js = nc.jetstream()
        assert (await js.stream_info("ORDERS")).state.messages == 40
        assert (await js.consumer_info("FULFILMENT", "notifications-tell_customer")).num_pending == 0
    finally:
        await nc.close()
    databases = {p.name for p in await asyncio.to_thread(lambda: list(tmp_path.glob("*.db")))}
    assert databases >= {f"{s}.db" for s in ("orders", "inventory", "payments")}


async def test_demo_on_postgresql_keeps_each_services_tables_in_its_own_schema(tmp_path: Path) -> None:
    engine = await postgres_engine()
    result = await asyncio.to_thread(
        eventwire, "demo", "--orders", "40", "--database", POSTGRES, "--data", str(tmp_path),
        env={"EVENTWIRE_URL": "", "COLUMNS": "200"}, timeout=200,
    )  # fmt: skip
    try:
        async with engine.connect() as conn:
            placed = (await conn.execute(text("SELECT count(*) FROM shop_orders.shop_orders"))).scalar_one()
            told = (await conn.execute(text("SELECT count(*) FROM shop_notifications.shop_notifications"))).scalar_one()
            sagas = (await conn.execute(text("SELECT count(*) FROM shop_fulfilment.eventwire_saga"))).scalar_one()
    finally:
        await engine.dispose()
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"eventwire demo on embedded, PostgreSQL {redact_url(POSTGRES)}" in result.stdout
    _assert_invariants_held(result.stdout)
    assert (placed, told, sagas) == (40, 40, 40)
    assert not await asyncio.to_thread(lambda: list(tmp_path.glob("*.db")))


def test_demo_refuses_a_database_that_is_not_postgresql() -> None:
    result = eventwire("demo", "--database", "mysql://root:hunter2@db/shop", env={"EVENTWIRE_URL": ""}, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: --database mysql://***@db/shop: give a PostgreSQL URL (postgresql+asyncpg://user@host/db)"
    ]
    assert "hunter2" not in result.stdout + result.stderr


def test_run_refuses_a_target_that_is_not_an_app() -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(cli, ["run", "eventwire.server:EmbeddedServer"])
    assert result.exit_code != 0
    assert "not an eventwire App" in result.output
    result = runner.invoke(cli, ["run", "no_colon"])
    assert result.exit_code != 0
    assert "module:app" in result.output


def test_server_command_runs_until_sigterm(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "eventwire", "server", "--port", "0", "--store-dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "nats-server with JetStream on nats://127.0.0.1:" in line
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        process.kill()
    assert (tmp_path / "jetstream").exists()
