"""What a handler sees and what the consumer reports: deliveries, settlements, handler declarations."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf.message import Message

from ._envelope import Envelope
from ._errors import ConfigError
from ._outcome import Outcome
from ._publisher import Publisher
from ._retry import RetryPolicy
from ._streams import Durable
from .transport import InboundMessage, PublishAck

UnknownTypePolicy = Literal["skip", "dead-letter"]
OrderingMode = Literal["key", "all"]


class Delivery:
    """One delivery of an event to a handler: the event, its envelope and where it came from."""

    __slots__ = ("_publisher", "envelope", "event", "handler", "message", "session")

    def __init__(
        self, message: InboundMessage, envelope: Envelope, event: Message, handler: str, publisher: Publisher
    ) -> None:
        self.message = message
        self.envelope = envelope
        self.event = event
        self.handler = handler
        self._publisher = publisher
        # The database session of the delivery's transaction, when the Inbox middleware runs.
        self.session: Any = None

    @property
    def subject(self) -> str:
        return self.message.subject

    @property
    def stream_sequence(self) -> int:
        return self.message.stream_sequence

    @property
    def delivery_count(self) -> int:
        return self.message.delivery_count

    async def publish(
        self, event: Message, *, subject: str, key: str | None = None, msg_id: str | None = None
    ) -> PublishAck:
        """Publish an event caused by this one: correlation, causation and trace context follow.

        Pass a business ``msg_id`` (e.g. ``f"rsv-{order_id}"``) when a redelivery
        of this event must not publish the follow-up twice.
        """
        env = self.envelope
        return await self._publisher.publish(
            event,
            subject=subject,
            key=key,
            msg_id=msg_id,
            correlation_id=env.correlation_id or env.id,
            causation_id=env.id,
            traceparent=env.traceparent,
            tracestate=env.tracestate,
        )

    def __repr__(self) -> str:
        return f"<Delivery {describe(self.message, self.envelope.type, self.envelope.id)}>"


# A step of the handler chain: returns how to settle the delivery (None: ack) or raises (the retry policy decides).
Next = Callable[[Delivery], Awaitable[Outcome | None]]
Middleware = Callable[[Next], Next]
HandlerFunc = Callable[..., Awaitable[None]]


def describe(message: InboundMessage, ce_type: str | None, ce_id: str | None) -> str:
    """The fields every log line about a message carries."""
    return (
        f"subject={message.subject} seq={message.stream_sequence} delivery={message.delivery_count} "
        f"type={ce_type or '-'} id={ce_id or '-'}"
    )


Settled = Literal["ack", "nak", "term"]


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one delivery was settled: what App listeners (tests, metrics) are told."""

    handler: str
    subject: str
    stream_sequence: int
    delivery_count: int
    ce_type: str | None
    ce_id: str | None
    outcome: Settled
    delay: float | None = None
    reason: str | None = None


SettlementListener = Callable[[Settlement], None]


def log_fields(
    message: InboundMessage,
    ce_type: str | None,
    ce_id: str | None,
    *,
    service: str | None = None,
    handler: str | None = None,
    outcome: str | None = None,
) -> dict[str, Any]:
    """A message's fields for structured logs (``extra={"eventwire": ...}``), as JSON log lines show them."""
    return {
        "service": service,
        "handler": handler,
        "subject": message.subject,
        "stream_sequence": message.stream_sequence,
        "delivery_count": message.delivery_count,
        "ce_type": ce_type,
        "ce_id": ce_id,
        "outcome": outcome,
    }


@dataclass(frozen=True)
class HandlerSpec:
    """A handler as declared with :meth:`App.handler`."""

    name: str
    func: HandlerFunc
    event_types: tuple[type[Message], ...]
    durable: Durable
    # The subject as declared (the durable's filter is in stored subjects, which differ on a partitioned stream).
    subject: str
    concurrency: int = 1
    prefetch: int = 1024
    retry: RetryPolicy = RetryPolicy()
    unknown_types: UnknownTypePolicy = "skip"
    ordered_by: OrderingMode | None = None
    max_event_bytes: int | None = None
    confirm_acks: bool = False
    # On a partitioned stream with per-key order: a pinned durable per partition; ``durable`` names them all.
    partitions: tuple[Durable, ...] = ()

    @property
    def durables(self) -> tuple[Durable, ...]:
        """The durables this handler consumes: one per partition, or its one."""
        return self.partitions or (self.durable,)

    def __post_init__(self) -> None:
        if not self.event_types:
            raise ConfigError(f"handler {self.name!r}: name at least one event type")
        if self.concurrency < 1:
            raise ConfigError(f"handler {self.name!r}: concurrency must be at least 1")
        if self.prefetch < self.concurrency:
            raise ConfigError(f"handler {self.name!r}: prefetch must be at least concurrency")
        if self.unknown_types not in ("skip", "dead-letter"):
            raise ConfigError(f"handler {self.name!r}: unknown_types must be 'skip' or 'dead-letter'")
        if self.ordered_by not in (None, "key", "all"):
            raise ConfigError(f"handler {self.name!r}: ordered_by must be None, 'key' or 'all'")
        if self.max_event_bytes is not None and self.max_event_bytes < 1:
            raise ConfigError(f"handler {self.name!r}: max_event_bytes must be positive")

    def call(self) -> Next:
        """The innermost step of the middleware chain: call the user's function."""
        func = self.func
        required = [
            p
            for p in inspect.signature(func).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        if len(required) >= 2:

            async def call_with_delivery(delivery: Delivery) -> None:
                await func(delivery.event, delivery)

            return call_with_delivery

        async def call_with_event(delivery: Delivery) -> None:
            await func(delivery.event)

        return call_with_event
