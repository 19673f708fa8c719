"""Declarations on a 3-node cluster: replicas that follow the deployment, and what a cluster cannot place."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from eventwire import App, ConnectOptions, Delivery, Stream, StreamConfigError
from eventwire.testing import EmbeddedCluster
from eventwire.transport import JetStreamTransport

from .conftest import unique
from .events import OrderCreated


async def test_the_dead_letter_stream_takes_the_replicas_of_the_apps_streams(
    jetstream_cluster: EmbeddedCluster,
) -> None:
    name = unique("R")
    app = App(unique("repl"))

    @app.handler(OrderCreated, stream=Stream(name, (f"{name}.>",), replicas=3))
    async def handle(event: OrderCreated, delivery: Delivery) -> None:
        pass

    await app.start(connect=ConnectOptions.from_url(jetstream_cluster.url))
    try:
        dead_letters = app.dead_letter_stream
        assert dead_letters is not None
        info = await app.transport.nc.jetstream().stream_info(dead_letters.name)  # type: ignore[attr-defined]
    finally:
        await app.stop()
    assert info.config.num_replicas == 3
    assert info.cluster is not None and info.cluster.replicas is not None and len(info.cluster.replicas) == 2


async def test_more_replicas_than_the_cluster_has_nodes_fail_at_start(jetstream_cluster: EmbeddedCluster) -> None:
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_cluster.url))
    name = unique("R")
    try:
        with pytest.raises(StreamConfigError) as caught:
            await transport.ensure_stream(Stream(name, (f"{name}.>",), replicas=5))
    finally:
        await transport.close()
    assert caught.value.field == "replicas"
    assert "declared 5, more than the cluster can place" in str(caught.value)


def test_a_cluster_whose_port_is_taken_before_it_binds_starts_on_other_ports(tmp_path: Path) -> None:
    cluster = EmbeddedCluster(store_dir=tmp_path / "cluster")
    taken = cluster.nodes[1].port
    assert taken is not None
    with socket.socket() as squatter:  # another process took the port between choosing it and binding it
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        cluster.start()
        try:
            ports = [node.port for node in cluster.nodes]
        finally:
            cluster.stop()
    assert taken not in ports and len(set(ports)) == 3
