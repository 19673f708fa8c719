"""Events as an operator reads them: the Protobuf class of a ``ce-type``, a payload as Protobuf JSON."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, symbol_database
from google.protobuf.message import Message

from .contracts import PROTOBUF, codec_for


def event_class(ce_type: str | None) -> type[Message] | None:
    """The generated class of ``ce_type`` if a module defining it was imported (``--import``)."""
    if not ce_type:
        return None
    try:
        found: type[Message] = symbol_database.Default().GetSymbol(ce_type)
    except KeyError:
        return None
    return found


def decoded(ce_type: str | None, content_type: str | None, payload: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The payload as Protobuf JSON, or None and why not."""
    found = event_class(ce_type)
    if found is None:
        return None, f"{len(payload)} bytes; type {ce_type or '(none)'} not loaded: pass --import with its module"
    try:
        event = codec_for(content_type or PROTOBUF).decode(payload, found)
    except Exception as exc:
        return None, f"{len(payload)} bytes that do not decode as {ce_type}: {exc}"
    return json_format.MessageToDict(event), None
