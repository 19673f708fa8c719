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
    # One edge per pair of nodes: a service publishing a type on two subjects gets one edge with both.
    publish_edges: dict[tuple[str, str], list[str]] = {}
    consume_edges: dict[tuple[str, str], list[str]] = {}
    for flow in topology.events:
        for p in flow.publishers:
            publish_edges.setdefault((p.service, flow.ce_type), []).append(p.subject)
        for c in flow.consumers:
            consume_edges.setdefault((flow.ce_type, c.service), []).append(c.durable)
    unmatched = {flow.ce_type for flow in topology.events if flow.warnings}
    return layered_svg(
        [
            [(service, "service") for service, _ in publish_edges],
            [(ce_type, "unmatched" if ce_type in unmatched else "event") for ce_type in events],
            [(service, "service") for _, service in consume_edges],
        ],
        [
            *(
                Edge(0, service, 1, ce_type, ", ".join(subjects))
                for (service, ce_type), subjects in publish_edges.items()
            ),
            *(Edge(1, ce_type, 2, service, ", ".join(names)) for (ce_type, service), names in consume_edges.items()),
        ],
        "Event topology graph",
    )


@dataclass(frozen=True, slots=True)
class Edge:
    """An arrow from node ``source`` in column ``source_column`` to ``target`` in the next column."""

    source_column: int
    source: str
    target_column: int
    target: str
    label: str


def layered_svg(
    columns: Sequence[Sequence[tuple[str, str]]], edges: Sequence[Edge], title: str, anchor: int = 1
) -> str:
    """Columns of ``(label, css class)`` nodes, left to right, and labelled curves between neighbours.

    A node listed twice in a column is drawn once. Column ``anchor`` keeps its order; each other column is
    sorted by the mean row of its neighbours one column nearer the anchor, which keeps most edges from
    crossing.
    """
    ordered: list[list[tuple[str, str]]] = [list(dict.fromkeys(column)) for column in columns]
    for number in sorted(range(len(ordered)), key=lambda n: abs(n - anchor)):
        if number == anchor:
            continue
        nearer = number + 1 if number < anchor else number - 1
        row_of = {label: i for i, (label, _) in enumerate(ordered[nearer])}
        neighbours: dict[str, list[int]] = {}
        for edge in edges:
            ends = {edge.source_column: edge.source, edge.target_column: edge.target}
            if set(ends) == {number, nearer} and ends[nearer] in row_of:
                neighbours.setdefault(ends[number], []).append(row_of[ends[nearer]])
        ordered[number].sort(key=lambda node: sum(neighbours.get(node[0], [0])) / len(neighbours.get(node[0], [0])))
    gap = max(160.0, _text_width(max((e.label for e in edges), key=len, default="")) + 60)
    rows = max((len(column) for column in ordered), default=1) or 1
    height = rows * _ROW_PITCH + 2 * _MARGIN
    x = float(_MARGIN)
    boxes: list[dict[str, _Box]] = []
    for column in ordered:
        width = max(120.0, _text_width(max((label for label, _ in column), key=len, default="")) + 2 * _PADDING)
        top = _MARGIN + (rows - len(column)) * _ROW_PITCH / 2
        boxes.append({label: _Box(label, css, x, top + i * _ROW_PITCH, width) for i, (label, css) in enumerate(column)})
        x += width + gap
    width_total = x - gap + _MARGIN
    parts = [
        f'<svg viewBox="0 0 {width_total:.0f} {height:.0f}" width="{width_total:.0f}" height="{height:.0f}" '
        f'role="img" aria-label="{escape(title)}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#6b7385"/></marker></defs>',
    ]
    placed: list[_Label] = []
    for edge in edges:
        start = boxes[edge.source_column][edge.source].right
        parts.append(_edge(start, boxes[edge.target_column][edge.target].left, edge.label, placed))
    parts += [_node(box, box.css_class) for column in boxes for box in column.values()]
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
