"""``eventwire topology``: which service publishes and which consumes each event type, across Apps.

Built from the Apps' declarations only (:class:`~eventwire.Publication` and
handlers): no server is asked. Drawn as Mermaid here and as a self-contained
HTML page in ``_topology_html``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._app import App
from ._errors import ConfigError
from ._streams import subjects_overlap
from .contracts import event_type_of


@dataclass(frozen=True, slots=True)
class Publishing:
    """``service`` declared that it publishes the event on ``subject``."""

    service: str
    subject: str


@dataclass(frozen=True, slots=True)
class Subscription:
    """``service``'s ``handler`` consumes the event through durable ``durable`` filtered on ``subject``."""

    service: str
    handler: str
    durable: str
    subject: str


@dataclass(slots=True)
class EventFlow:
    """One event type (by CloudEvents type) with its publishers and consumers."""

    ce_type: str
    publishers: list[Publishing] = field(default_factory=list)
    consumers: list[Subscription] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Topology:
    services: tuple[str, ...]
    events: tuple[EventFlow, ...]

    @property
    def warnings(self) -> list[str]:
        return [warning for event in self.events for warning in event.warnings]


def build_topology(apps: Sequence[App]) -> Topology:
    """The topology of ``apps``; events that no listed App publishes or consumes carry warnings."""
    services: list[str] = []
    events: dict[str, EventFlow] = {}
    for app in apps:
        if app.name in services:
            raise ConfigError(f"two Apps are named {app.name!r}: each service must be listed once")
        services.append(app.name)
        for publication in app.publications:
            ce_type = event_type_of(publication.event_type)
            flow = events.setdefault(ce_type, EventFlow(ce_type))
            flow.publishers.append(Publishing(app.name, publication.subject))
        for spec in app.handlers:
            subscription = Subscription(app.name, spec.name, spec.durable.name, spec.subject)
            for event_type in spec.event_types:
                ce_type = event_type_of(event_type)
                events.setdefault(ce_type, EventFlow(ce_type)).consumers.append(subscription)
    for flow in events.values():
        flow.warnings.extend(_warnings(flow))
    return Topology(tuple(services), tuple(events[ce_type] for ce_type in sorted(events)))


def _warnings(flow: EventFlow) -> list[str]:
    if not flow.publishers:
        consumers = ", ".join(f"{c.service} ({c.durable})" for c in flow.consumers)
        return [f"{flow.ce_type} is consumed by {consumers} but published by none of the listed services"]
    if not flow.consumers:
        publishers = ", ".join(f"{p.service} on {p.subject}" for p in flow.publishers)
        return [f"{flow.ce_type} is published by {publishers} but consumed by none of the listed services"]
    subjects = [p.subject for p in flow.publishers]
    return [
        f"{flow.ce_type}: {c.service} ({c.durable}) consumes it on {c.subject}, "
        f"where it is never published (published on {', '.join(subjects)})"
        for c in flow.consumers
        if not any(subjects_overlap(c.subject, subject) for subject in subjects)
    ]


# Mermaid labels are quoted; anything beyond these characters is written as an entity code (#62; for '>').
_MERMAID_PLAIN = re.compile(r"[A-Za-z0-9 ._:/,()+=@-]")


def mermaid_text(text: str) -> str:
    """``text`` safe inside a double-quoted Mermaid label."""
    return "".join(c if _MERMAID_PLAIN.fullmatch(c) else f"#{ord(c)};" for c in text)


def to_mermaid(topology: Topology) -> str:
    """A ``flowchart LR``: service --subject--> event --durable--> service."""
    service_ids = {name: f"service{number}" for number, name in enumerate(topology.services, start=1)}
    lines = ["flowchart LR"]
    lines += [f"  %% warning: {mermaid_text(warning)}" for warning in topology.warnings]
    lines += [f'  {node}["{mermaid_text(name)}"]:::service' for name, node in service_ids.items()]
    for number, flow in enumerate(topology.events, start=1):
        event = f"event{number}"
        style = "unmatched" if flow.warnings else "event"
        lines.append(f'  {event}(["{mermaid_text(flow.ce_type)}"]):::{style}')
        lines += [f'  {service_ids[p.service]} -->|"{mermaid_text(p.subject)}"| {event}' for p in flow.publishers]
        lines += [f'  {event} -->|"{mermaid_text(c.durable)}"| {service_ids[c.service]}' for c in flow.consumers]
    lines += [
        "  classDef service fill:#e8f0fe,stroke:#3b6fd8",
        "  classDef event fill:#fff4e0,stroke:#c77d1e",
        "  classDef unmatched fill:#fff4e0,stroke:#c0392b,stroke-dasharray:5 5",
    ]
    return "\n".join(lines) + "\n"
