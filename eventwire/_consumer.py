"""Durable consumption: a continuous pull, a fixed pool of workers, explicit settlement.

The hot path is one worker loop per unit of concurrency taking messages from
a local buffer: no task per message, and no log record unless its level is on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf.message import Message

from ._backoff import Backoff
from ._envelope import Envelope, parse_message
from ._errors import ConfigError, DecodeError, EnvelopeError
from ._publisher import Publisher
from ._streams import Durable
from .contracts import PROTOBUF, codec_for
from .transport import InboundMessage, MessageSource, PublishAck, Transport

logger = logging.getLogger("eventwire.consumer")

UnknownTypePolicy = Literal["skip", "term"]


class Delivery:
    """One delivery of an event to a handler: the event, its envelope and where it came from."""

    __slots__ = ("_publisher", "envelope", "event", "handler", "message")

    def __init__(
        self, message: InboundMessage, envelope: Envelope, event: Message, handler: str, publisher: Publisher
    ) -> None:
        self.message = message
        self.envelope = envelope
        self.event = event
        self.handler = handler
        self._publisher = publisher

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


Next = Callable[[Delivery], Awaitable[None]]
Middleware = Callable[[Next], Next]
HandlerFunc = Callable[..., Awaitable[None]]


def describe(message: InboundMessage, ce_type: str | None, ce_id: str | None) -> str:
    """The fields every log line about a message carries."""
    return (
        f"subject={message.subject} seq={message.stream_sequence} delivery={message.delivery_count} "
        f"type={ce_type or '-'} id={ce_id or '-'}"
    )


Outcome = Literal["ack", "nak", "term"]


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one delivery was settled: what App listeners (tests, metrics) are told."""

    handler: str
    subject: str
    stream_sequence: int
    delivery_count: int
    ce_type: str | None
    ce_id: str | None
    outcome: Outcome
    delay: float | None = None
    reason: str | None = None


SettlementListener = Callable[[Settlement], None]


def _log_fields(message: InboundMessage, ce_type: str | None, ce_id: str | None) -> dict[str, Any]:
    return {
        "subject": message.subject,
        "stream_sequence": message.stream_sequence,
        "delivery_count": message.delivery_count,
        "ce_type": ce_type,
        "ce_id": ce_id,
    }


@dataclass(frozen=True)
class HandlerSpec:
    """A handler as declared with :meth:`App.handler`."""

    name: str
    func: HandlerFunc
    event_types: tuple[type[Message], ...]
    durable: Durable
    concurrency: int = 1
    prefetch: int = 256
    backoff: Backoff = Backoff()
    unknown_types: UnknownTypePolicy = "skip"

    def __post_init__(self) -> None:
        if not self.event_types:
            raise ConfigError(f"handler {self.name!r}: name at least one event type")
        if self.concurrency < 1:
            raise ConfigError(f"handler {self.name!r}: concurrency must be at least 1")
        if self.prefetch < self.concurrency:
            raise ConfigError(f"handler {self.name!r}: prefetch must be at least concurrency")
        if self.unknown_types not in ("skip", "term"):
            raise ConfigError(f"handler {self.name!r}: unknown_types must be 'skip' or 'term'")

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


