from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import nats
from typer.testing import CliRunner

from eventwire.cli import cli
from eventwire.server import EmbeddedServer

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


def test_demo_runs_on_an_embedded_server() -> None:
    result = eventwire("demo", "--orders", "300", env={"EVENTWIRE_URL": ""})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "eventwire demo on embedded" in result.stdout
    assert re.search(r"orders published\s+│\s+300 \(0 duplicates\)", result.stdout)
    assert re.search(r"handled by inventory\s+│\s+300", result.stdout)
    assert re.search(r"handled by notifications\s+│\s+300", result.stdout)
    assert re.search(r"redeliveries\s+│\s+12\b", result.stdout)  # every 25th order fails once on purpose


async def test_demo_with_url_leaves_streams_and_durables(fresh_server: EmbeddedServer) -> None:
    for _ in range(2):  # a second run on the same server works too
        result = eventwire("demo", "--orders", "100", "--url", fresh_server.url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"eventwire demo on {fresh_server.url}" in result.stdout
    nc = await nats.connect(fresh_server.url)
    try:
        js = nc.jetstream()
        assert (await js.stream_info("ORDERS")).state.messages == 200
        assert (await js.consumer_info("ORDERS", "svc-inventory")).ack_floor.stream_seq == 200
        assert (await js.consumer_info("INVENTORY", "svc-notifications")).num_pending == 0
    finally:
        await nc.close()


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
