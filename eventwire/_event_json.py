"""Events as an operator reads them: decoded to Protobuf JSON by the generated class or the schema registry."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format, symbol_database
from google.protobuf.message import Message

from ._envelope import parse_message
from ._errors import EnvelopeError, PermissionDenied
from .contracts import PROTOBUF, codec_for

if TYPE_CHECKING:
    from .registry import SchemaRegistry
    from .transport import Transport


def event_class(ce_type: str | None) -> type[Message] | None:
    """The generated class of ``ce_type`` if a module defining it was imported (``--import``)."""
    if not ce_type:
        return None
    try:
        found: type[Message] = symbol_database.Default().GetSymbol(ce_type)
    except KeyError:
        return None
    return found


@dataclass(frozen=True)
class ReadEvent:
    """A stored message as shown: its envelope's attributes (None when it is no CloudEvent) and payload."""

    ce_type: str | None
    ce_id: str | None
    key: str | None
    payload: dict[str, Any] | None  # Protobuf JSON, when it decoded
    raw: bytes
    note: str | None  # why the payload did not decode


class EventDecoder:
    """Decodes payloads with the imported generated class of their type, else with the contract the
    schema registry holds under their ``ce-dataschema`` (``registry`` None: there is no registry)."""

    def __init__(self, registry: SchemaRegistry | None) -> None:
        self._registry = registry

    @classmethod
    async def on(cls, transport: Transport) -> EventDecoder:
        """A decoder using the registry of ``transport``'s server, if there is one this client may read."""
        from .registry import SchemaRegistry

        try:
            return cls(await SchemaRegistry.open(transport, create=False))
        except PermissionDenied:
            return cls(None)

    async def read(self, headers: Mapping[str, str], data: bytes) -> ReadEvent:
        ce_type = ce_id = key = content_type = dataschema = None
        with contextlib.suppress(EnvelopeError):  # not an eventwire event: shown raw
            envelope, data = parse_message(headers, data)
            ce_type, ce_id, key = envelope.type, envelope.id, envelope.subject
            content_type, dataschema = envelope.datacontenttype, envelope.dataschema
        payload, note = await self.decode(ce_type, dataschema, content_type, data)
        return ReadEvent(ce_type, ce_id, key, payload, data, note)

    async def decode(
        self, ce_type: str | None, dataschema: str | None, content_type: str | None, payload: bytes
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The payload as Protobuf JSON, or None and why not."""
        found = event_class(ce_type)
        if found is None:
            if self._registry is None or not dataschema:
                why = "no schema registry on this server" if dataschema else "no ce-dataschema"
                return None, f"{len(payload)} bytes; type {ce_type or '(none)'} not loaded ({why}): pass --import"
            found = await self._registry.message_class(dataschema)
            if found is None:
                return None, f"{len(payload)} bytes; schema {dataschema} is not in the registry"
        try:
            event = codec_for(content_type or PROTOBUF).decode(payload, found)
        except Exception as exc:
            return None, f"{len(payload)} bytes that do not decode as {ce_type}: {exc}"
        return json_format.MessageToDict(event), None