class Consumer:
    """Runs one handler on its durable until stopped."""

    def __init__(
        self,
        spec: HandlerSpec,
        transport: Transport,
        publisher: Publisher,
        middleware: tuple[Middleware, ...] = (),
        listeners: list[SettlementListener] | None = None,
    ) -> None:
        self._spec = spec
        self._listeners = listeners if listeners is not None else []
        self._transport = transport
        self._publisher = publisher
        self._routes: dict[str, type[Message]] = {t.DESCRIPTOR.full_name: t for t in spec.event_types}
        pipeline = spec.call()
        for wrap in reversed(middleware):
            pipeline = wrap(pipeline)
        self._pipeline = pipeline
        self._buffer: deque[InboundMessage] = deque()
        self._inflight: set[InboundMessage] = set()
        self._ready = asyncio.Event()
        self._stopping = False
        self._source: MessageSource | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._settling: set[asyncio.Task[None]] = set()
        self.handled = 0
        self.redelivered = 0

    @property
    def spec(self) -> HandlerSpec:
        return self._spec

    def _free_slots(self) -> int:
        return self._spec.prefetch - len(self._buffer) - len(self._inflight)

    def _on_message(self, message: InboundMessage) -> None:
        if self._stopping:
            # Fetched but never started: hand it straight back for another instance.
            task = asyncio.ensure_future(self._settle(message, "nak", None, None))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
            return
        self._buffer.append(message)
        self._ready.set()

    async def start(self) -> None:
        spec = self._spec
        self._source = await self._transport.pull(
            spec.durable, self._on_message, self._free_slots, min_batch=max(1, spec.prefetch // 2)
        )
        self._workers = [
            asyncio.create_task(self._work(), name=f"eventwire-{spec.name}-{i}") for i in range(spec.concurrency)
        ]
        self._heartbeat = asyncio.create_task(self._beat(), name=f"eventwire-{spec.name}-heartbeat")

    async def _work(self) -> None:
        buffer = self._buffer
        ready = self._ready
        while not self._stopping:
            if not buffer:
                ready.clear()
                await ready.wait()
                continue
            message = buffer.popleft()
            self._inflight.add(message)
            try:
                await self._dispatch(message)
            finally:
                self._inflight.discard(message)
            if self._source is not None:
                self._source.notify()

    async def _dispatch(self, message: InboundMessage) -> None:
        if message.delivery_count > 1:
            self.redelivered += 1
        try:
            envelope, data = parse_message(message.headers, message.data)
        except EnvelopeError as exc:
            headers = message.headers or {}
            await self._settle(
                message, "term", headers.get("ce-type"), headers.get("ce-id"), f"invalid CloudEvents envelope: {exc}"
            )
            return
        event_class = self._routes.get(envelope.type)
        if event_class is None:
            if self._spec.unknown_types == "skip":
                await self._settle(
                    message,
                    "ack",
                    envelope.type,
                    envelope.id,
                    f"handler {self._spec.name} does not handle this type; skipped",
                )
            else:
                await self._settle(
                    message, "term", envelope.type, envelope.id, f"handler {self._spec.name} does not handle this type"
                )
            return
        try:
            event = codec_for(envelope.datacontenttype or PROTOBUF).decode(data, event_class)
        except DecodeError as exc:
            await self._settle(message, "term", envelope.type, envelope.id, f"undecodable payload: {exc}")
            return
        try:
            await self._pipeline(Delivery(message, envelope, event, self._spec.name, self._publisher))
        except Exception as exc:
            await self._failed(message, envelope, exc)
            return
        self.handled += 1
        await self._settle(message, "ack", envelope.type, envelope.id)

    async def _failed(self, message: InboundMessage, envelope: Envelope, exc: Exception) -> None:
        durable = self._spec.durable
        if message.delivery_count >= durable.max_deliver:
            reason = f"handler {self._spec.name} failed on the last of {durable.max_deliver} deliveries: {exc!r}"
            await self._settle(message, "term", envelope.type, envelope.id, reason, exc=exc)
            return
        delay = self._spec.backoff.delay(message.delivery_count)
        reason = f"handler {self._spec.name} raised {exc!r}; redelivery in {delay:.3f}s"
        await self._settle(message, "nak", envelope.type, envelope.id, reason, delay=delay)

    async def _settle(
        self,
        message: InboundMessage,
        outcome: Outcome,
        ce_type: str | None,
        ce_id: str | None,
        reason: str | None = None,
        *,
        delay: float | None = None,
        exc: BaseException | None = None,
    ) -> None:
        if reason is not None:
            level = logging.ERROR if outcome == "term" else logging.WARNING
            if logger.isEnabledFor(level):
                logger.log(
                    level,
                    "%s: %s [%s]",
                    outcome,
                    reason,
                    describe(message, ce_type, ce_id),
                    extra={"eventwire": _log_fields(message, ce_type, ce_id)},
                    exc_info=exc,
                )
        try:
            if outcome == "ack":
                await message.ack()
            elif outcome == "nak":
                await message.nak(delay)
            else:
                await message.term()
        except Exception as settle_error:
            logger.warning(
                "could not %s (%r); the broker will redeliver it [%s]",
                outcome,
                settle_error,
                describe(message, ce_type, ce_id),
            )
            return
        if self._listeners:
            settlement = Settlement(
                self._spec.name,
                message.subject,
                message.stream_sequence,
                message.delivery_count,
                ce_type,
                ce_id,
                outcome,
                delay,
                reason,
            )
            for listener in self._listeners:
                listener(settlement)

    async def _beat(self) -> None:
        """Send in-progress for messages held longer than half of ack_wait, so none is redelivered mid-work."""
        ack_wait = self._spec.durable.ack_wait
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(ack_wait / 4)
            due = loop.time() - ack_wait / 2
            for message in [*self._inflight, *self._buffer]:
                if message.progress_at < due:
                    message.progress_at = loop.time()
                    try:
                        await message.in_progress()
                    except Exception as exc:
                        if logger.isEnabledFor(logging.DEBUG):
                            headers = message.headers or {}
                            logger.debug(
                                "in-progress failed: %r [%s]",
                                exc,
                                describe(message, headers.get("ce-type"), headers.get("ce-id")),
                            )

    async def stop(self, timeout: float) -> None:
        """Stop fetching, let in-flight handlers settle within ``timeout``, hand back the rest."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + timeout
        self._stopping = True
        self._ready.set()
        if self._source is not None:
            await self._source.stop()
        if self._workers:
            _, cut_off = await asyncio.wait(self._workers, timeout=max(0.0, give_up_at - loop.time()))
            for task in cut_off:
                # Not settled: the broker redelivers it after ack_wait.
                task.cancel()
            if cut_off:
                logger.warning(
                    "handler %s: %d in-flight deliveries cut off by the shutdown timeout", self._spec.name, len(cut_off)
                )
                await asyncio.gather(*cut_off, return_exceptions=True)
        while self._buffer:
            await self._settle(self._buffer.popleft(), "nak", None, None)
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
