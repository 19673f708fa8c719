"""The topology as one self-contained HTML page: an inline SVG graph, a table, warnings, the Mermaid source.

No script and no stylesheet is fetched: the page must open from a CI artifact or
an air-gapped laptop, so the graph is laid out here in three layers —
publishers left, events in the middle, consumers right — instead of by mermaid.js.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from ._topology import Topology, to_mermaid

# The SVG text is monospace, so a label's width follows from its length.
_CHAR_WIDTH = 7.8
_NODE_HEIGHT = 34
_ROW_PITCH = 56
_MARGIN = 20
_PADDING = 14
# Edge labels are 11px against the 13px of node labels; they try these points along the curve, in order.
_LABEL_SCALE = 11 / 13
_LABEL_HEIGHT = 14
_LABEL_POSITIONS = (0.5, 0.3, 0.7, 0.15, 0.85)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1d2330; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #c9ced8; padding: .35rem .6rem; text-align: left; vertical-align: top; }
th { background: #f1f3f7; }
code, pre, svg text { font-family: ui-monospace, Menlo, Consolas, monospace; }
pre { background: #f6f8fa; padding: 1rem; overflow-x: auto; }
svg { max-width: 100%; height: auto; }
svg text { font-size: 13px; }
.service rect { fill: #e8f0fe; stroke: #3b6fd8; }
.event rect { fill: #fff4e0; stroke: #c77d1e; }
.unmatched rect { fill: #fff4e0; stroke: #c0392b; stroke-dasharray: 5 5; }
.edge path { fill: none; stroke: #6b7385; stroke-width: 1.3; }
.edge text { fill: #4a5263; font-size: 11px; paint-order: stroke; stroke: #fff; stroke-width: 4px; }
.warning { color: #a4281b; }
"""


@dataclass(frozen=True, slots=True)
class _Box:
    label: str
    css_class: str
    x: float
    y: float
    width: float

    @property
    def left(self) -> tuple[float, float]:
        return self.x, self.y + _NODE_HEIGHT / 2

    @property
    def right(self) -> tuple[float, float]:
        return self.x + self.width, self.y + _NODE_HEIGHT / 2


def to_html(topology: Topology) -> str:
    warnings = topology.warnings
    warning_items = "".join(f'<li class="warning">{escape(w)}</li>' for w in warnings) or "<li>none</li>"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Event topology: {escape(', '.join(topology.services))}</title>\n"
        f"<style>{_STYLE}</style>\n</head>\n<body>\n"
        "<h1>Event topology</h1>\n"
        f"<p>Services: {', '.join(f'<code>{escape(s)}</code>' for s in topology.services)}</p>\n"
        f"{_svg(topology)}\n"
        f"<h2>Events</h2>\n{_table(topology)}\n"
        f"<h2>Warnings</h2>\n<ul>{warning_items}</ul>\n"
        f"<h2>Mermaid</h2>\n<pre>{escape(to_mermaid(topology))}</pre>\n"
        "</body>\n</html>\n"
    )


def _table(topology: Topology) -> str:
    rows = []
    for flow in topology.events:
        publishers = "<br>".join(f"{escape(p.service)} on <code>{escape(p.subject)}</code>" for p in flow.publishers)
        consumers = "<br>".join(
            f"{escape(c.service)}: {escape(c.handler)} (durable <code>{escape(c.durable)}</code>) "
            f"on <code>{escape(c.subject)}</code>"
            for c in flow.consumers
        )
        rows.append(
            f"<tr><td><code>{escape(flow.ce_type)}</code></td>"
            f"<td>{publishers or '<em>none</em>'}</td><td>{consumers or '<em>none</em>'}</td></tr>"
        )
    return (
        "<table>\n<thead><tr><th>event (ce-type)</th><th>published by</th><th>consumed by</th></tr></thead>\n"
        f"<tbody>\n{chr(10).join(rows)}\n</tbody>\n</table>"
    )


