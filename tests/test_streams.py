from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.client import ServerVersion

from eventwire import App, ConfigError, Stream, StreamConfigError
from eventwire._streams import Durable
from eventwire.transport import JetStreamTransport

from .conftest import unique


async def test_stream_is_created_then_left_alone(transport: JetStreamTransport, raw_nc: NatsClient) -> None:
    name = unique("S")
    stream = Stream(name, (f"{name}.>",), duplicate_window=30, max_age=3600, max_msg_size=4096)
    await transport.ensure_stream(stream)
    js = raw_nc.jetstream()
    info = await js.stream_info(name)
    assert info.config.subjects == [f"{name}.>"]
    assert info.config.duplicate_window == 30
    assert info.config.max_age == 3600
    assert info.config.max_msg_size == 4096
    await js.publish(f"{name}.x", b"1")
    await transport.ensure_stream(stream)  # idempotent: nothing changes, nothing is lost
    assert (await js.stream_info(name)).state.messages == 1


async def test_compatible_change_updates_the_stream(transport: JetStreamTransport, raw_nc: NatsClient) -> None:
    name = unique("S")
    await transport.ensure_stream(Stream(name, (f"{name}.a",)))
    await transport.ensure_stream(Stream(name, (f"{name}.a", f"{name}.b"), max_age=600, duplicate_window=60))
    config = (await raw_nc.jetstream().stream_info(name)).config
    assert sorted(config.subjects or []) == [f"{name}.a", f"{name}.b"]
    assert config.max_age == 600
    assert config.duplicate_window == 60


@pytest.mark.parametrize(
    ("first", "second", "field"),
    [
        ({"storage": "file"}, {"storage": "memory"}, "storage"),
        ({"retention": "limits"}, {"retention": "workqueue"}, "retention"),
    ],
)
async def test_incompatible_change_names_the_field(
    transport: JetStreamTransport, first: dict[str, str], second: dict[str, str], field: str
) -> None:
    name = unique("S")
    await transport.ensure_stream(Stream(name, (f"{name}.>",), **first))  # type: ignore[arg-type]
    with pytest.raises(StreamConfigError, match=field) as caught:
        await transport.ensure_stream(Stream(name, (f"{name}.>",), **second))  # type: ignore[arg-type]
    assert caught.value.field == field


async def test_overlapping_subjects_are_a_stream_config_error(transport: JetStreamTransport) -> None:
    name = unique("S")
    await transport.ensure_stream(Stream(name, (f"{name}.>",)))
    with pytest.raises(StreamConfigError, match="create"):
        await transport.ensure_stream(Stream(unique("T"), (f"{name}.x",)))


async def test_durable_is_created_and_updated(transport: JetStreamTransport, raw_nc: NatsClient) -> None:
    name = unique("S")
    await transport.ensure_stream(Stream(name, (f"{name}.>",)))
    await transport.ensure_durable(Durable("svc-x", name, f"{name}.a", ack_wait=5, max_deliver=3))
    await transport.ensure_durable(Durable("svc-x", name, f"{name}.a", ack_wait=7, max_deliver=4))
    info = await raw_nc.jetstream().consumer_info(name, "svc-x")
    assert (info.config.ack_wait, info.config.max_deliver, info.config.filter_subject) == (7, 4, f"{name}.a")


