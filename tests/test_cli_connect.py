"""Every command that connects: a bad server or credential is one line and exit 1; SIGTERM ends a connect."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from eventwire.outbox import create_tables
from eventwire.server import EmbeddedServer

from .secured import PASSWORD, secured_server

ROOT = Path(__file__).parent.parent
APP = "eventwire.demo:orders_service()"


def commands(tmp: Path) -> dict[str, list[str]]:
    """Each command that connects, without its connection options."""
    return {
        "run": ["run", APP],
        "demo": ["demo", "--orders", "5"],
        "relay": ["relay", "--db", f"sqlite+aiosqlite:///{tmp / 'outbox.db'}"],
        "dlq list": ["dlq", "list"],
        "dlq show": ["dlq", "show", "DLQ-x:1"],
        "dlq replay": ["dlq", "replay"],
        "dlq purge": ["dlq", "purge", "--yes"],
        "ui": ["ui", "--port", "0"],
    }


@pytest.fixture(scope="module")
def password_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    tmp = tmp_path_factory.mktemp("cli")
    server = secured_server(tmp, f'authorization {{ users = [ {{ user: alice, password: "{PASSWORD}" }} ] }}\n')
    try:
        yield server
    finally:
        server.stop()


async def eventwire(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    """Run ``python -m eventwire ARGS``: (exit code, stdout, stderr, seconds)."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventwire",
        *args,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode(), time.monotonic() - started


@pytest.mark.parametrize("failure", ["refused port", "wrong password", "malformed URL", "missing creds file"])
async def test_every_command_fails_with_one_line_and_exit_1(
    failure: str, password_server: EmbeddedServer, tmp_path: Path
) -> None:
    connection = {
        "refused port": ["--url", "nats://127.0.0.1:1"],
        "wrong password": ["--url", password_server.url, "--user", "alice", "--password", "not-the-password"],
        "malformed URL": ["--url", f"nats//alice:{PASSWORD}@bad"],
        "missing creds file": ["--url", password_server.url, "--creds", str(tmp_path / "none.creds")],
    }[failure]
    expected = {
        "refused port": "connection refused",
        "wrong password": "authorization violation",
        "malformed URL": "malformed server URL ***@bad",
        "missing creds file": "creds_file",
    }[failure]
    names = list(commands(tmp_path))
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    await create_tables(engine)  # the relay checks its tables before it connects
    await engine.dispose()
    # The same commands, started beside them, failing before any connect: their start-up under this load
    # (eight or more Python processes on two cores take seconds just to import).
    runs = await asyncio.gather(
        *(eventwire(*commands(tmp_path)[name], *connection) for name in names),
        *(eventwire(*commands(tmp_path)[name], "--url", "nats//start-up-only") for name in names),
    )
    results, start_ups = runs[: len(names)], [run[3] for run in runs[len(names) :]]
    budget = 10.0 if failure == "refused port" else 0.0  # the first connect's deadline
    for name, (code, out, err, seconds), start_up in zip(names, results, start_ups, strict=True):
        print(f"{failure} / {name}: exit {code} in {seconds:.1f}s (start-up {start_up:.1f}s): {err.strip()}")
        lines = err.strip().splitlines()
        assert code == 1, (name, out, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert expected in lines[0], (name, err)
        assert "Traceback" not in out + err
        assert PASSWORD not in out + err and "not-the-password" not in out + err
        assert seconds < start_up + budget + 3.0, name  # gave up at its deadline, not later


async def test_a_command_without_a_server_says_how_to_name_one(tmp_path: Path) -> None:
    environ = {"EVENTWIRE_URL": "", "EVENTWIRE_CONTEXT": "", "XDG_CONFIG_HOME": str(tmp_path)}
    code, _, err, _ = await eventwire("dlq", "list", env=environ)
    assert code == 2
    assert err.strip() == ("error: no server: pass --url or --context, or set EVENTWIRE_URL or EVENTWIRE_CONTEXT")


async def test_sigterm_during_the_first_connect_exits_at_once() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventwire",
        "run",
        APP,
        "--url",
        "nats://127.0.0.1:1",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(2.0)  # importing, then retrying the refused port (the deadline is 10 s)
    assert process.returncode is None
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(process.communicate(), 10)
    took = time.monotonic() - sent
    print(f"exited {took:.2f}s after SIGTERM: {err.decode().strip()}")
    assert process.returncode == 0
    assert took < 1.0
    assert "stopped before it was running" in err.decode()
    assert "Traceback" not in err.decode()
