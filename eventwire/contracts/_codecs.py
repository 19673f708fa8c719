"""Payload codecs: Protobuf binary (the default) and Protobuf's canonical JSON mapping."""

from __future__ import annotations

import functools
from typing import Final, Protocol

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError as _PbDecodeError
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from .._errors import DecodeError

PROTOBUF: Final = "application/protobuf"
JSON: Final = "application/json"


class Codec(Protocol):
    """Turns an event into payload bytes and back."""

    @property
    def content_type(self) -> str: ...

    def encode(self, event: Message) -> bytes: ...

    def decode(self, data: bytes, event_type: type[Message]) -> Message: ...


class ProtobufCodec:
    content_type: Final = PROTOBUF

    def encode(self, event: Message) -> bytes:
        return event.SerializeToString()

    def decode(self, data: bytes, event_type: type[Message]) -> Message:
        try:
            event = event_type.FromString(data)
        except (_PbDecodeError, RecursionError, ValueError) as exc:
            raise DecodeError(f"not a valid {event_type.DESCRIPTOR.full_name} payload: {exc}") from exc
        check_wire_types(event)
        return event


def check_wire_types(message: Message) -> None:
    """Refuse a payload that sends a declared field with another wire type.

    Protobuf keeps such a field as "unknown" and parses on, so an event of
    another type, or of an incompatible version, would reach the handler as
    a half-empty message. Unknown fields with undeclared numbers are fine:
    that is how a newer producer adds fields.
    """
    declared = message.DESCRIPTOR.fields_by_number
    unknown = UnknownFieldSet(message)
    for index in range(len(unknown)):
        field = unknown[index]
        if field.field_number in declared:
            expected = declared[field.field_number]
            raise DecodeError(
                f"{message.DESCRIPTOR.full_name}.{expected.name} (field {field.field_number}) arrived with "
                f"wire type {field.wire_type}: the payload is not this type or an incompatible version of it"
            )
    for name, shape in _nested_message_fields(message.DESCRIPTOR):
        if shape == "single":
            if message.HasField(name):
                check_wire_types(getattr(message, name))
            continue
        value = getattr(message, name)
        for nested in value.values() if shape == "map" else value:
            check_wire_types(nested)


@functools.cache
def _nested_message_fields(descriptor: Descriptor) -> tuple[tuple[str, str], ...]:
    """The fields of a message type that hold messages, the only ones to look inside: (name, single|repeated|map)."""
    found = []
    for field in descriptor.fields:
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        message_type = field.message_type
        assert message_type is not None
        if message_type.GetOptions().map_entry:
            if message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                found.append((field.name, "map"))
        else:
            found.append((field.name, "repeated" if field.is_repeated else "single"))
    return tuple(found)


class JsonCodec:
    content_type: Final = JSON

    def encode(self, event: Message) -> bytes:
        return json_format.MessageToJson(event, indent=None).encode()

    def decode(self, data: bytes, event_type: type[Message]) -> Message:
        event = event_type()
        try:
            # A newer producer may add fields; ignoring them keeps old consumers working.
            json_format.Parse(data, event, ignore_unknown_fields=True)
        except (json_format.ParseError, UnicodeDecodeError, RecursionError, ValueError) as exc:
            raise DecodeError(f"not a valid {event_type.DESCRIPTOR.full_name} JSON payload: {exc}") from exc
        return event


# application/x-protobuf: the name many libraries and gateways use for the same bytes.
_CODECS: dict[str, Codec] = {PROTOBUF: ProtobufCodec(), "application/x-protobuf": ProtobufCodec(), JSON: JsonCodec()}


def codec_for(content_type: str) -> Codec:
    """Return the codec for a ``ce-datacontenttype``; raise DecodeError for an unsupported one."""
    codec = _CODECS.get(content_type)
    if codec is None:
        base = content_type.split(";", 1)[0].strip().lower()
        codec = _CODECS.get(base)
        if codec is None:
            raise DecodeError(f"unsupported content type {content_type!r}")
    return codec
