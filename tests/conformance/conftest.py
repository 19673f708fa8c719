"""Every conformance test runs twice: on the memory broker (virtual time) and on a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import nats
import pytest

from eventwire import Stream
from eventwire.server import EmbeddedServer
from eventwire.testing import DurableState, MemoryBroker, MemoryTransport, VirtualTimeLoop
from eventwire.transport import ConnectOptions, JetStreamTransport, Transport

from ..conftest import unique


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    return {"memory": VirtualTimeLoop, "jetstream": asyncio.new_event_loop}


class Backend:
    """One broker under test, the same way for both transports."""

    def __init__(self, server: EmbeddedServer | None) -> None:
        self.server = server
        self.broker = MemoryBroker() if server is None else None
        self._transports: list[Transport] = []

    @property
    def name(self) -> str:
        return "memory" if self.server is None else "jetstream"

    @property
    def timing_tolerance(self) -> float:
        """How much shorter than the server's timer an interval seen by the client may look.

        The server times ack_wait and nak delays from when it sends; the client stamps each
        delivery when its loop gets to it, so a first delivery read late on a busy machine
        shortens the interval it measures. The memory broker runs on a virtual clock: float
        noise only.
        """
        return 1e-6 if self.server is None else 0.05

    def stream(self, subjects: tuple[str, ...] = (), **kwargs: Any) -> Stream:
        """A stream of the test's own; its subjects are prefixed with its name."""
        name = unique("CF")
        return Stream(name, tuple(f"{name}.{s}" for s in subjects or (">",)), **kwargs)

    async def connect(self) -> Transport:
        transport: Transport
        if self.broker is not None:
            transport = MemoryTransport(self.broker)
        else:
            assert self.server is not None
            transport = await JetStreamTransport.connect(
                ConnectOptions.from_url(self.server.url, reconnect_time_wait=0.1), pull_expires=2.0, idle_heartbeat=0.5
            )
        self._transports.append(transport)
        return transport

    async def durable(self, stream: str, durable: str) -> DurableState:
        if self.broker is not None:
            return self.broker.info(stream, durable)
        assert self.server is not None
        nc = await nats.connect(self.server.url)
        try:
            info = await nc.jetstream().consumer_info(stream, durable)
        finally:
            await nc.close()
        return DurableState(
            ack_floor=info.ack_floor.stream_seq, num_ack_pending=info.num_ack_pending, num_pending=info.num_pending
        )

    async def stream_messages(self, stream: str) -> int:
        if self.broker is not None:
            return self.broker.stream_messages(stream)
        assert self.server is not None
        nc = await nats.connect(self.server.url)
        try:
            return (await nc.jetstream().stream_info(stream)).state.messages
        finally:
            await nc.close()

    async def close(self) -> None:
        for transport in self._transports:
            await transport.close()


@pytest.fixture
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    on_virtual_time = isinstance(asyncio.get_running_loop(), VirtualTimeLoop)
    server = None if on_virtual_time else request.getfixturevalue("jetstream_server")
    backend = Backend(server)
    try:
        yield backend
    finally:
        await backend.close()
