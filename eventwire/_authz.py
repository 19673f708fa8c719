"""Least-privilege NATS permissions for services, derived from their Apps' declarations (``eventwire authz``).

A service may publish what it declares it publishes, its dead letters, the JetStream API requests that
provision its own streams and durables and pull from them, the acks of its own durables (in both forms
nats-server sends), and the schema registry's keys of the types it publishes; it may subscribe to its own
reply inbox only. What it does not declare it cannot do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from ._app import App
from ._streams import partitioned_stream_for
from .registry import BUCKET


@dataclass(frozen=True)
class Grant:
    """What one service may publish and subscribe to; it connects with ``inbox_prefix``."""

    service: str
    inbox_prefix: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def inbox_prefix_of(service: str) -> str:
    return f"_INBOX_{service}"


def grant_for(app: App) -> Grant:
    publish: list[str] = [
        # On a partitioned stream an event's key is one more token.
        publication.subject + ".*" if partitioned_stream_for(app.streams, publication.subject) else publication.subject
        for publication in app.publications
    ]
    streams = list(app.streams)
    dead_letters = app.dead_letter_stream if app.handlers else None
    if dead_letters is not None:
        streams.append(dead_letters)
        publish += dead_letters.subjects
    for stream in streams:
        publish += [f"$JS.API.STREAM.{verb}.{stream.name}" for verb in ("INFO", "CREATE", "UPDATE")]
    for spec in app.handlers:
        for consumed in spec.durables:
            on, durable = consumed.stream, consumed.name
            # A pinned durable is made with CONSUMER.CREATE (nats-py's DURABLE.CREATE has no priority fields).
            create = "CONSUMER.CREATE" if consumed.pinned else "CONSUMER.DURABLE.CREATE"
            publish += [
                f"$JS.API.CONSUMER.INFO.{on}.{durable}",
                f"$JS.API.{create}.{on}.{durable}",
                f"$JS.API.CONSUMER.MSG.NEXT.{on}.{durable}",
                f"$JS.ACK.{on}.{durable}.>",
                f"$JS.ACK.*.*.{on}.{durable}.>",
            ]
            if consumed.pinned:
                publish.append(f"$JS.API.CONSUMER.UNPIN.{on}.{durable}")
    if app.registers_schemas and app.publications:
        publish += _registry_grant(app)
    prefix = inbox_prefix_of(app.name)
    return Grant(app.name, prefix, tuple(dict.fromkeys(publish)), (f"{prefix}.>",))


def _registry_grant(app: App) -> list[str]:
    """Reading and writing the schema registry's keys of the types ``app`` publishes, and making the bucket."""
    stream = f"KV_{BUCKET}"
    keys = [
        f"$KV.{BUCKET}.{key}"
        for event_type in dict.fromkeys(p.event_type.DESCRIPTOR.full_name for p in app.publications)
        for key in (f"types.{event_type}", f"schemas.{event_type}.*")
    ]
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.CREATE.{stream}",
        *keys,
        *(f"$JS.API.DIRECT.GET.{stream}.{key}" for key in keys),
    ]


def grants_for(apps: Sequence[App]) -> list[Grant]:
    return [grant_for(app) for app in apps]


def _variable(service: str) -> str:
    return service.upper().replace("-", "_") + "_PERMISSIONS"


def to_conf(grants: Sequence[Grant]) -> str:
    """nats-server configuration: one permissions variable per service, and the users block that uses them."""
    lines = [
        f"# eventwire authz: least-privilege permissions for {len(grants)} service(s).",
        "# Each service connects with its inbox prefix (ConnectOptions.inbox_prefix, --inbox-prefix or",
        "# EVENTWIRE_INBOX_PREFIX), so its replies stay on subjects only it may subscribe to.",
        "",
    ]
    for grant in grants:
        lines.append(f"# {grant.service}: inbox prefix {grant.inbox_prefix}")
        lines.append(f"{_variable(grant.service)} = {{")
        for verb, subjects in (("publish", grant.publish), ("subscribe", grant.subscribe)):
            lines.append(f"  {verb}: {{ allow: [")
            lines += [f"    {json.dumps(subject)}" for subject in subjects]
            lines.append("  ] }")
        lines.append("}")
        lines.append("")
    lines.append("# Use them, with your own way of authenticating each service:")
    lines.append("# authorization { users = [")
    for grant in grants:
        upper = grant.service.upper().replace("-", "_")
        lines.append(
            f'#   {{ user: "{grant.service}", password: ${upper}_PASSWORD, permissions: ${_variable(grant.service)} }}'
        )
    lines.append("# ] }")
    return "\n".join(lines) + "\n"


def to_json(grants: Sequence[Grant]) -> str:
    services = [
        {
            "service": grant.service,
            "inbox_prefix": grant.inbox_prefix,
            "publish": list(grant.publish),
            "subscribe": list(grant.subscribe),
        }
        for grant in grants
    ]
    return json.dumps({"services": services}, indent=2) + "\n"
