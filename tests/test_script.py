"""Publishing from a script, without an App: ``async with eventwire.connect(...) as publisher``."""

from __future__ import annotations

import nats
import pytest

import eventwire
from eventwire import ConfigError, ConnectError, ConnectOptions, Stream
from eventwire.server import EmbeddedServer

from .conftest import unique
from .events import OrderCreated
from .secured import PASSWORD, secured_server


async def test_a_script_publishes_with_the_settings_every_command_uses(
    jetstream_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique("SCRIPT")
    stream = Stream(name, (f"{name}.>",))
    monkeypatch.setenv("EVENTWIRE_URL", jetstream_server.url)
    async with eventwire.connect(source="/jobs/backfill", streams=[stream]) as publisher:
        ack = await publisher.publish(OrderCreated(order_id="o-1"), subject=f"{name}.created", msg_id="backfill-1")
        again = await publisher.publish(OrderCreated(order_id="o-1"), subject=f"{name}.created", msg_id="backfill-1")
    assert (ack.stream, ack.sequence, again.duplicate) == (name, 1, True)
    nc = await nats.connect(jetstream_server.url)
    try:
        stored = await nc.jetstream().get_msg(name, 1)
    finally:
        await nc.close()
    assert stored.headers is not None and stored.headers["ce-source"] == "/jobs/backfill"
    assert stored.headers["ce-type"] == "shop.orders.v1.OrderCreated"


async def test_a_script_without_a_server_or_with_a_wrong_password_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for variable in ("EVENTWIRE_URL", "EVENTWIRE_CONTEXT"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError, match="no server: pass url= or options="):
        async with eventwire.connect():
            pass
    config = f'authorization {{ users = [ {{ user: alice, password: "{PASSWORD}" }} ] }}\n'
    server = secured_server(tmp_path_factory.mktemp("script"), config)
    try:
        host = server.url.removeprefix("nats://")
        wrong = ConnectOptions.from_url(f"nats://alice:not-the-password@{host}")
        with pytest.raises(ConnectError) as refused:
            async with eventwire.connect(options=wrong):
                pass
    finally:
        server.stop()
    assert "authorization violation" in str(refused.value) and "not-the-password" not in str(refused.value)
