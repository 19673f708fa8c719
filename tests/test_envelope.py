from __future__ import annotations

import base64
import json

import pytest

from eventwire import App, Envelope, EnvelopeError, Stream
from eventwire._envelope import decode_value, encode_value, parse_message
from eventwire.server import EmbeddedServer
from eventwire.testing import MemoryBroker, MemoryTransport, running
from eventwire.transport import ConnectOptions, JetStreamTransport, Transport

from .conftest import unique
from .events import OrderCreated

REQUIRED = {
    "ce-specversion": "1.0",
    "ce-id": "e-1",
    "ce-source": "/services/orders",
    "ce-type": "shop.orders.v1.OrderCreated",
}


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("plain-ascii_1.2/3", "plain-ascii_1.2/3"),
        ("with space", "with%20space"),
        ('quote"d', "quote%22d"),
        ("100%", "100%25"),
        ("naïve", "na%C3%AFve"),
        ("tab\there", "tab%09here"),
        ("日本", "%E6%97%A5%E6%9C%AC"),
    ],
)
def test_header_values_are_percent_encoded_by_the_binding_rule(raw: str, encoded: str) -> None:
    assert encode_value(raw) == encoded
    assert decode_value(encoded, "ce-x") == raw


@pytest.mark.parametrize("bad", ["%", "%2", "%zz", "abc%g0", "%C0%AF", "%FF", "%E6%97"])
def test_malformed_percent_encoding_is_an_envelope_error(bad: str) -> None:
    with pytest.raises(EnvelopeError):
        decode_value(bad, "ce-id")


def test_envelope_round_trips_through_headers() -> None:
    envelope = Envelope(
        id="01",
        source="/services/orders",
        type="shop.orders.v1.OrderCreated",
        time="2026-11-29T10:00:00.000Z",
        subject="order 42",
        datacontenttype="application/protobuf",
        dataschema="urn:x",
        correlation_id="c-1",
        causation_id="c-0",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="k=v",
        extensions={"tenant": "acme"},
    )
    headers = envelope.to_headers("ord-42")
    assert headers["ce-subject"] == "order%2042"
    assert headers["Nats-Msg-Id"] == "ord-42"
    assert headers["ce-tenant"] == "acme"
    parsed, data = parse_message(headers, b"payload")
    assert parsed == envelope
    assert data == b"payload"


def test_msg_id_defaults_to_event_id() -> None:
    assert Envelope(id="abc", source="/s", type="a.v1.ThingHappened").to_headers()["Nats-Msg-Id"] == "abc"


@pytest.mark.parametrize("missing", ["ce-id", "ce-type", "ce-source", "ce-specversion"])
def test_missing_required_attribute_is_an_envelope_error(missing: str) -> None:
    headers = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(EnvelopeError, match=missing.removeprefix("ce-")):
        parse_message(headers, b"")


def test_unknown_spec_version_is_an_envelope_error() -> None:
    with pytest.raises(EnvelopeError, match="spec version"):
        parse_message({**REQUIRED, "ce-specversion": "0.3"}, b"")


def test_no_headers_is_an_envelope_error() -> None:
    with pytest.raises(EnvelopeError):
        parse_message(None, b"\x08\x01")


def test_structured_mode_is_decoded_from_the_body() -> None:
    body = {
        "specversion": "1.0",
        "id": "s-1",
        "source": "/services/legacy",
        "type": "shop.orders.v1.OrderCreated",
        "datacontenttype": "application/protobuf",
        "data_base64": base64.b64encode(b"\x0a\x01x").decode(),
        "correlationid": "c-9",
    }
    envelope, data = parse_message({"Content-Type": "application/cloudevents+json"}, json.dumps(body).encode())
    assert (envelope.id, envelope.correlation_id, data) == ("s-1", "c-9", b"\x0a\x01x")


def test_structured_mode_with_json_data() -> None:
    body: dict[str, object] = {k.removeprefix("ce-"): v for k, v in REQUIRED.items()}
    body["datacontenttype"] = "application/json"
    body["data"] = {"orderId": "o-1"}
    envelope, data = parse_message({"Content-Type": "application/cloudevents+json"}, json.dumps(body).encode())
    assert json.loads(data) == {"orderId": "o-1"}
    assert envelope.datacontenttype == "application/json"


@pytest.mark.parametrize("body", [b"not json", b"[1,2]", b'{"specversion": "1.0"}', b'{"BAD NAME": 1}'])
def test_malformed_structured_event_is_an_envelope_error(body: bytes) -> None:
    with pytest.raises(EnvelopeError):
        parse_message({"Content-Type": "application/cloudevents+json"}, body)


# What services written with other languages' CloudEvents libraries send (docs/interop.md).
FOREIGN = {"ce-specversion": "1.0", "ce-id": "js-1", "ce-source": "/node", "ce-type": "shop.orders.v1.OrderCreated"}


async def foreign_workload(transport: Transport) -> None:
    """The three cases of docs/interop.md: an alias content type, only Content-Type, a time that is not one."""
    name = unique("INTEROP")
    app = App("interop")
    received: list[str] = []

    @app.handler(OrderCreated, stream=Stream(name, (f"{name}.>",)))
    async def handle(order: OrderCreated) -> None:
        received.append(order.order_id)

    order = OrderCreated(order_id="o-1")
    async with running(app, transport) as probe:
        sends = [
            ({**FOREIGN, "ce-datacontenttype": "application/x-protobuf"}, order.SerializeToString()),
            ({**FOREIGN, "ce-id": "js-2", "Content-Type": "application/json"}, b'{"orderId": "o-2"}'),
            ({**FOREIGN, "ce-id": "js-3", "ce-time": "yesterday"}, order.SerializeToString()),
        ]
        for headers, payload in sends:
            await transport.publish(f"{name}.created", payload, {**headers, "Nats-Msg-Id": headers["ce-id"]}, timeout=5)
        await probe.wait_until(lambda: len(probe.settlements) == 3)
    outcomes = {s.ce_id: (s.outcome, s.reason) for s in probe.settlements}
    assert received == ["o-1", "o-2"]
    assert outcomes["js-3"][0] == "term"
    assert "time 'yesterday' is not an RFC 3339 timestamp" in str(outcomes["js-3"][1])


@pytest.mark.virtual_time
async def test_events_from_other_languages_in_memory() -> None:
    await foreign_workload(MemoryTransport(MemoryBroker()))


async def test_events_from_other_languages_on_jetstream(jetstream_server: EmbeddedServer) -> None:
    await foreign_workload(await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_server.url)))


@pytest.mark.parametrize(
    "stamp", ["2026-12-01T16:50:47Z", "2026-12-01T16:50:47.224+01:00", "2026-12-01 16:50:47.123456789z"]
)
def test_rfc3339_times_are_accepted(stamp: str) -> None:
    envelope, _ = parse_message({**FOREIGN, "ce-time": stamp}, b"")
    assert envelope.time == stamp


@pytest.mark.parametrize("stamp", ["yesterday", "2026-13-01T00:00:00Z", "2026-12-01T16:50:47", "1733071847"])
def test_times_that_are_not_rfc3339_are_an_invalid_envelope(stamp: str) -> None:
    with pytest.raises(EnvelopeError, match="is not an RFC 3339 timestamp"):
        parse_message({**FOREIGN, "ce-time": stamp}, b"")
