"""A JetStream cluster of embedded nats-servers on loopback, for fault tests: kill, pause and restart nodes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType

from .._connect_options import ConnectOptions
from .._errors import ServerError
from ..server import EmbeddedServer
from ..transport import JetStreamTransport


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedCluster:
    """``size`` nats-servers with JetStream, routed to each other as one cluster.

    Each node keeps its client port, route port and store across :meth:`EmbeddedServer.kill` and
    :meth:`EmbeddedServer.restart`, so a test can take nodes away and bring the same ones back.
    ``extra_args`` go to every node (e.g. ``("-c", "jetstream.conf")``).
    """

    def __init__(
        self,
        size: int = 3,
        *,
        store_dir: str | Path | None = None,
        name: str = "eventwire",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self._own_store = store_dir is None
        self.store_dir = Path(store_dir) if store_dir is not None else Path(tempfile.mkdtemp(prefix="eventwire-cl-"))
        routes = [_free_port() for _ in range(size)]
        all_routes = ",".join(f"nats://127.0.0.1:{port}" for port in routes)
        self.nodes = [
            EmbeddedServer(
                port=_free_port(),
                store_dir=self.store_dir / f"n{index}",
                extra_args=(
                    "--server_name",
                    f"n{index}",
                    "--cluster_name",
                    name,
                    "--cluster",
                    f"nats://127.0.0.1:{route}",
                    "--routes",
                    all_routes,
                    *extra_args,
                ),
            )
            for index, route in enumerate(routes)
        ]

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated: what a client of the cluster is given."""
        return ",".join(node.url for node in self.nodes)

    def node_for(self, port: int) -> EmbeddedServer:
        """The node listening for clients on ``port``."""
        return next(node for node in self.nodes if node.port == port)

    def start(self, timeout: float = 30.0) -> EmbeddedCluster:
        """Start every node and wait until JetStream has a meta leader (outside an event loop)."""
        for node in self.nodes:
            node._spawn()
        for node in self.nodes:
            node._await_ready()
        asyncio.run(self.wait_for_jetstream(timeout))
        return self

    async def start_async(self, timeout: float = 30.0) -> EmbeddedCluster:
        """:meth:`start` from inside an event loop."""
        for node in self.nodes:
            node._spawn()
        for node in self.nodes:
            await asyncio.to_thread(node._await_ready)
        await self.wait_for_jetstream(timeout)
        return self

    async def wait_for_jetstream(self, timeout: float = 30.0) -> None:
        """Wait until the cluster's JetStream answers API requests (a meta leader is elected)."""
        give_up_at = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):
                transport = await JetStreamTransport.connect(
                    ConnectOptions.from_url(self.url, first_connect_deadline=1.0)
                )
                try:
                    reply = await transport.nc.request("$JS.API.INFO", b"", timeout=1)
                    if "error" not in json.loads(reply.data):
                        return
                finally:
                    await transport.close()
            if time.monotonic() > give_up_at:
                raise ServerError(f"the cluster's JetStream did not come up within {timeout:g}s")
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self._own_store:
            import shutil

            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
