"""Decoding: a message becomes a Delivery of its Protobuf event, or an outcome when it never can."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from google.protobuf.message import Message

from .._delivery import Delivery, HandlerSpec, Next
from .._envelope import parse_message
from .._errors import DecodeError, EnvelopeError
from .._outcome import ACK, Outcome
from .._publisher import Publisher
from ..contracts import PROTOBUF, EventRegistry, codec_for
from ..transport import InboundMessage

Step = Callable[[InboundMessage], Awaitable[Outcome]]


def decoding(spec: HandlerSpec, publisher: Publisher, registry: EventRegistry | None) -> Callable[[Next], Step]:
    """Route on ``ce-type`` before touching the payload, then decode it for the steps inside."""
    routes: dict[str, type[Message]] = {t.DESCRIPTOR.full_name: t for t in spec.event_types}
    name = spec.name
    limit = spec.max_event_bytes
    skip_known = spec.unknown_types == "skip"

    def wrap(inner: Next) -> Step:
        async def decode(message: InboundMessage) -> Outcome:
            if limit is not None and len(message.data) > limit:
                detail = f"payload of {len(message.data)} bytes exceeds max_event_bytes={limit}"
                return Outcome.dead_letter("too-large", detail=detail)
            try:
                envelope, data = parse_message(message.headers, message.data)
            except EnvelopeError as exc:
                return Outcome.dead_letter("invalid-envelope", error=exc)
            event_class = routes.get(envelope.type)
            if event_class is None:
                if skip_known and registry is not None and envelope.type in registry:
                    return Outcome.skip(f"handler {name} does not handle this type; skipped")
                detail = f"handler {name} does not handle type {envelope.type}"
                return Outcome.dead_letter("unknown-type", detail=detail)
            try:
                event = codec_for(envelope.datacontenttype or PROTOBUF).decode(data, event_class)
            except DecodeError as exc:
                return Outcome.dead_letter("undecodable", error=exc)
            outcome = await inner(Delivery(message, envelope, event, name, publisher))
            return ACK if outcome is None else outcome

        return decode

    return wrap