def _svg(topology: Topology) -> str:
    events = [flow.ce_type for flow in topology.events]
    event_row = {ce_type: row for row, ce_type in enumerate(events)}
    publishes: dict[str, list[int]] = {}
    consumes: dict[str, list[int]] = {}
    for flow in topology.events:
        for p in flow.publishers:
            publishes.setdefault(p.service, []).append(event_row[flow.ce_type])
        for c in flow.consumers:
            consumes.setdefault(c.service, []).append(event_row[flow.ce_type])
    # Each side sorted by the mean row of its events, which keeps most edges from crossing.
    publishers = sorted(publishes, key=lambda s: sum(publishes[s]) / len(publishes[s]))
    consumers = sorted(consumes, key=lambda s: sum(consumes[s]) / len(consumes[s]))
    # One edge per pair of nodes: a service publishing a type on two subjects gets one edge with both.
    publish_edges: dict[tuple[str, str], list[str]] = {}
    consume_edges: dict[tuple[str, str], list[str]] = {}
    for flow in topology.events:
        for p in flow.publishers:
            publish_edges.setdefault((p.service, flow.ce_type), []).append(p.subject)
        for c in flow.consumers:
            consume_edges.setdefault((flow.ce_type, c.service), []).append(c.durable)
    labels = [", ".join(names) for names in (*publish_edges.values(), *consume_edges.values())]
    gap = max(160.0, _text_width(max(labels, key=len, default="")) + 60)
    rows = max(len(publishers), len(events), len(consumers), 1)
    height = rows * _ROW_PITCH + 2 * _MARGIN

    x = float(_MARGIN)
    columns: list[dict[str, _Box]] = []
    for labels, css_class in ((publishers, "service"), (events, "event"), (consumers, "service")):
        width = max(120.0, _text_width(max(labels, key=len, default="")) + 2 * _PADDING)
        top = _MARGIN + (rows - len(labels)) * _ROW_PITCH / 2
        columns.append(
            {label: _Box(label, css_class, x, top + i * _ROW_PITCH, width) for i, label in enumerate(labels)}
        )
        x += width + gap
    width_total = x - gap + _MARGIN
    left, middle, right = columns

    unmatched = {flow.ce_type for flow in topology.events if flow.warnings}
    parts = [
        f'<svg viewBox="0 0 {width_total:.0f} {height:.0f}" width="{width_total:.0f}" height="{height:.0f}" '
        'role="img" aria-label="Event topology graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#6b7385"/></marker></defs>',
    ]
    placed: list[_Label] = []
    for (service, ce_type), subjects in publish_edges.items():
        parts.append(_edge(left[service].right, middle[ce_type].left, ", ".join(subjects), placed))
    for (ce_type, service), durables in consume_edges.items():
        parts.append(_edge(middle[ce_type].right, right[service].left, ", ".join(durables), placed))
    parts += [
        _node(box, "unmatched" if column is middle and box.label in unmatched else box.css_class)
        for column in columns
        for box in column.values()
    ]
    parts.append("</svg>")
    return "\n".join(parts)


def _text_width(text: str) -> float:
    return len(text) * _CHAR_WIDTH


def _node(box: _Box, css_class: str) -> str:
    return (
        f'<g class="{css_class}"><rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" '
        f'height="{_NODE_HEIGHT}" rx="{_NODE_HEIGHT / 2 if css_class != "service" else 4}"/>'
        f'<text x="{box.x + box.width / 2:.1f}" y="{box.y + _NODE_HEIGHT / 2 + 4.5:.1f}" '
        f'text-anchor="middle">{escape(box.label)}</text></g>'
    )


@dataclass(frozen=True, slots=True)
class _Label:
    """Where an edge label sits: its centre and half its size."""

    x: float
    y: float
    half_width: float

    def overlaps(self, other: _Label) -> bool:
        return abs(self.x - other.x) < self.half_width + other.half_width and abs(self.y - other.y) < _LABEL_HEIGHT


def _edge(start: Sequence[float], end: Sequence[float], text: str, placed: list[_Label]) -> str:
    """A curve from ``start`` to ``end`` whose label sits at the first point along it that no placed label covers."""
    (x1, y1), (x2, y2) = start, end
    bend = (x2 - x1) / 2
    half_width = _text_width(text) * _LABEL_SCALE / 2 + 2
    candidates = []
    for t in _LABEL_POSITIONS:
        ease = 3 * t * t - 2 * t * t * t  # the curve's control points make x and y follow this easing
        x = min(max(x1 + (x2 - x1) * ease, x1 + half_width + 6), x2 - half_width - 6)
        candidates.append(_Label(x, y1 + (y2 - y1) * ease - 5, half_width))
    label = next((c for c in candidates if not any(c.overlaps(p) for p in placed)), candidates[0])
    placed.append(label)
    return (
        f'<g class="edge"><path d="M {x1:.1f} {y1:.1f} C {x1 + bend:.1f} {y1:.1f}, {x2 - bend:.1f} {y2:.1f}, '
        f'{x2:.1f} {y2:.1f}" marker-end="url(#arrow)"/>'
        f'<text x="{label.x:.1f}" y="{label.y:.1f}" text-anchor="middle">{escape(text)}</text>'
        f"<title>{escape(text)}</title></g>"
    )
