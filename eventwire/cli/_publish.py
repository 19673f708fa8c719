"""``eventwire publish``: send one event from the command line, its JSON checked against its contract."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from typing import Annotated

import nats.js.errors
import typer
from google.protobuf import json_format
from google.protobuf.message import Message

from .._app import App
from .._event_json import event_class
from .._publisher import Publisher
from .._streams import key_token
from ..transport import JetStreamTransport, PublishAck
from ._connect import ConnectionFlags, fail, with_connection
from ._targets import AppDir, import_modules


def declared_subject(modules: list[str], event_type: type[Message]) -> str | None:
    """The subject the Apps of ``modules`` declare for ``event_type`` (a Publication), if exactly one does."""
    subjects = {
        publication.subject
        for module in modules
        for value in vars(sys.modules[module]).values()
        if isinstance(value, App)
        for publication in value.publications
        if publication.event_type is event_type and not any(c in publication.subject for c in "*>")
    }
    return subjects.pop() if len(subjects) == 1 else None


def publish(
    event_type: Annotated[str, typer.Argument(metavar="TYPE", help="Full Protobuf name: shop.orders.v1.OrderCreated.")],
    connection: ConnectionFlags,
    data: Annotated[str, typer.Option("--data", help='The event as Protobuf JSON, e.g. \'{"orderId": "o-1"}\'.')],
    imports: Annotated[
        list[str] | None,
        typer.Option(
            "--import",
            help="Module(s) defining the event class (and Apps declaring its subject); "
            "without: the latest version in the schema registry.",
        ),
    ] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", help="Default: the subject an imported App's Publication declares.")
    ] = None,
    key: Annotated[str | None, typer.Option("--key", help="The entity the event is about (ce-subject).")] = None,
    msg_id: Annotated[str | None, typer.Option("--msg-id", help="Dedup id; default: the event id.")] = None,
    source: Annotated[str, typer.Option("--source", help="The event's CloudEvents source.")] = "/cli",
    app_dir: AppDir = None,
) -> None:
    """Publish one event with the full envelope and print the stream's ack.

    The event's class is the one --import defines, else the latest version the schema registry holds.
    """
    imports = imports or []
    import_modules(imports, app_dir)
    found = event_class(event_type)
    if found is None and imports:
        fail(f"type {event_type} is not defined by --import {' '.join(imports)}", 2)
    target = subject or (declared_subject(imports, found) if found is not None else None)
    if target is None:
        fail(f"--subject: no imported App declares one Publication of {event_type}; name the subject", 2)

    options = dataclasses.replace(connection.require(), name="eventwire-publish")

    async def main() -> PublishAck:
        transport = await JetStreamTransport.connect(options)
        try:
            event = _parsed(found or await _registered_class(transport, event_type), event_type, data)
            wire = await _wire_subject(transport, target, key)
            publisher = Publisher(transport, source=source, deadline=10.0)
            return await publisher.publish(event, subject=wire, key=key, msg_id=msg_id)
        finally:
            await transport.close()

    ack = asyncio.run(main())
    if ack.duplicate:
        typer.echo(f"{event_type} on {target}: a duplicate of {ack.stream} sequence {ack.sequence}, not stored again")
    else:
        typer.echo(f"{event_type} on {target}: stored in {ack.stream} at sequence {ack.sequence}")


def _parsed(found: type[Message], event_type: str, data: str) -> Message:
    event = found()
    try:
        json_format.Parse(data, event)
    except json_format.ParseError as exc:
        fail(f"--data does not fit {event_type}: {str(exc).splitlines()[0]}", 2)
    return event


async def _registered_class(transport: JetStreamTransport, event_type: str) -> type[Message]:
    """The class of the latest registered version of ``event_type``."""
    from ..registry import SchemaRegistry

    registry = await SchemaRegistry.open(transport, create=False)
    versions = await registry.versions(event_type) if registry is not None else []
    found = await registry.message_class(versions[-1].schema_id) if registry is not None and versions else None
    if found is None:
        fail(f"type {event_type} is not in the schema registry: pass --import with the module defining it", 2)
    return found


async def _wire_subject(transport: JetStreamTransport, subject: str, key: str | None) -> str:
    """Where the event goes: ``subject``, or on a partitioned stream the subject with the key's token after it."""
    js = transport.nc.jetstream()
    for wire in (subject, *([f"{subject}.{key_token(key)}"] if key is not None else [])):
        try:
            await js.find_stream_name_by_subject(wire)
        except nats.js.errors.NotFoundError:
            continue
        return wire
    fail(f"no stream captures {subject}" + ("" if key is not None else " (a partitioned stream needs --key)"))


publish_command = with_connection()(publish)
