"""Events as an operator reads them: decoded to Protobuf JSON by the generated class or the schema registry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format, symbol_database
from google.protobuf.message import Message

from ._envelope import parse_message
from ._errors import ContractError, EnvelopeError, PermissionDenied
from .contracts import PROTOBUF, codec_for

_LOOK_AGAIN_AFTER = 10.0  # seconds

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
    schema registry of ``transport``'s server holds under their ``ce-dataschema``."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._registry: SchemaRegistry | None = None
        self._look_again_at = 0.0

    async def _registry_now(self) -> SchemaRegistry | None:
        """The registry, looked for again now and then while there is none (a tool may outlive its absence)."""
        from .registry import SchemaRegistry

        loop = asyncio.get_running_loop()
        if self._registry is None and loop.time() >= self._look_again_at:
            self._look_again_at = loop.time() + _LOOK_AGAIN_AFTER
            with contextlib.suppress(PermissionDenied):  # a client that may not read it decodes without it
                self._registry = await SchemaRegistry.open(self._transport, create=False)
        return self._registry

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
            unknown = f"{len(payload)} bytes; type {ce_type or '(none)'} not loaded"
            if not dataschema:
                return None, f"{unknown} (no ce-dataschema): pass --import"
            registry = await self._registry_now()
            if registry is None:
                return None, f"{unknown} (no schema registry on this server): pass --import"
            try:
                found = await registry.message_class(dataschema)
            except ContractError as exc:  # a damaged entry: say so, show the bytes
                return None, f"{len(payload)} bytes; schema {dataschema}: {exc}"
            if found is None:
                return None, f"{len(payload)} bytes; schema {dataschema} is not in the registry"
        try:
            event = codec_for(content_type or PROTOBUF).decode(payload, found)
        except Exception as exc:
            return None, f"{len(payload)} bytes that do not decode as {ce_type}: {exc}"
        return json_format.MessageToDict(event), None