@pytest.mark.parametrize(
    ("field", "value"),
    [("ack_wait", 7.0), ("max_deliver", 4), ("max_ack_pending", 50), ("filter_subject", "{stream}.b")],
)
async def test_each_durable_setting_reaches_the_server_on_its_own(
    transport: JetStreamTransport, raw_nc: NatsClient, field: str, value: object
) -> None:
    name = unique("S")
    await transport.ensure_stream(Stream(name, (f"{name}.>",)))
    before = Durable("svc-x", name, f"{name}.a", ack_wait=5, max_deliver=3, max_ack_pending=100)
    await transport.ensure_durable(before)
    change: dict[str, Any] = {field: value.format(stream=name) if isinstance(value, str) else value}
    after = dataclasses.replace(before, **change)
    await transport.ensure_durable(after)
    config = (await raw_nc.jetstream().consumer_info(name, "svc-x")).config
    assert (config.ack_wait, config.max_deliver, config.max_ack_pending, config.filter_subject) == (
        after.ack_wait,
        after.max_deliver,
        after.max_ack_pending,
        after.filter_subject,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "has.dot"}, "stream name"),
        ({"subjects": ()}, "subjects"),
        ({"subjects": ("a..b",)}, "invalid subject"),
        ({"subjects": ("a.>.b",)}, "invalid subject"),
        ({"retention": "forever"}, "retention"),
        ({"replicas": 7}, "replicas"),
        ({"duplicate_window": 0}, "duplicate_window"),
        ({"max_age": 60, "duplicate_window": 120}, "duplicate_window"),
        ({"max_msg_size": 0}, "max_msg_size"),
    ],
)
def test_invalid_stream_declarations_fail_at_construction(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"name": "ORDERS", "subjects": ("orders.>",), **kwargs}
    with pytest.raises(ConfigError, match=message):
        Stream(**fields)  # type: ignore[arg-type]


def test_eventwires_own_streams_follow_the_apps_replicas() -> None:
    replicated = Stream("ORDERS", ("orders.>",), replicas=3)
    single = Stream("AUDIT", ("audit.>",))
    by_default = App("billing", streams=[single, replicated])
    assert by_default.replicas == 3
    assert by_default.dead_letter_stream is not None and by_default.dead_letter_stream.replicas == 3
    told = App("billing", streams=[replicated], replicas=2)
    assert told.dead_letter_stream is not None and told.dead_letter_stream.replicas == 2
    assert App("alone").replicas == 1
    own = Stream("DLQ-billing", ("dlq.billing.>",), replicas=5)
    assert App("billing", streams=[replicated], dead_letters=own).dead_letter_stream == own
    with pytest.raises(ConfigError, match=r"App\.replicas"):
        App("billing", replicas=7)


async def test_more_replicas_than_a_single_server_holds_names_the_field(transport: JetStreamTransport) -> None:
    name = unique("S")
    with pytest.raises(StreamConfigError) as caught:
        await transport.ensure_stream(Stream(name, (f"{name}.>",), replicas=3))
    assert caught.value.field == "replicas"
    assert str(caught.value) == (
        f"stream '{name}': replicas: declared 3, but the server is not clustered and holds one (use replicas=1 there)"
    )


async def test_batch_publishing_is_declared_on_the_stream(
    transport: JetStreamTransport, raw_nc: NatsClient, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique("S")
    await transport.ensure_stream(Stream(name, (f"{name}.>",)))
    await transport.ensure_stream(Stream(name, (f"{name}.>",), allow_batched=True, allow_atomic=True))
    enabled = (await raw_nc.jetstream().stream_info(name)).config
    caplog.clear()
    with caplog.at_level("INFO", logger="eventwire.transport"):
        await transport.ensure_stream(Stream(name, (f"{name}.>",), allow_batched=True, allow_atomic=True))
        redeclared = list(caplog.messages)
        await transport.ensure_stream(Stream(name, (f"{name}.>",)))
    disabled = (await raw_nc.jetstream().stream_info(name)).config
    assert (enabled.allow_batched, enabled.allow_atomic) == (True, True)
    assert not any("updated stream" in m for m in redeclared)  # declared as it is: left alone
    assert f"updated stream {name}: allow_batched, allow_atomic" in caplog.messages
    assert not disabled.allow_batched and not disabled.allow_atomic


async def test_batch_publishing_on_an_older_server_names_the_field_and_the_version(
    transport: JetStreamTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(type(transport.nc), "connected_server_version", property(lambda _: ServerVersion("2.13.2")))
    name = unique("S")
    refused = r"allow_batched.*needs nats-server 2\.14\.0 or later; this one is 2\.13\.2"
    with pytest.raises(StreamConfigError, match=refused):
        await transport.ensure_stream(Stream(name, (f"{name}.>",), allow_batched=True))
    await transport.ensure_stream(Stream(name, (f"{name}.>",), allow_atomic=True))  # 2.12 is enough for atomic
