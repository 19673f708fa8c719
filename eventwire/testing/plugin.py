"""The eventwire pytest plugin: fixtures for the memory broker, a real JetStream server and a 3-node cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest

from .._publisher import Publisher
from ..server import EmbeddedServer
from ..transport.memory import MemoryBroker, MemoryTransport
from ._clock import VirtualTimeLoop
from ._cluster import EmbeddedCluster

try:  # the async fixtures then work in pytest-asyncio's strict mode too, without asyncio_mode = "auto"
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover - without pytest-asyncio no async test runs at all
    async_fixture = pytest.fixture  # type: ignore[assignment]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "virtual_time: run this async test on eventwire's VirtualTimeLoop (delays cost no real time)"
    )


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    # pytest-asyncio wants a mapping for every item once any plugin implements this hook.
    if item.get_closest_marker("virtual_time") is not None:
        return {"virtual_time": VirtualTimeLoop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture
def memory_broker() -> MemoryBroker:
    """A fresh in-memory broker; connect Apps to it with ``MemoryTransport(memory_broker)``."""
    return MemoryBroker()


@pytest.fixture
def memory_transport(memory_broker: MemoryBroker) -> MemoryTransport:
    """A connection to ``memory_broker``: pass it to ``running(app, memory_transport)``."""
    return MemoryTransport(memory_broker)


@pytest.fixture
def memory_publisher(memory_transport: MemoryTransport) -> Publisher:
    """A publisher on the memory broker, as a service ``/tests`` would publish.

    Streams must exist first: start an App that declares them, or
    ``await memory_transport.ensure_stream(stream)``.
    """
    return Publisher(memory_transport, source="/tests")


@pytest.fixture(scope="session")
def jetstream_server() -> Iterator[EmbeddedServer]:
    """A real nats-server with JetStream, shared by the whole test session."""
    with EmbeddedServer() as server:
        yield server


@async_fixture
async def jetstream_cluster(tmp_path: Any) -> AsyncIterator[EmbeddedCluster]:
    """A 3-node JetStream cluster of the test's own (``sync_interval: always``) to kill, pause and restart."""
    cluster = await EmbeddedCluster(store_dir=tmp_path / "cluster").start_async()
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)


@async_fixture
async def jetstream_url(jetstream_server: EmbeddedServer) -> AsyncIterator[str]:
    """The shared server's URL, with no streams before the test and none left after it."""
    from ..transport import ConnectOptions, JetStreamTransport

    transport = await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_server.url))
    try:
        await _delete_all_streams(transport.nc)
        yield jetstream_server.url
        await _delete_all_streams(transport.nc)
    finally:
        await transport.close()


async def _delete_all_streams(nc: Any) -> None:
    js = nc.jetstream()
    for info in await js.streams_info():
        if info.config.name is not None:
            await js.delete_stream(info.config.name)
