from __future__ import annotations

import base64
import json

import pytest

from eventwire import Envelope, EnvelopeError
from eventwire._envelope import decode_value, encode_value, parse_message

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
