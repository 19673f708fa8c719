from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from eventwire import ContractError, DecodeError, EventRegistry
from eventwire.contracts import JSON, PROTOBUF, codec_for, compile_protos, event_type_of, schema_ref

from .events import LineItem, OrderCreated, StockRejected, make_event_class

DEMO = Path(__file__).parent.parent / "eventwire" / "demo"


def test_cloudevents_type_is_the_full_protobuf_name() -> None:
    assert event_type_of(OrderCreated) == "shop.orders.v1.OrderCreated"
    registry = EventRegistry([OrderCreated, StockRejected])
    assert registry.get("shop.orders.v1.OrderCreated") is OrderCreated
    assert list(registry) == ["shop.inventory.v1.StockRejected", "shop.orders.v1.OrderCreated"]
    assert "shop.orders.v1.Nope" not in registry


@pytest.mark.parametrize(
    ("package", "name"),
    [
        ("shop.orders.v1", "PaymentFailed"),
        ("shop.orders.v2", "StockSold"),
        ("billing.v1beta1", "InvoiceSent"),
        ("shop.v10", "OrderPaid"),
        ("identity.v1", "UserSignedUp"),
        ("shop.cart.v1", "ItemAddedToCart"),
        ("billing.v1", "PaymentMethodSetUp"),
    ],
)
def test_valid_names_register(package: str, name: str) -> None:
    event_class = make_event_class(package, name)
    assert EventRegistry([event_class]).get(f"{package}.{name}") is event_class


@pytest.mark.parametrize(
    ("package", "name", "reason"),
    [
        ("shop.orders", "OrderCreated", "version"),
        ("", "OrderCreated", "version"),
        ("shop.orders.version1", "OrderCreated", "version"),
        ("shop.orders.v1", "OrderEvent", "Event"),
        ("shop.orders.v1", "OrderCreatedEvent", "Event"),
        ("shop.orders.v1", "CreateOrder", "past-tense"),
        ("shop.orders.v1", "CreatedOrder", "past-tense"),  # the verb must follow the noun
        ("shop.orders.v1", "Created", "noun"),
        ("shop.orders.v1", "order_created", "PascalCase"),
    ],
)
def test_contract_rules_are_checked_at_registration(package: str, name: str, reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        EventRegistry().register(make_event_class(package, name))


def test_two_classes_cannot_claim_one_type() -> None:
    registry = EventRegistry([make_event_class("a.v1", "ThingHappened")])
    same = registry.get("a.v1.ThingHappened")
    assert same is not None
    registry.register(same)  # the same class again: harmless
    with pytest.raises(ContractError, match="already registered"):
        registry.register(make_event_class("a.v1", "ThingHappened"))


def test_non_message_is_refused() -> None:
    with pytest.raises(ContractError):
        EventRegistry().register(dict)  # type: ignore[type-var]


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_codecs_round_trip(content_type: str) -> None:
    codec = codec_for(content_type)
    event = OrderCreated(order_id="o-1", items=[LineItem(sku="a", quantity=2)], total_cents=1299, created_at_ms=1)
    assert codec.decode(codec.encode(event), OrderCreated) == event


def test_json_codec_uses_protobuf_json_mapping_and_ignores_unknown_fields() -> None:
    codec = codec_for(JSON)
    assert b'"orderId": "o-1"' in codec.encode(OrderCreated(order_id="o-1"))
    assert codec.decode(b'{"orderId": "o-2", "addedLater": 1}', OrderCreated) == OrderCreated(order_id="o-2")


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        (PROTOBUF, b"\x0a\xff"),
        (PROTOBUF, b"\xff\xff\xff"),
        (JSON, b"{"),
        (JSON, b'{"totalCents": "x"}'),
        (JSON, b"\xff"),
    ],
)
def test_undecodable_payloads_raise_decode_error(content_type: str, data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec_for(content_type).decode(data, OrderCreated)


def test_unsupported_content_type() -> None:
    with pytest.raises(DecodeError, match="unsupported"):
        codec_for("text/csv")
    assert codec_for("application/json; charset=utf-8") is codec_for(JSON)


def test_schema_ref_changes_with_the_message_shape() -> None:
    first = schema_ref(make_event_class("a.v1", "ThingHappened"))
    assert first == schema_ref(make_event_class("a.v1", "ThingHappened"))
    assert first.startswith("urn:eventwire:schema:a.v1.ThingHappened:")
    assert first != schema_ref(make_event_class("a.v1", "ThingDone"))


def test_committed_demo_contracts_match_their_proto_sources(tmp_path: Path) -> None:
    generated = compile_protos(DEMO / "proto", tmp_path)
    assert len(generated) == 6  # orders, inventory, payments: a module and a stub each
    for path in generated:
        committed = DEMO / "contracts" / path.relative_to(tmp_path)
        assert filecmp.cmp(path, committed, shallow=False), f"{committed} is stale: regenerate it"


def test_compile_without_protos_fails(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match=r"no \.proto"):
        compile_protos(tmp_path, tmp_path / "out")
