"""``Publication``: what a service declares it publishes — validated, registered, and never a gate."""

from __future__ import annotations

import pytest

import eventwire
from eventwire import App, ConfigError, ContractError, Publication, Stream
from eventwire._streams import subject_matches
from eventwire.testing import running

from .events import OrderCreated, StockRejected, StockReserved, make_event_class

ORDERS = Stream("ORDERS", ("orders.>",))
INVENTORY = Stream("INVENTORY", ("inventory.*",))


def test_publication_is_exported_and_all_stays_sorted() -> None:
    assert eventwire.Publication is Publication
    assert "Publication" in eventwire.__all__
    assert eventwire.__all__ == sorted(eventwire.__all__)


def test_app_keeps_its_publications_and_registers_their_types() -> None:
    declared = (Publication(StockReserved, "inventory.reserved"), Publication(StockRejected, "inventory.rejected"))
    app = App("inventory", streams=[INVENTORY], publishes=declared)
    assert app.publications == declared
    assert isinstance(app.publications, tuple)
    assert list(app.registry) == ["shop.inventory.v1.StockRejected", "shop.inventory.v1.StockReserved"]
    assert App("quiet").publications == ()


@pytest.mark.parametrize("subject", ["orders.created", "orders.created.*", "orders.>", "orders.eu.*.created"])
def test_a_subject_within_a_stream_may_hold_wildcards(subject: str) -> None:
    assert App("orders", streams=[ORDERS], publishes=[Publication(OrderCreated, subject)]).publications


@pytest.mark.parametrize(
    ("streams", "subject"),
    [
        ([], "orders.created"),
        ([ORDERS], "order.created"),
        ([ORDERS], "orders"),
        ([INVENTORY], "inventory.reserved.eu"),
        ([INVENTORY], "inventory.>"),  # the stream takes one token after inventory, the declaration any number
    ],
)
def test_a_subject_no_stream_covers_is_a_config_error_naming_it(streams: list[Stream], subject: str) -> None:
    with pytest.raises(ConfigError, match=rf"publishes on '{subject}', which no stream of the App covers"):
        App("orders", streams=streams, publishes=[Publication(OrderCreated, subject)])


@pytest.mark.parametrize("subject", ["", "orders..created", "orders created", "orders.>.created", "orders.cre*"])
def test_an_invalid_subject_is_refused_at_construction(subject: str) -> None:
    with pytest.raises(ConfigError, match="invalid subject"):
        Publication(OrderCreated, subject)


def test_a_declaration_must_name_a_protobuf_class_that_follows_the_contract_rules() -> None:
    with pytest.raises(ConfigError, match="Protobuf message class"):
        Publication(dict, "orders.created")  # type: ignore[arg-type]
    with pytest.raises(ContractError, match="past-tense"):
        App("orders", streams=[ORDERS], publishes=[Publication(make_event_class("shop.v1", "CreateOrder"), "orders.x")])


def test_the_same_declaration_twice_is_refused() -> None:
    twice = [Publication(OrderCreated, "orders.created")] * 2
    with pytest.raises(ConfigError, match=r"declares shop.orders.v1.OrderCreated on 'orders.created' twice"):
        App("orders", streams=[ORDERS], publishes=twice)


@pytest.mark.virtual_time
async def test_publishing_an_undeclared_event_still_works() -> None:
    app = App("orders", streams=[ORDERS], publishes=[Publication(OrderCreated, "orders.created")])
    async with running(app):
        ack = await app.publisher.publish(StockRejected(order_id="o-1"), subject="orders.rejected")
    assert ack.stream == "ORDERS"


@pytest.mark.parametrize(
    ("pattern", "subject", "covered"),
    [
        ("orders.>", "orders.*", True),
        ("orders.>", "orders.>", True),
        ("orders.>", "orders.eu.>", True),
        ("orders.*", "orders.*", True),
        ("orders.*", "orders.>", False),
        ("orders.*", "orders.created", True),
        ("orders.created", "orders.*", False),
        ("*.created", "orders.created", True),
        (">", "orders.*.created", True),
        ("orders.*.created", "orders.eu.created", True),
        ("orders.*.created", "orders.eu.created.x", False),
    ],
)
def test_subject_matching_covers_filters(pattern: str, subject: str, covered: bool) -> None:
    assert subject_matches(pattern, subject) is covered
