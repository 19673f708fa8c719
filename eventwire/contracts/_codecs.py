"""Payload codecs: Protobuf binary (the default) and Protobuf's canonical JSON mapping."""

from __future__ import annotations

from typing import Final, Protocol

from google.protobuf import json_format
from google.protobuf.message import DecodeError as _PbDecodeError
from google.protobuf.message import Message

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
            return event_type.FromString(data)
        except (_PbDecodeError, RecursionError, ValueError) as exc:
            raise DecodeError(f"not a valid {event_type.DESCRIPTOR.full_name} payload: {exc}") from exc


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


_CODECS: dict[str, Codec] = {PROTOBUF: ProtobufCodec(), JSON: JsonCodec()}


def codec_for(content_type: str) -> Codec:
    """Return the codec for a ``ce-datacontenttype``; raise DecodeError for an unsupported one."""
    codec = _CODECS.get(content_type)
    if codec is None:
        base = content_type.split(";", 1)[0].strip().lower()
        codec = _CODECS.get(base)
        if codec is None:
            raise DecodeError(f"unsupported content type {content_type!r}")
    return codec
