"""What a new user meets in the first hour: version, help, database set-up, and one clear line for each mistake."""

from __future__ import annotations

import socket
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventwire.inbox import metadata as inbox_metadata
from eventwire.outbox import metadata as outbox_metadata
from eventwire.saga import metadata as saga_metadata

from .conftest import POSTGRES
from .test_cli import eventwire
from .test_outbox import _engine


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``error: …`` line a failed command printed; fails on a traceback or anything more."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_version_and_short_help() -> None:
    version = eventwire("--version")
    assert version.returncode == 0 and version.stdout.startswith("eventwire ")
    short, long = eventwire("-h"), eventwire("--help")
    assert short.returncode == 0 and short.stdout == long.stdout and "dlq" in short.stdout
    assert "--import" in eventwire("dlq", "show", "-h").stdout


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        yield listening.getsockname()[1]


def test_each_mistake_is_one_line_and_a_non_zero_exit(busy_port: int, tmp_path: Path) -> None:
    unreachable = {"EVENTWIRE_URL": "nats://127.0.0.1:1"}
    cases = {
        ("dlq", "show", "DLQ-x:1", "--import", "nosuch.module"): "--import: cannot import nosuch.module",
        ("relay", "--db", "garbage"): "not a database URL; expected sqlite+aiosqlite:///",
        (
            "relay",
            "--db",
            "postgresql://user:hunter2@127.0.0.1/test",
        ): "is not an async driver; use postgresql+asyncpg://",
        ("relay", "--db", "mysql+aiomysql://db/x"): "work on SQLite and PostgreSQL",
        ("server", "--port", str(busy_port)): f"port {busy_port} on 127.0.0.1 is in use",
        ("run", "eventwire.demo:missing"): "module eventwire.demo has no attribute 'missing'",
        ("run", "eventwire.demo._shop_run:ShopSummary"): "a class, not an eventwire App",
        ("run", "nosuch:app"): "cannot import nosuch",
        ("schema", "lint", "eventwire/demo/proto", "--log-level", "bogus"): "log level 'bogus' is not one of",
        ("status", "--pending", "many"): "--pending 'many': expected WARNING:CRITICAL",
        ("status", "--last-ack", "300:60"): "the warning threshold must be 0 or more and at most the critical",
    }
    for args, expected in cases.items():
        line = one_line_error(eventwire(*args, env=unreachable, timeout=60))
        assert expected in line, (args, line)
        assert "hunter2" not in line


_ALL_TABLES = "eventwire_outbox, eventwire_outbox_keys, eventwire_inbox, eventwire_saga, eventwire_saga_timers"


def test_db_init_on_sqlite_twice_and_relay_without_tables(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    bare = f"sqlite+aiosqlite:///{tmp_path / 'bare.db'}"
    refused = eventwire("relay", "--db", bare, env={"EVENTWIRE_URL": "nats://127.0.0.1:1"}, timeout=30)
    assert "lacks the outbox tables (eventwire_outbox, eventwire_outbox_keys)" in one_line_error(refused)
    assert refused.returncode == 1
    first, again = eventwire("db", "init", "--db", url), eventwire("db", "init", "--db", url)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert first.stdout == f"created {_ALL_TABLES} in {url}\n"
    assert again.stdout == f"{url} already has {_ALL_TABLES}\n"


async def test_db_init_on_postgresql_twice(tmp_path: Path) -> None:
    engine = await _engine("postgresql", tmp_path)  # skips, or fails in CI, when there is no PostgreSQL
    async with engine.begin() as conn:
        for schema in (outbox_metadata, inbox_metadata, saga_metadata):
            await conn.run_sync(schema.drop_all)
    await engine.dispose()
    first, again = eventwire("db", "init", "--db", POSTGRES), eventwire("db", "init", "--db", POSTGRES)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert f"created {_ALL_TABLES}" in first.stdout
    assert f"already has {_ALL_TABLES}" in again.stdout
    unreachable = eventwire("db", "init", "--db", "postgresql+asyncpg://postgres:hunter2@127.0.0.1:1/test")
    line = one_line_error(unreachable)
    assert "cannot connect" in line and "hunter2" not in line


def test_run_finds_the_users_code_with_app_dir(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "billing").mkdir(parents=True)
    (project / "billing" / "__init__.py").write_text("")
    (project / "billing" / "service.py").write_text(
        textwrap.dedent(
            """
            from eventwire import App
            app = App("billing")
            """
        )
    )
    found = eventwire("asyncapi", "billing.service:app", "--app-dir", str(project))
    assert found.returncode == 0, found.stderr
    assert '"title": "billing"' in found.stdout
    by_env = eventwire("asyncapi", "billing.service:app", env={"EVENTWIRE_APP_DIR": str(project)})
    assert by_env.returncode == 0, by_env.stderr
    assert "cannot import billing" in one_line_error(eventwire("asyncapi", "billing.service:app"))  # cwd: the repo
