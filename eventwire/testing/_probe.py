"""Run an App in a test and watch what it does: what it published and how each delivery was settled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message

from .._app import App
from .._delivery import Settlement
from .._envelope import Envelope, parse_message
from .._errors import DecodeError, EnvelopeError, EventwireError
from .._ids import uuid7
from .._streams import Durable, Stream, subject_matches
from ..contracts import PROTOBUF, codec_for
from ..transport import (
    BatchMessage,
    DurableState,
    InboundMessage,
    KeyValueStore,
    MessageSource,
    PinState,
    PublishAck,
    Transport,
)
from ..transport.memory import MemoryBroker, MemoryTransport

E = TypeVar("E", bound=Message)


@dataclass(frozen=True, slots=True)
class PublishedEvent:
    """An event the App under test got stored by the broker."""

    subject: str
    envelope: Envelope | None  # None for what is not a CloudEvent, e.g. the dead letter of garbage input
    event: Message | None  # None when its type is not in the App's registry
    ack: PublishAck


class RecordingTransport:
    """Wraps a transport and reports every acknowledged publish."""

    def __init__(self, inner: Transport, on_published: Callable[[str, dict[str, str], bytes, PublishAck], None]):
        self._inner = inner
        self._on_published = on_published

    @property
    def max_payload(self) -> int:
        return self._inner.max_payload

    @property
    def message_schedules(self) -> bool:
        return self._inner.message_schedules

    @property
    def connected(self) -> bool:
        return self._inner.connected

    @property
    def reconnects(self) -> int:
        return self._inner.reconnects

    async def durable_state(self, durable: Durable) -> DurableState:
        return await self._inner.durable_state(durable)

    async def stream_size(self, stream: str) -> int:
        return await self._inner.stream_size(stream)

    async def pinned_state(self, durable: Durable) -> PinState:
        return await self._inner.pinned_state(durable)

    async def unpin(self, durable: Durable) -> None:
        await self._inner.unpin(durable)

    async def ensure_stream(self, stream: Stream) -> None:
        await self._inner.ensure_stream(stream)

    async def ensure_durable(self, durable: Durable) -> None:
        await self._inner.ensure_durable(durable)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str], *, timeout: float) -> PublishAck:
        ack = await self._inner.publish(subject, payload, headers, timeout=timeout)
        self._on_published(subject, headers, payload, ack)
        return ack

    async def publish_atomic(self, messages: list[BatchMessage], *, timeout: float) -> PublishAck:
        last = await self._inner.publish_atomic(messages, timeout=timeout)
        for offset, (subject, payload, headers) in enumerate(messages):
            sequence = last.sequence - len(messages) + 1 + offset
            self._on_published(subject, headers, payload, PublishAck(last.stream, sequence))
        return last

    async def batch_target(self, subject: str) -> None:
        # Every publish is recorded from its own ack, which fast-ingest batches do not give.
        return None

    async def publish_async(self, subject: str, payload: bytes, headers: dict[str, str]) -> asyncio.Future[PublishAck]:
        future = await self._inner.publish_async(subject, payload, headers)

        def record(done: asyncio.Future[PublishAck]) -> None:
            if not done.cancelled() and done.exception() is None:
                self._on_published(subject, headers, payload, done.result())

        future.add_done_callback(record)
        return future

    async def pull(
        self,
        durable: Durable,
        sink: Callable[[InboundMessage], None],
        capacity: Callable[[], int],
        *,
        min_batch: int,
        on_failure: Callable[[EventwireError], None] | None = None,
    ) -> MessageSource:
        return await self._inner.pull(durable, sink, capacity, min_batch=min_batch, on_failure=on_failure)

    async def key_value(self, bucket: str, *, replicas: int = 1, create: bool = True) -> KeyValueStore | None:
        return await self._inner.key_value(bucket, replicas=replicas, create=create)

    async def close(self) -> None:
        await self._inner.close()


class AppProbe:
    """What a running App did, and ways to wait for it."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.published: list[PublishedEvent] = []
        self.settlements: list[Settlement] = []
        self._changed = asyncio.Event()
        app.add_listener(self._on_settled)

    def _on_settled(self, settlement: Settlement) -> None:
        self.settlements.append(settlement)
        self._changed.set()

    def _on_published(self, subject: str, headers: dict[str, str], payload: bytes, ack: PublishAck) -> None:
        try:
            envelope, data = parse_message(headers, payload)
        except EnvelopeError:
            self.published.append(PublishedEvent(subject, None, None, ack))
            self._changed.set()
            return
        event_class = self.app.registry.get(envelope.type)
        event = None
        if event_class is not None:
            try:
                event = codec_for(envelope.datacontenttype or PROTOBUF).decode(data, event_class)
            except DecodeError:
                event = None
        self.published.append(PublishedEvent(subject, envelope, event, ack))
        self._changed.set()

    def published_events(self, event_type: type[E]) -> list[E]:
        """The events of one type the App published, in order."""
        return [p.event for p in self.published if isinstance(p.event, event_type)]

    def outcomes(self, *, handler: str | None = None, ce_id: str | None = None) -> list[Settlement]:
        return [
            s
            for s in self.settlements
            if (handler is None or s.handler == handler) and (ce_id is None or s.ce_id == ce_id)
        ]

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait until ``condition()`` holds, re-checking after every settlement and publish."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def _handlers_for(self, subject: str, stream: str) -> list[str]:
        partitioned = any(s.name == stream and s.partitions is not None for s in self.app.streams)
        stored = subject + ".*" if partitioned else subject  # the server appends the partition
        return [
            spec.name
            for spec in self.app.handlers
            if spec.durable.stream == stream and subject_matches(spec.durable.filter_subject, stored)
        ]

    async def wait_handled(self, ce_id: str, handlers: list[str], timeout: float = 30.0) -> list[Settlement]:
        """Wait until each handler settled event ``ce_id`` for good (ack or term); return all its settlements."""

        def settled() -> bool:
            final = {s.handler for s in self.settlements if s.ce_id == ce_id and s.outcome != "nak"}
            return final >= set(handlers)

        await self.wait_until(settled, timeout)
        return self.outcomes(ce_id=ce_id)

    async def publish(
        self,
        event: Message,
        *,
        subject: str,
        key: str | None = None,
        msg_id: str | None = None,
        timeout: float = 30.0,
    ) -> list[Settlement]:
        """Publish ``event`` as the App and wait until every handler of its subject has settled it for good.

        Returns the settlements of the event, retries included.
        """
        event_id = uuid7()
        ack = await self.app.publisher.publish(event, subject=subject, key=key, msg_id=msg_id, event_id=event_id)
        if ack.duplicate:
            raise EnvelopeError(f"msg id {msg_id!r} was a duplicate: no handler will see this event")
        return await self.wait_handled(event_id, self._handlers_for(subject, ack.stream), timeout)


@asynccontextmanager
async def running(app: App, transport: Transport | None = None) -> AsyncIterator[AppProbe]:
    """Start ``app`` on ``transport`` (default: a fresh in-memory broker), yield its probe, stop it.

    ``transport`` may be a :class:`MemoryTransport` on a shared broker, or a
    real :class:`~eventwire.transport.JetStreamTransport`.
    """
    probe = AppProbe(app)
    inner = transport if transport is not None else MemoryTransport(MemoryBroker())
    await app.start(transport=RecordingTransport(inner, probe._on_published))
    try:
        yield probe
    finally:
        await app.stop()
