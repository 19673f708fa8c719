"""``eventwire asyncapi``: documents that the official AsyncAPI 3.0.0 JSON Schema accepts, describing the App."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from typer.testing import CliRunner

from eventwire import App, Publication, Stream
from eventwire._asyncapi import asyncapi_document
from eventwire._publisher import EventEncoder
from eventwire.cli import cli
from eventwire.contracts import JSON
from eventwire.demo import inventory_service, notifications_service, orders_service
from examples.inventory import build_app

from .asyncapi_specs import FETCH_COMMAND, SCHEMA_FILE
from .events import LineItem, OrderCreated, StockRejected, StockReserved


@pytest.fixture(scope="session")
def asyncapi_schema() -> Draft7Validator:
    """A validator of the official AsyncAPI 3.0.0 JSON Schema (draft-07), which resolves no reference remotely."""
    if not SCHEMA_FILE.exists():
        pytest.fail(
            f"the official AsyncAPI 3.0.0 JSON Schema is missing ({SCHEMA_FILE}): run `{FETCH_COMMAND}` "
            "(scripts/test does, before pytest)",
            pytrace=False,
        )
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["$schema"].startswith("http://json-schema.org/draft-07/schema")
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)


def _errors(validator: Draft7Validator, document: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def _references(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _resolve(document: dict[str, Any], reference: str) -> object:
    assert reference.startswith("#/"), reference
    node: Any = document
    for part in reference.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _assert_valid(validator: Draft7Validator, document: dict[str, Any]) -> None:
    assert _errors(validator, document) == []
    # The schema checks the shape of a reference, not its target: every one must point into the document.
    for reference in _references(document):
        _resolve(document, reference)


SERVICES: dict[str, Callable[[], App]] = {
    "demo orders": orders_service,
    "demo inventory": inventory_service,
    "demo notifications": notifications_service,
    "example inventory": lambda: build_app({}),
}


@pytest.mark.parametrize("service", SERVICES.values(), ids=SERVICES.keys())
def test_documents_of_the_demo_and_example_apps_are_valid_asyncapi(
    asyncapi_schema: Draft7Validator, service: Callable[[], App]
) -> None:
    _assert_valid(asyncapi_schema, asyncapi_document(service(), servers=["nats://127.0.0.1:4222"]))


def test_the_validator_rejects_a_broken_document(asyncapi_schema: Draft7Validator) -> None:
    document = asyncapi_document(build_app({}))
    _assert_valid(asyncapi_schema, document)
    without_action = copy.deepcopy(document)
    del without_action["operations"]["reserve_stock"]["action"]
    assert _errors(asyncapi_schema, without_action)
    bad_action = copy.deepcopy(document)
    bad_action["operations"]["reserve_stock"]["action"] = "consume"
    assert _errors(asyncapi_schema, bad_action)
    unknown_field = copy.deepcopy(document)
    unknown_field["channels"]["orders.created"]["stream"] = "ORDERS"  # only x- extensions may be added
    assert _errors(asyncapi_schema, unknown_field)
    no_version = copy.deepcopy(document)
    del no_version["info"]["version"]
    assert _errors(asyncapi_schema, no_version)


def test_document_lists_the_channels_operations_and_messages_of_the_app() -> None:
    document = asyncapi_document(build_app({}), version="2.1.0")
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == "inventory"
    assert document["info"]["version"] == "2.1.0"
    assert "servers" not in document
    assert {cid: c["address"] for cid, c in document["channels"].items()} == {
        "orders.created": "orders.created",
        "inventory.reserved": "inventory.reserved",
        "inventory.rejected": "inventory.rejected",
    }
    assert document["channels"]["orders.created"]["messages"] == {
        "shop.orders.v1.OrderCreated": {"$ref": "#/components/messages/shop.orders.v1.OrderCreated"}
    }
    assert document["channels"]["orders.created"]["x-eventwire-streams"] == ["ORDERS"]

    operations = document["operations"]
    assert {oid: (o["action"], o["channel"]["$ref"]) for oid, o in operations.items()} == {
        "reserve_stock": ("receive", "#/channels/orders.created"),
        "send-StockReserved-inventory.reserved": ("send", "#/channels/inventory.reserved"),
        "send-StockRejected-inventory.rejected": ("send", "#/channels/inventory.rejected"),
    }
    receive = operations["reserve_stock"]
    assert receive["messages"] == [{"$ref": "#/channels/orders.created/messages/shop.orders.v1.OrderCreated"}]
    assert receive["x-eventwire-durable"] == {
        "name": "inventory-reserve_stock",
        "stream": "ORDERS",
        "filter_subject": "orders.created",
        "ack_wait": 30.0,
        "max_deliver": -1,  # dead letters on: eventwire settles the last delivery itself
        "max_ack_pending": 1000,
        "pinned": False,
    }
    assert "x-eventwire-partitions" not in receive
    retry = receive["x-eventwire-retry"]
    assert retry["max_deliveries"] == 10
    assert retry["backoff"] == {"initial": 5.0, "multiplier": 2.0, "maximum": 60.0, "jitter": 0}
    assert retry["dead_letter_stream"] == "DLQ-inventory"

    messages = document["components"]["messages"]
    assert sorted(messages) == [
        "shop.inventory.v1.StockRejected",
        "shop.inventory.v1.StockReserved",
        "shop.orders.v1.OrderCreated",
    ]
    order = messages["shop.orders.v1.OrderCreated"]
    assert order["name"] == "shop.orders.v1.OrderCreated"
    assert order["contentType"] == "application/protobuf"
    assert order["payload"]["schemaFormat"] == "application/vnd.google.protobuf;version=3"
    assert "message OrderCreated {\n  string order_id = 1;" in order["payload"]["schema"]
    assert order["headers"]["properties"]["ce-type"]["const"] == "shop.orders.v1.OrderCreated"
    assert order["headers"]["required"] == ["ce-specversion", "ce-id", "ce-source", "ce-type"]
    # Both inventory events share a file: the mark tells AsyncAPI tools which message is the payload.
    for name in ("StockRejected", "StockReserved"):
        schema = messages[f"shop.inventory.v1.{name}"]["payload"]["schema"]
        assert schema.count("// @RootNode") == 1
        assert f"// @RootNode\nmessage {name} {{" in schema


def test_the_headers_schema_accepts_what_the_publisher_sends_and_only_its_type() -> None:
    document = asyncapi_document(build_app({}))
    headers_schema = document["components"]["messages"]["shop.orders.v1.OrderCreated"]["headers"]
    validator = Draft7Validator(headers_schema, format_checker=Draft7Validator.FORMAT_CHECKER)
    encoded = EventEncoder("/services/orders").encode(
        OrderCreated(order_id="o-1", items=[LineItem(sku="apple", quantity=1)]),
        "orders.created",
        key="o-1",
        correlation_id="c-1",
        causation_id="e-0",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    assert _errors(validator, encoded.headers) == []
    json_encoded = EventEncoder("/services/orders", content_type=JSON).encode(OrderCreated(), "orders.created")
    assert _errors(validator, json_encoded.headers) == []
    other_type = EventEncoder("/services/inventory").encode(StockReserved(order_id="o-1"), "inventory.reserved")
    assert any("ce-type" in e for e in _errors(validator, other_type.headers))
    missing_id = {k: v for k, v in encoded.headers.items() if k != "ce-id"}
    assert _errors(validator, missing_id)


def test_wildcard_subjects_become_valid_channel_ids(asyncapi_schema: Draft7Validator) -> None:
    app = App(
        "audit",
        streams=[Stream("INVENTORY", ("inventory.>",)), Stream("AUDIT", ("audit.>",))],
        publishes=[Publication(StockRejected, "audit.*.rejected"), Publication(StockRejected, "audit.any.rejected")],
        content_type=JSON,
    )

    @app.handler(StockReserved, StockRejected, stream=Stream("INVENTORY", ("inventory.>",)), subject="inventory.>")
    async def record(event: StockReserved | StockRejected) -> None:
        """Keep every stock decision for the auditors."""
        del event

    document = asyncapi_document(app)
    _assert_valid(asyncapi_schema, document)
    assert {cid: c["address"] for cid, c in document["channels"].items()} == {
        "inventory.all": "inventory.>",
        "audit.any.rejected": "audit.*.rejected",
        "audit.any.rejected-2": "audit.any.rejected",
    }
    assert document["operations"]["record"]["summary"] == "Keep every stock decision for the auditors."
    assert len(document["operations"]["record"]["messages"]) == 2
    assert document["defaultContentType"] == JSON
    assert document["components"]["messages"]["shop.inventory.v1.StockRejected"]["contentType"] == JSON


def test_servers_come_from_the_url_without_credentials(asyncapi_schema: Draft7Validator) -> None:
    document = asyncapi_document(
        orders_service(), servers=["nats://alice:s3cret@nats-1.example:4222", "tls://nats-2.example", "[::1]:4223"]
    )
    _assert_valid(asyncapi_schema, document)
    assert document["servers"] == {
        "nats-1": {"host": "nats-1.example:4222", "protocol": "nats"},
        "nats-2": {"host": "nats-2.example", "protocol": "nats", "description": "NATS over TLS."},
        "nats-3": {"host": "[::1]:4223", "protocol": "nats"},
    }
    assert "s3cret" not in json.dumps(document)


def test_asyncapi_command_writes_the_document(asyncapi_schema: Draft7Validator, tmp_path: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    target = "eventwire.demo:inventory_service()"
    result = runner.invoke(cli, ["asyncapi", target, "--version", "3.2.1", "--url", "nats://127.0.0.1:4222"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    _assert_valid(asyncapi_schema, document)
    assert document["info"]["version"] == "3.2.1"
    assert document["servers"] == {"nats": {"host": "127.0.0.1:4222", "protocol": "nats"}}

    out = tmp_path / "inventory.asyncapi.json"
    result = runner.invoke(cli, ["asyncapi", target, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text(encoding="utf-8")) == asyncapi_document(inventory_service())


def test_asyncapi_command_names_what_it_cannot_load() -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(cli, ["asyncapi", "eventwire.demo:orders_service"])
    assert result.exit_code != 0
    assert "not an eventwire App" in result.output
    result = runner.invoke(cli, ["asyncapi", "eventwire.demo._services:ORDERS()"])
    assert result.exit_code != 0
    assert "not callable" in result.output
    result = runner.invoke(cli, ["asyncapi", "no_such_module:app"])
    assert result.exit_code == 2
    assert "cannot import no_such_module" in result.output
    result = runner.invoke(cli, ["asyncapi", "eventwire.demo:orders_service()", "--url", "nats://host:99999"])
    assert result.exit_code == 1
    assert (
        "error: malformed server URL nats://host:99999: the port is not a number between 0 and 65535" in result.output
    )
    result = runner.invoke(cli, ["asyncapi", "eventwire.demo:orders_service()", "--out", "/no/such/dir/x.json"])
    assert result.exit_code == 1
    assert "error: cannot write /no/such/dir/x.json" in result.output
