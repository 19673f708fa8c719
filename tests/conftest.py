"""Fixtures: real nats-server processes on free ports, raw nats-py clients, unique names."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventwire._connect_options import redact_url
from eventwire.server import EmbeddedServer
from eventwire.transport import ConnectOptions, JetStreamTransport

from .secured import Secured

pytest_plugins = ["pytester"]

# EVENTWIRE_LONG=1: fault runs at full size (more producers' rows, more events); CI runs the short size.
LONG = os.environ.get("EVENTWIRE_LONG") == "1"
POSTGRES = os.environ.get("EVENTWIRE_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


async def postgres_engine(**options: object) -> AsyncEngine:
    """An engine on the test PostgreSQL; the test is skipped without one, and fails without one in CI."""
    engine = create_async_engine(POSTGRES, **options)
    try:
        async with engine.connect():
            pass
    except (OSError, DBAPIError) as exc:  # not running, no such database, login refused
        await engine.dispose()
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {redact_url(POSTGRES)} is required in CI: {reason}")
        pytest.skip(f"no PostgreSQL at {redact_url(POSTGRES)} (set EVENTWIRE_TEST_POSTGRES): {reason}")
    return engine


@pytest.fixture(autouse=True)
def root_logger_restored() -> Iterator[None]:
    """CLI commands run in-process configure the root logger; later tests must not inherit that."""
    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler not in before:  # configure_logging's, on a dead stream
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A server of the test's own, which it may kill and restart."""
    server = EmbeddedServer(store_dir=tmp_path / "js").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """One secured server per credential kind (TLS, mutual TLS, password, token, nkey, operator mode)."""
    servers = Secured(tmp_path_factory.mktemp("secured"))
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
async def raw_nc(jetstream_server: EmbeddedServer) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(jetstream_server.url)
    try:
        yield nc
    finally:
        await nc.close()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Wait until ``check`` holds; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > give_up_at:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def recorded(path: Path) -> list[tuple[int, str, int, float]]:
    """The ``pid order_id delivery_count unix_time`` lines tests.services.recorder wrote so far, whole lines only."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().rpartition("\n")[0].splitlines():
        pid, order_id, delivery, at = line.split()
        rows.append((int(pid), order_id, int(delivery), float(at)))
    return rows


@pytest.fixture
async def transport(jetstream_server: EmbeddedServer) -> AsyncIterator[JetStreamTransport]:
    connected = await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_server.url))
    try:
        yield connected
    finally:
        await connected.close()
