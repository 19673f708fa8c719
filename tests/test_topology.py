"""``eventwire topology``: who publishes and who consumes each event, as Mermaid and as a self-contained page."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eventwire import App, ConfigError
from eventwire._topology import build_topology, mermaid_text, to_mermaid
from eventwire._topology_html import to_html
from eventwire.cli import cli

from .services.topology_apps import ODD_SUBJECT, inventory, notifications, orders

APPS = [f"tests.services.topology_apps:{name}" for name in ("orders", "inventory", "notifications")]
EXPECTED_WARNINGS = [
    "shop.inventory.v1.StockRejected is published by inventory on inventory.rejected "
    "but consumed by none of the listed services",
    "shop.orders.v1.OrderCreated: notifications (svc-archive-mail) consumes it on orders.archived, "
    "where it is never published (published on orders.created)",
    "shop.payments.v1.PaymentFailed is consumed by notifications (svc-payment-alerts) "
    "but published by none of the listed services",
]


def _node_ids(mermaid: str) -> dict[str, str]:
    """Label → node id, from lines like ``service1["orders"]`` and ``event1(["shop.orders.v1.OrderCreated"])``."""
    return {label: node for node, label in re.findall(r'^  (\w+)\(?\["([^"]*)"\]\)?:::\w+$', mermaid, re.MULTILINE)}


def test_mermaid_draws_each_publisher_and_consumer_of_each_event() -> None:
    mermaid = to_mermaid(build_topology([orders, inventory, notifications]))
    assert mermaid.startswith("flowchart LR\n")
    ids = _node_ids(mermaid)
    orders_id, inventory_id, notifications_id = ids["orders"], ids["inventory"], ids["notifications"]
    created, reserved = ids["shop.orders.v1.OrderCreated"], ids["shop.inventory.v1.StockReserved"]
    edges = set(re.findall(r'^  (\w+) -->\|"([^"]*)"\| (\w+)$', mermaid, re.MULTILINE))
    assert edges == {
        (orders_id, "orders.created", created),
        (created, "svc-inventory", inventory_id),
        (created, "svc-archive-mail", notifications_id),
        (inventory_id, "inventory.reserved", reserved),
        (inventory_id, mermaid_text(ODD_SUBJECT), reserved),
        (reserved, "svc-notifications", notifications_id),
        (inventory_id, "inventory.rejected", ids["shop.inventory.v1.StockRejected"]),
        (ids["shop.payments.v1.PaymentFailed"], "svc-payment-alerts", notifications_id),
    }
    assert [line.removeprefix("  %% warning: ") for line in mermaid.splitlines() if "%%" in line] == EXPECTED_WARNINGS


def test_mermaid_labels_hold_no_character_that_mermaid_would_read() -> None:
    assert mermaid_text(ODD_SUBJECT) == "audit.#34;stock#34;#60;all#35;1#38;#124;"
    assert mermaid_text("orders.>") == "orders.#62;"
    mermaid = to_mermaid(build_topology([inventory]))
    assert ODD_SUBJECT not in mermaid
    for line in mermaid.splitlines()[1:]:
        assert re.fullmatch(
            r'  (%% .*|\w+\(?\["[^"]*"\]\)?:::\w+|\w+ -->\|"[^"|]*"\| \w+|classDef \w+ [\w:#,.\- ]+)', line
        ), line


def test_events_published_or_consumed_by_no_listed_app_are_warnings() -> None:
    topology = build_topology([orders, inventory, notifications])
    assert topology.warnings == EXPECTED_WARNINGS
    assert [flow.ce_type for flow in topology.events if not flow.warnings] == ["shop.inventory.v1.StockReserved"]
    only_orders = build_topology([orders])
    assert only_orders.warnings == [
        "shop.orders.v1.OrderCreated is published by orders on orders.created "
        "but consumed by none of the listed services"
    ]


def test_an_app_listed_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="two Apps are named 'orders'"):
        build_topology([orders, App("orders")])


class _Page(HTMLParser):
    """Collects tags, attributes and text, and checks that every element is closed where it was opened."""

    VOID = frozenset({"meta", "br", "link", "img", "input", "hr", "path", "rect"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(name, value or "") for name, value in attrs]
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(name, value or "") for name, value in attrs]

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_page_is_self_contained_and_shows_graph_table_warnings_and_mermaid() -> None:
    topology = build_topology([orders, inventory, notifications])
    page = _Page()
    page.feed(to_html(topology))
    page.close()
    assert page.open == []
    assert not {"script", "link", "iframe", "img", "object", "embed"} & set(page.tags)
    for name, value in page.attributes:
        assert not re.match(r"\s*(https?:)?//", value), (name, value)
        if "url(" in value:
            assert value.startswith("url(#"), (name, value)
    text = "".join(page.text)
    assert not re.search(r"https?:|@import|url\(", text)
    assert "svg" in page.tags and page.tags.count("rect") == 2 + 4 + 2  # publishers, events, consumers
    assert ODD_SUBJECT in text  # escaped in the markup, intact once parsed
    for warning in EXPECTED_WARNINGS:
        assert warning in text
    assert to_mermaid(topology) in text  # the <pre> block, unescaped by the parser


def test_svg_puts_publishers_left_events_middle_and_consumers_right() -> None:
    svg = to_html(build_topology([orders, inventory, notifications]))
    boxes = re.findall(r'<g class="(\w+)"><rect x="([\d.]+)"[^>]*/><text [^>]*>([^<]*)</text></g>', svg)
    columns: dict[str, list[float]] = {}
    for _, x, label in boxes:
        columns.setdefault(label, []).append(float(x))
    left, right = columns["orders"][0], columns["notifications"][0]
    events = [float(x) for css_class, x, _ in boxes if css_class in ("event", "unmatched")]
    assert len(events) == 4 and len(set(events)) == 1
    assert left < events[0] < right
    assert columns["inventory"] == [left, right]  # it publishes and consumes: drawn on both sides
    assert ("unmatched", "shop.payments.v1.PaymentFailed") in {(c, label) for c, _, label in boxes}


def test_topology_command_writes_mermaid_or_html(tmp_path: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(cli, ["topology", *APPS])
    assert result.exit_code == 0, result.output
    assert result.stdout == to_mermaid(build_topology([orders, inventory, notifications]))
    assert result.stderr.splitlines() == [f"warning: {w}" for w in EXPECTED_WARNINGS]

    out = tmp_path / "topology.html"
    result = runner.invoke(cli, ["topology", *APPS, "--format", "html", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == to_html(build_topology([orders, inventory, notifications]))
    assert f"wrote {out}" in result.stderr


def test_topology_command_refuses_a_target_that_is_not_an_app() -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(cli, ["topology", APPS[0], "tests.services.topology_apps:ODD_SUBJECT"])
    assert result.exit_code != 0
    assert "not an eventwire App" in result.output
