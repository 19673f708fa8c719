"""``eventwire asyncapi``: an AsyncAPI 3.0.0 document of one App.

Channels are the subjects the App's handlers consume and its
:class:`~eventwire.Publication` declarations publish on; operations are
``receive`` per handler and ``send`` per publication; messages are the event
types, with their ``.proto`` text as a Protobuf payload schema and the
CloudEvents headers eventwire puts on every event. The NATS bindings of
AsyncAPI have no fields for JetStream (the channel binding is reserved and
empty, the operation binding knows only core NATS queue groups, which a
durable is not), so streams, durables and retry policies travel as
``x-eventwire-*`` specification extensions.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message

from ._app import App
from ._backoff import Backoff
from ._connect_options import parse_server_url
from ._delivery import HandlerSpec
from ._envelope import MSG_ID_HEADER, REQUIRED_ATTRIBUTES, SPEC_VERSION
from ._streams import subjects_overlap
from .contracts import JSON, PROTOBUF, event_type_of, schema_ref
from .contracts._proto_source import file_descriptor_proto, render_file

ASYNCAPI_VERSION = "3.0.0"
# Component keys must match ^[\w\d\.\-_]+$; subjects may hold anything but whitespace, '.', '*' and '>'.
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]")
_WILDCARD_IDS = {"*": "any", ">": "all"}

Document = dict[str, Any]


def asyncapi_document(app: App, *, version: str = "1.0.0", servers: Sequence[str] = ()) -> Document:
    """The AsyncAPI 3.0.0 document of ``app``; ``servers`` are NATS URLs (credentials are dropped)."""
    builder = _DocumentBuilder(app)
    for spec in app.handlers:
        builder.add_receive(spec)
    for publication in app.publications:
        builder.add_send(publication.event_type, publication.subject)
    document: Document = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": app.name,
            "version": version,
            "description": f"Events that the {app.name} service receives and sends over NATS JetStream.",
            "x-eventwire-source": app.source,
        },
        "defaultContentType": app.content_type,
    }
    if servers:
        document["servers"] = _servers(servers)
    document["channels"] = builder.channels
    document["operations"] = builder.operations
    document["components"] = {"messages": {name: builder.messages[name] for name in sorted(builder.messages)}}
    return document


class _DocumentBuilder:
    def __init__(self, app: App) -> None:
        self.app = app
        self.channels: dict[str, Document] = {}
        self.operations: dict[str, Document] = {}
        self.messages: dict[str, Document] = {}
        self._channel_ids: dict[str, str] = {}

    def add_receive(self, spec: HandlerSpec) -> None:
        channel_id = self._channel(spec.subject, spec.event_types)
        operation: Document = {"action": "receive", **self._references(channel_id, spec.event_types)}
        summary = inspect.getdoc(spec.func)
        if summary:
            operation["summary"] = summary.splitlines()[0]
        operation["x-eventwire-handler"] = {
            "name": spec.name,
            "concurrency": spec.concurrency,
            "prefetch": spec.prefetch,
            "ordered_by": spec.ordered_by,
            "unknown_types": spec.unknown_types,
            "max_event_bytes": spec.max_event_bytes,
        }
        operation["x-eventwire-durable"] = dataclasses.asdict(spec.durable)
        if spec.partitions:
            operation["x-eventwire-partitions"] = [
                {"durable": d.name, "filter_subject": d.filter_subject} for d in spec.partitions
            ]
        retry = spec.retry
        dead_letters = self.app.dead_letter_stream
        operation["x-eventwire-retry"] = {
            "max_deliveries": retry.max_deliveries,
            "backoff": dataclasses.asdict(retry.backoff) if isinstance(retry.backoff, Backoff) else list(retry.backoff),
            "transient": [error.__name__ for error in retry.transient],
            "permanent": [error.__name__ for error in retry.permanent],
            "dead_letter_stream": dead_letters.name if dead_letters is not None else None,
        }
        self.operations[_unique(spec.name, self.operations)] = operation

    def add_send(self, event_type: type[Message], subject: str) -> None:
        channel_id = self._channel(subject, (event_type,))
        operation_id = _unique(f"send-{event_type.DESCRIPTOR.name}-{channel_id}", self.operations)
        self.operations[operation_id] = {"action": "send", **self._references(channel_id, (event_type,))}

    def _channel(self, subject: str, event_types: Sequence[type[Message]]) -> str:
        channel_id = self._channel_ids.get(subject)
        if channel_id is None:
            tokens = (_WILDCARD_IDS.get(token, token) for token in subject.split("."))
            channel_id = self._channel_ids[subject] = _unique(".".join(tokens), self.channels)
            self.channels[channel_id] = {
                "address": subject,
                "messages": {},
                "x-eventwire-streams": [
                    stream.name
                    for stream in self.app.streams
                    if any(subjects_overlap(pattern, subject) for pattern in stream.subjects)
                ],
            }
        for event_type in event_types:
            name = self._message(event_type)
            self.channels[channel_id]["messages"][name] = {"$ref": f"#/components/messages/{name}"}
        return channel_id

    def _references(self, channel_id: str, event_types: Sequence[type[Message]]) -> Document:
        return {
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [
                {"$ref": f"#/channels/{channel_id}/messages/{event_type_of(event_type)}"} for event_type in event_types
            ],
        }

    def _message(self, event_type: type[Message]) -> str:
        name = event_type_of(event_type)
        if name not in self.messages:
            file = file_descriptor_proto(event_type)
            syntax_version = (file.syntax or "proto2").removeprefix("proto")
            self.messages[name] = {
                "name": name,
                "title": event_type.DESCRIPTOR.name,
                "contentType": self.app.content_type,
                "headers": cloudevents_headers(name),
                "payload": {
                    "schemaFormat": f"application/vnd.google.protobuf;version={syntax_version}",
                    "schema": render_file(file, root=name),
                },
                "x-eventwire-dataschema": schema_ref(event_type),
            }
        return name


def cloudevents_headers(ce_type: str) -> Document:
    """A JSON Schema of the NATS headers of an event of ``ce_type`` (CloudEvents binary content mode)."""
    properties: Document = {
        "ce-specversion": {"type": "string", "const": SPEC_VERSION, "description": "CloudEvents version."},
        "ce-id": {
            "type": "string",
            "minLength": 1,
            "description": "Unique id of the event: a UUIDv7 unless the publisher names one.",
        },
        "ce-source": {
            "type": "string",
            "minLength": 1,
            "description": "The publishing service, e.g. /services/orders.",
        },
        "ce-type": {"type": "string", "const": ce_type, "description": "The full Protobuf name of the event."},
        "ce-time": {
            "type": "string",
            "format": "date-time",
            "description": "When the event was published: RFC 3339, UTC, milliseconds.",
        },
        "ce-subject": {
            "type": "string",
            "description": "The entity the event is about (the publish key); handlers may order by it.",
        },
        "ce-datacontenttype": {"type": "string", "enum": [PROTOBUF, JSON], "description": "The payload codec."},
        "ce-dataschema": {
            "type": "string",
            "description": "urn:eventwire:schema:<type>:<hash of the message descriptor> of the publisher's version.",
        },
        "ce-correlationid": {"type": "string", "description": "Id of the event that started this chain of events."},
        "ce-causationid": {"type": "string", "description": "Id of the event whose handling published this one."},
        "traceparent": {
            "type": "string",
            "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            "description": "W3C trace context.",
        },
        "tracestate": {"type": "string", "description": "W3C trace context: vendor-specific part."},
        MSG_ID_HEADER: {"type": "string", "description": "JetStream deduplication id; defaults to ce-id."},
    }
    return {
        "type": "object",
        "description": (
            "CloudEvents 1.0 attributes as NATS headers (binary content mode); ce- values are percent-encoded "
            "as in the CloudEvents HTTP binding. eventwire publishers always set ce-time, ce-datacontenttype, "
            f"ce-dataschema and {MSG_ID_HEADER} as well."
        ),
        "required": [f"ce-{attribute}" for attribute in REQUIRED_ATTRIBUTES],
        "properties": properties,
    }


def _servers(urls: Sequence[str]) -> Document:
    servers: Document = {}
    for number, url in enumerate(urls, start=1):
        parts = parse_server_url(url)
        port = parts.port
        host = f"[{parts.host}]" if ":" in parts.host else parts.host
        # userinfo is dropped on purpose: a password or token must never end up in a published document.
        server: Document = {
            "host": host if port is None else f"{host}:{port}",
            "protocol": "nats" if parts.scheme in ("nats", "tls") else parts.scheme,
        }
        if parts.scheme == "tls":
            server["description"] = "NATS over TLS."
        servers["nats" if len(urls) == 1 else f"nats-{number}"] = server
    return servers


def _unique(base: str, taken: dict[str, Any]) -> str:
    """``base`` made a valid AsyncAPI key, with a number appended when another entry has it."""
    key = _UNSAFE_ID.sub("_", base) or "_"
    candidate, number = key, 1
    while candidate in taken:
        number += 1
        candidate = f"{key}-{number}"
    return candidate
