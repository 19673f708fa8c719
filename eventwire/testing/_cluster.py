"""A JetStream cluster of embedded nats-servers on loopback, for fault tests: kill, pause and restart nodes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType

from .._connect_options import ConnectOptions
from .._errors import ServerError
from ..server import EmbeddedServer
from ..transport import JetStreamTransport

_PORT_ATTEMPTS = 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedCluster:
    """``size`` nats-servers with JetStream, routed to each other as one cluster.

    Each node keeps its client port, route port and store across :meth:`EmbeddedServer.kill` and
    :meth:`EmbeddedServer.restart`, so a test can take nodes away and bring the same ones back, and
    :meth:`EmbeddedServer.pause` freezes one. With ``sync_always`` (the default, the production
    recipe of docs/clusters.md) every node fsyncs each write. ``extra_args`` go to every node.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        store_dir: str | Path | None = None,
        name: str = "eventwire",
        sync_always: bool = True,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self._own_store = store_dir is None
        self.store_dir = Path(store_dir) if store_dir is not None else Path(tempfile.mkdtemp(prefix="eventwire-cl-"))
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if sync_always:
            config = self.store_dir / "sync.conf"
            config.write_text("jetstream { sync_interval: always }\n")
            extra_args = ("-c", str(config), *extra_args)
        self._size, self._name, self._extra_args = size, name, extra_args
        self.nodes = self._nodes_on_free_ports()

    def _nodes_on_free_ports(self) -> list[EmbeddedServer]:
        routes = [_free_port() for _ in range(self._size)]
        all_routes = ",".join(f"nats://127.0.0.1:{port}" for port in routes)
        return [
            EmbeddedServer(
                port=_free_port(),
                store_dir=self.store_dir / f"n{index}",
                extra_args=(
                    "--server_name",
                    f"n{index}",
                    "--cluster_name",
                    self._name,
                    "--cluster",
                    f"nats://127.0.0.1:{route}",
                    "--routes",
                    all_routes,
                    *self._extra_args,
                ),
            )
            for index, route in enumerate(routes)
        ]

    def _port_taken(self, exc: ServerError) -> bool:
        """Whether a node lost its port to another process between choosing it and binding it; if so, the
        started nodes are stopped and new ports chosen."""
        if "address already in use" not in str(exc):
            return False
        for node in self.nodes:
            node.kill()
            shutil.rmtree(node.store_dir, ignore_errors=True)
        self.nodes = self._nodes_on_free_ports()
        return True

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated: what a client of the cluster is given."""
        return ",".join(node.url for node in self.nodes)

    def node_for(self, port: int) -> EmbeddedServer:
        """The node listening for clients on ``port``."""
        return next(node for node in self.nodes if node.port == port)

    def node_named(self, name: str) -> EmbeddedServer:
        """The node whose server name is ``name`` (``n0``, ``n1``, …), as JetStream reports leaders."""
        return self.nodes[int(name.removeprefix("n"))]

    async def stream_leader(self, stream: str, timeout: float = 30.0) -> EmbeddedServer:
        """The node that leads ``stream`` now (waiting for an election if there is none)."""
        return await self._leader(f"$JS.API.STREAM.INFO.{stream}", timeout)

    async def consumer_leader(self, stream: str, durable: str, timeout: float = 30.0) -> EmbeddedServer:
        """The node that leads the durable ``durable`` of ``stream`` now."""
        return await self._leader(f"$JS.API.CONSUMER.INFO.{stream}.{durable}", timeout)

    async def _leader(self, api_subject: str, timeout: float) -> EmbeddedServer:
        # Every running node is asked at once, each on a connection of its own: a frozen one cannot delay it.
        give_up_at = time.monotonic() + timeout
        while True:
            asked = [node for node in self.nodes if node.running and not node.paused]
            answers = await asyncio.gather(*(self._ask(node, api_subject) for node in asked))
            named = [leader for leader in answers if leader]
            if named:
                return self.node_named(max(set(named), key=named.count))
            if time.monotonic() > give_up_at:
                raise ServerError(f"no leader for {api_subject} within {timeout:g}s")
            await asyncio.sleep(0.1)

    async def _ask(self, node: EmbeddedServer, api_subject: str) -> str | None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                transport = await JetStreamTransport.connect(
                    ConnectOptions.from_url(node.url, first_connect_deadline=0.5, connect_timeout=0.5)
                )
                try:
                    reply = json.loads((await transport.nc.request(api_subject, b"", timeout=0.5)).data)
                finally:
                    await transport.close()
                leader = reply.get("cluster", {}).get("leader")
                return leader if isinstance(leader, str) else None
        return None

    def start(self, timeout: float = 30.0) -> EmbeddedCluster:
        """Start every node and wait until JetStream has a meta leader (outside an event loop)."""
        for attempt in range(_PORT_ATTEMPTS):
            try:
                for node in self.nodes:
                    node._spawn()
                for node in self.nodes:
                    node._await_ready()
                break
            except ServerError as exc:
                if attempt == _PORT_ATTEMPTS - 1 or not self._port_taken(exc):
                    raise
        asyncio.run(self.wait_for_jetstream(timeout))
        return self

    async def start_async(self, timeout: float = 30.0) -> EmbeddedCluster:
        """:meth:`start` from inside an event loop."""
        for attempt in range(_PORT_ATTEMPTS):
            try:
                for node in self.nodes:
                    node._spawn()
                for node in self.nodes:
                    await asyncio.to_thread(node._await_ready)
                break
            except ServerError as exc:
                if attempt == _PORT_ATTEMPTS - 1 or not self._port_taken(exc):
                    raise
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
