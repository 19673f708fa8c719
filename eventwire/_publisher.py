"""Reliable publishing: CloudEvents envelopes, dedup ids, retries until a deadline, pipelining."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import Message

from ._backoff import Backoff
from ._batch_publish import FastBatchRun, Outcome, by_batch_target
from ._envelope import binary_headers, now_rfc3339
from ._errors import BatchHoldsDuplicate, ConfigError, PayloadTooLarge, PermissionDenied, PublishError, PublishTimeout
from ._ids import uuid7
from ._publish_stream import PublishStream
from ._streams import Stream, check_subject, key_token, partitioned_stream_for
from ._tracing import end_span, start_producer_span, tracing_on
from .contracts import PROTOBUF, EventRegistry, codec_for, schema_ref
from .transport import BatchMessage, PublishAck, TransientPublishFailure, Transport

logger = logging.getLogger("eventwire.publisher")

_HEADER_OVERHEAD = len(b"NATS/1.0\r\n") + 2
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def wire_size(payload: bytes, headers: dict[str, str]) -> int:
    """Bytes of payload plus header block, as NATS counts them against ``max_payload``."""
    text = "".join(headers) + "".join(headers.values())
    return len(payload) + _HEADER_OVERHEAD + 4 * len(headers) + (len(text) if text.isascii() else len(text.encode()))


RETRY_BACKOFF = Backoff(initial=0.05, multiplier=2.0, maximum=2.0, jitter=0.5)
# How long one attempt waits for its ack before it counts as lost and is sent again.
ATTEMPT_TIMEOUT = 2.0
# Below this many events for one stream a fast-ingest batch gains nothing: it costs two round trips more.
FAST_PATH_MIN_EVENTS = 32
# Messages per flow acknowledgement the publisher asks for (the most the server grants); it lowers it under load.
FAST_PATH_FLOW = 500
_MAX_CACHED_SUBJECTS = 10_000


class PublishStats(Protocol):
    """Where a publisher reports what it did (eventwire.observability's metrics)."""

    publish_retries: int

    def publish_done(self, ce_type: str, outcome: str, seconds: float | None = None) -> None: ...


async def send_with_retries(
    transport: Transport,
    subject: str,
    payload: bytes,
    headers: dict[str, str],
    *,
    deadline: float,
    attempt_timeout: float = ATTEMPT_TIMEOUT,
    backoff: Backoff = RETRY_BACKOFF,
    on_retry: Callable[[], None] | None = None,
) -> PublishAck:
    """Publish one message, retrying transient failures with the same headers until ``deadline`` seconds pass."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + deadline
    attempt = 0
    while True:
        remaining = give_up_at - loop.time()
        try:
            return await transport.publish(
                subject, payload, headers, timeout=max(0.001, min(attempt_timeout, remaining))
            )
        except TransientPublishFailure as exc:
            attempt += 1
            remaining = give_up_at - loop.time()
            if remaining <= 0:
                raise PublishTimeout(
                    f"{subject}: not acknowledged within {deadline:g}s after {attempt} attempts "
                    f"(last: {exc}); msg id {headers.get('Nats-Msg-Id')}"
                ) from exc
            delay = min(remaining, backoff.delay(attempt))
            if on_retry is not None:
                on_retry()
            logger.debug("publish to %s failed (%s); retry %d in %.3fs", subject, exc, attempt, delay)
            await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event for :meth:`Publisher.publish_many`."""

    event: Message
    subject: str
    key: str | None = None
    msg_id: str | None = None
    expected_last_subject_sequence: int | None = None


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event ready for the wire: its subject, payload bytes and CloudEvents headers."""

    subject: str
    payload: bytes
    headers: dict[str, str]


class EventEncoder:
    """Builds the payload and envelope headers of events for one source (shared by publisher and outbox)."""

    def __init__(
        self,
        source: str,
        registry: EventRegistry | None = None,
        content_type: str = PROTOBUF,
        streams: Iterable[Stream] = (),
    ) -> None:
        if not source:
            raise ConfigError("source must name the publishing service, e.g. /services/orders")
        self.source = source
        self.registry = registry if registry is not None else EventRegistry()
        self._codec = codec_for(content_type)
        self._known: dict[type[Message], tuple[str, str]] = {}
        self._partitioned = [s for s in streams if s.partitions is not None]
        self._partitioned_subject: dict[str, Stream | None] = {}

    def wire_subject(self, subject: str, key: str | None) -> str:
        """Where an event on ``subject`` goes: with its key as one more token when its stream is partitioned."""
        if not self._partitioned:
            return subject
        if subject in self._partitioned_subject:
            stream = self._partitioned_subject[subject]
        else:
            stream = partitioned_stream_for(self._partitioned, subject)
            if len(self._partitioned_subject) < _MAX_CACHED_SUBJECTS:
                self._partitioned_subject[subject] = stream
        if stream is None:
            return subject
        if not key:
            raise ConfigError(f"stream {stream.name!r} is partitioned by key: publish on {subject!r} with key=...")
        return f"{subject}.{key_token(key)}"

    def encode(
        self,
        event: Message,
        subject: str,
        *,
        key: str | None = None,
        msg_id: str | None = None,
        event_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> EncodedEvent:
        check_subject(subject, wildcards=False)
        event_class = type(event)
        known = self._known.get(event_class)
        if known is None:
            self.registry.register(event_class)
            known = self._known[event_class] = (event_class.DESCRIPTOR.full_name, schema_ref(event_class))
        if msg_id is not None and _CONTROL.search(msg_id):
            raise ConfigError(f"msg_id {msg_id!r} holds control characters")
        wire = self.wire_subject(subject, key)
        headers = binary_headers(
            event_id or uuid7(),
            self.source,
            known[0],
            time=now_rfc3339(),
            subject=key,
            datacontenttype=self._codec.content_type,
            dataschema=known[1],
            correlation_id=correlation_id,
            causation_id=causation_id,
            traceparent=traceparent,
            tracestate=tracestate,
            msg_id=msg_id,
        )
        return EncodedEvent(wire, self._codec.encode(event), headers)


def _wire(prepared: EncodedEvent | None) -> BatchMessage:
    assert prepared is not None
    return prepared.subject, prepared.payload, prepared.headers


class Publisher:
    """Publishes events to JetStream and returns once they are stored.

    Every attempt of one event carries the same ``Nats-Msg-Id``, so a retry
    after a lost ack is stored once (inside the stream's duplicate window).
    Timeouts and "no responders" are retried with exponential backoff and
    jitter until ``deadline`` seconds have passed; then :class:`PublishTimeout`.
    ``streams`` names the partitioned streams it publishes to (an App passes its own), so
    events on them carry their key in the subject.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        source: str,
        registry: EventRegistry | None = None,
        content_type: str = PROTOBUF,
        streams: Iterable[Stream] = (),
        deadline: float = 30.0,
        attempt_timeout: float = ATTEMPT_TIMEOUT,
        window: int = 1000,
        retry_backoff: Backoff = RETRY_BACKOFF,
        stats: PublishStats | None = None,
    ) -> None:
        if deadline <= 0 or attempt_timeout <= 0:
            raise ConfigError("Publisher.deadline and attempt_timeout must be positive")
        if window < 1:
            raise ConfigError("Publisher.window must be at least 1")
        self._transport = transport
        self._encoder = EventEncoder(source, registry, content_type, streams)
        self._deadline = deadline
        self._attempt_timeout = attempt_timeout
        self._window = window
        self._retry_backoff = retry_backoff
        self._stats = stats
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def source(self) -> str:
        return self._encoder.source

    def _prepare(
        self,
        event: Message,
        subject: str,
        *,
        key: str | None = None,
        msg_id: str | None = None,
        event_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        expected: dict[str, str] | None = None,
    ) -> EncodedEvent:
        prepared = self._encoder.encode(
            event,
            subject,
            key=key,
            msg_id=msg_id,
            event_id=event_id,
            correlation_id=correlation_id,
            causation_id=causation_id,
            traceparent=traceparent,
            tracestate=tracestate,
        )
        headers = prepared.headers
        if expected:
            headers.update(expected)
        size = wire_size(prepared.payload, headers)
        limit = self._transport.max_payload
        if size > limit:
            raise PayloadTooLarge(size, limit)
        return prepared

    async def publish(
        self,
        event: Message,
        *,
        subject: str,
        key: str | None = None,
        msg_id: str | None = None,
        event_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        expected_stream: str | None = None,
        expected_last_sequence: int | None = None,
        expected_last_subject_sequence: int | None = None,
        deadline: float | None = None,
    ) -> PublishAck:
        """Publish one event and wait for JetStream to store it.

        ``key`` becomes ``ce-subject`` (the entity the event is about).
        ``msg_id`` is the dedup id; it defaults to the event id. Raises
        :class:`PublishTimeout` after the deadline, :class:`WrongLastSequence`
        when an expected sequence does not match, :class:`PayloadTooLarge`
        before sending an oversized message, :class:`PermissionDenied` at once
        when the server refuses the subject (never retried).
        """
        expected: dict[str, str] = {}
        if expected_stream is not None:
            expected["Nats-Expected-Stream"] = expected_stream
        if expected_last_sequence is not None:
            expected["Nats-Expected-Last-Sequence"] = str(expected_last_sequence)
        if expected_last_subject_sequence is not None:
            expected["Nats-Expected-Last-Subject-Sequence"] = str(expected_last_subject_sequence)
        try:
            prepared = self._prepare(
                event,
                subject,
                key=key,
                msg_id=msg_id,
                event_id=event_id,
                correlation_id=correlation_id,
                causation_id=causation_id,
                traceparent=traceparent,
                tracestate=tracestate,
                expected=expected,
            )
        except PayloadTooLarge:
            if self._stats is not None:
                self._stats.publish_done(event.DESCRIPTOR.full_name, "failed")
            raise
        span = start_producer_span(prepared.subject, prepared.headers) if tracing_on() else None
        self._begin()
        started = time.perf_counter()
        try:
            ack = await self._send(prepared, deadline if deadline is not None else self._deadline)
        except BaseException as exc:  # a cancelled publish ends its span too, but may have been stored
            if self._stats is not None and isinstance(exc, PublishError | PermissionDenied):
                self._stats.publish_done(prepared.headers["ce-type"], "failed")
            if span is not None:
                end_span(span, exc)
            raise
        finally:
            self._end()
        if span is not None:
            end_span(span)
        if self._stats is not None:
            outcome = "duplicate" if ack.duplicate else "stored"
            self._stats.publish_done(prepared.headers["ce-type"], outcome, time.perf_counter() - started)
        return ack

    async def _send(self, prepared: EncodedEvent, deadline: float) -> PublishAck:
        return await send_with_retries(
            self._transport,
            prepared.subject,
            prepared.payload,
            prepared.headers,
            deadline=deadline,
            attempt_timeout=self._attempt_timeout,
            backoff=self._retry_backoff,
            on_retry=self._retried if self._stats is not None else None,
        )

    def _retried(self, count: int = 1) -> None:
        if self._stats is not None:
            self._stats.publish_retries += count

    async def publish_many(
        self, items: Iterable[Outgoing], *, window: int | None = None, deadline: float | None = None
    ) -> list[Outcome]:
        """Publish many events and wait until each is stored, known as a duplicate, or refused.

        Returns one outcome per item, in order: its ack, or the error that
        stopped it. Items whose attempts fail transiently are sent again, with
        the same msg id, until the deadline. Events for a stream that takes
        fast-ingest batches (``Stream(allow_batched=True)``, nats-server 2.14+)
        go as batches, one flow acknowledgement per few hundred events; the
        rest are pipelined with up to ``window`` acks outstanding. A duplicate
        found in a batch is acked with ``sequence`` 0: the server does not say
        where the first copy is.
        """
        loop = asyncio.get_running_loop()
        window = window or self._window
        deadline = deadline if deadline is not None else self._deadline
        give_up_at = loop.time() + deadline
        results: list[Outcome | None] = []
        prepared: list[EncodedEvent | None] = []
        types: list[str] = []
        for item in items:
            types.append(item.event.DESCRIPTOR.full_name)
            expected = None
            if item.expected_last_subject_sequence is not None:
                expected = {"Nats-Expected-Last-Subject-Sequence": str(item.expected_last_subject_sequence)}
            try:
                prepared.append(
                    self._prepare(item.event, item.subject, key=item.key, msg_id=item.msg_id, expected=expected)
                )
                results.append(None)
            except PayloadTooLarge as exc:
                prepared.append(None)
                results.append(exc)
        todo = [i for i, p in enumerate(prepared) if p is not None]
        spans = (
            [start_producer_span(p.subject, p.headers) if p is not None else None for p in prepared]
            if tracing_on()
            else []
        )
        self._begin()
        try:
            pipelined = await self._send_fast(todo, prepared, results, give_up_at=give_up_at, deadline=deadline)
            await self._send_pipelined(
                pipelined, prepared, results, window=window, give_up_at=give_up_at, deadline=deadline
            )
        except BaseException as exc:  # cancelled: what was sent may be stored, but nobody will know
            for span in spans:
                if span is not None:
                    end_span(span, exc)
            raise
        finally:
            self._end()
        outcomes = [r if r is not None else PublishTimeout("not sent") for r in results]
        for span, result in zip(spans, outcomes, strict=False):
            if span is not None:
                end_span(span, None if isinstance(result, PublishAck) else result)
        for ce_type, result in zip(types, outcomes, strict=True):
            self._record(ce_type, result, None)
        return outcomes

    def publish_stream(
        self,
        items: AsyncIterable[Outgoing] | Iterable[Outgoing],
        *,
        window: int | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[tuple[Outgoing, Outcome]]:
        """Publish events as they come and yield ``(item, outcome)`` as each ack arrives.

        ``items`` may be an async generator (a rate-limited producer, a relay
        reading rows): at most ``window`` events are unacknowledged at a time,
        so a slow server slows the producer instead of filling memory. Each
        event is retried on its own with the same msg id until ``deadline``
        seconds after it was first sent; its outcome is its ack, or the error
        that stopped it. Outcomes come in the order acks arrive, which is the
        order sent except for retried events. If ``items`` raises, the outcomes
        of what was already sent come first, then the error. Leaving the loop
        early stops sending; what was sent may still be stored.
        """
        window = window or self._window
        if window < 1:
            raise ConfigError("publish_stream window must be at least 1")
        run = PublishStream(
            self._transport,
            self._prepare_outgoing,
            window=window,
            deadline=deadline if deadline is not None else self._deadline,
            attempt_timeout=self._attempt_timeout,
            backoff=self._retry_backoff,
            on_retry=self._retried,
            on_outcome=self._record,
        )
        return run.run(items)

    def _prepare_outgoing(self, item: Outgoing) -> BatchMessage:
        expected = None
        if item.expected_last_subject_sequence is not None:
            expected = {"Nats-Expected-Last-Subject-Sequence": str(item.expected_last_subject_sequence)}
        prepared = self._prepare(item.event, item.subject, key=item.key, msg_id=item.msg_id, expected=expected)
        return prepared.subject, prepared.payload, prepared.headers

    def _record(self, ce_type: str, outcome: Outcome, seconds: float | None) -> None:
        if self._stats is None:
            return
        if isinstance(outcome, PublishAck):
            self._stats.publish_done(ce_type, "duplicate" if outcome.duplicate else "stored", seconds)
        else:
            self._stats.publish_done(ce_type, "failed")

    async def publish_atomic(self, items: Sequence[Outgoing], *, deadline: float | None = None) -> list[PublishAck]:
        """Store several events all or none: one aggregate change that emits several events.

        They must all go to one stream declared ``allow_atomic=True``
        (nats-server 2.12 or later; the server takes up to 1,000 in a batch).
        They are stored next to each other, in order; the acks say where.
        Transient failures resend the whole batch with the same msg ids until
        the deadline; if an earlier attempt was stored after all, the resend is
        refused as holding known ids, and this returns acks with
        ``duplicate=True`` (sequence 0). On a first attempt that refusal is
        :class:`BatchHoldsDuplicate`: none of the batch was stored. Refusals
        (:class:`WrongLastSequence` on any event, a stream without
        ``allow_atomic``) raise at once; :class:`PublishTimeout` after the deadline.
        """
        if not items:
            return []
        messages = [self._prepare_outgoing(item) for item in items]
        types = [headers["ce-type"] for _, _, headers in messages]
        spans = [start_producer_span(subject, headers) for subject, _, headers in messages] if tracing_on() else []
        self._begin()
        try:
            acks = await self._send_atomic(messages, deadline if deadline is not None else self._deadline)
        except BaseException as exc:
            for span in spans:
                end_span(span, exc)
            if isinstance(exc, PublishError | PermissionDenied):
                for ce_type in types:
                    self._record(ce_type, exc, None)
            raise
        finally:
            self._end()
        for span in spans:
            end_span(span)
        for ce_type, ack in zip(types, acks, strict=True):
            self._record(ce_type, ack, None)
        return acks

    async def _send_atomic(self, messages: list[BatchMessage], deadline: float) -> list[PublishAck]:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + deadline
        attempt = 0
        while True:
            timeout = max(0.001, min(self._attempt_timeout, give_up_at - loop.time()))
            try:
                last = await self._transport.publish_atomic(messages, timeout=timeout)
            except BatchHoldsDuplicate as exc:
                if attempt == 0:
                    raise
                # An earlier attempt's ack was lost, but it was stored: the batch is all or nothing.
                return [PublishAck(exc.stream, 0, duplicate=True) for _ in messages]
            except TransientPublishFailure as exc:
                attempt += 1
                remaining = give_up_at - loop.time()
                if remaining <= 0:
                    raise PublishTimeout(
                        f"atomic batch of {len(messages)}: not acknowledged within {deadline:g}s "
                        f"after {attempt} attempts (last: {exc})"
                    ) from exc
                self._retried()
                await asyncio.sleep(min(remaining, self._retry_backoff.delay(attempt)))
                continue
            first = last.sequence - len(messages) + 1
            return [PublishAck(last.stream, first + n) for n in range(len(messages))]

    async def _send_pipelined(
        self,
        todo: list[int],
        prepared: list[EncodedEvent | None],
        results: list[Outcome | None],
        *,
        window: int,
        give_up_at: float,
        deadline: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while todo:
            todo = await self._send_round(todo, prepared, results, window, give_up_at)
            if not todo:
                return
            attempt += 1
            remaining = give_up_at - loop.time()
            if remaining <= 0:
                for i in todo:
                    results[i] = PublishTimeout(f"not acknowledged within {deadline:g}s after {attempt} attempts")
                return
            self._retried(len(todo))
            await asyncio.sleep(min(remaining, self._retry_backoff.delay(attempt)))

    async def _send_fast(
        self,
        todo: list[int],
        prepared: list[EncodedEvent | None],
        results: list[Outcome | None],
        *,
        give_up_at: float,
        deadline: float,
    ) -> list[int]:
        """Send what goes to streams that take fast-ingest batches that way; return the rest, in order."""
        if len(todo) < FAST_PATH_MIN_EVENTS:
            return todo
        groups, others = await by_batch_target(self._transport, [_wire(prepared[i])[0] for i in todo])
        rest = [todo[p] for p in others]
        for target, positions in groups:
            indexes = [todo[p] for p in positions]
            if len(indexes) < FAST_PATH_MIN_EVENTS:
                rest.extend(indexes)
                continue
            run = FastBatchRun(
                target,
                [_wire(prepared[i]) for i in indexes],
                flow=FAST_PATH_FLOW,
                attempt_timeout=self._attempt_timeout,
                backoff=self._retry_backoff,
                give_up_at=give_up_at,
                deadline=deadline,
                on_retry=self._retried,
            )
            rest.extend(indexes[p] for p in await run.run())
            for i, outcome in zip(indexes, run.outcomes, strict=True):
                if outcome is not None:
                    results[i] = outcome
        rest.sort()
        return rest

    async def _send_round(
        self,
        todo: list[int],
        prepared: list[EncodedEvent | None],
        results: list[Outcome | None],
        window: int,
        give_up_at: float,
    ) -> list[int]:
        """Send ``todo`` once, pipelined; return the indexes to try again."""
        retry: list[int] = []
        futures: list[asyncio.Future[PublishAck]] = []
        room = asyncio.Event()
        inflight = 0

        def settle(index: int, future: asyncio.Future[PublishAck]) -> None:
            nonlocal inflight
            inflight -= 1
            room.set()
            if future.cancelled():
                retry.append(index)
                return
            exc = future.exception()
            if exc is None:
                results[index] = future.result()
            elif isinstance(exc, (PublishError, PermissionDenied)):
                results[index] = exc
            else:
                retry.append(index)

        def give_up(rest: Iterable[int]) -> list[int]:
            retry.extend(rest)
            for future in futures:
                future.cancel()
            return retry

        for position, index in enumerate(todo):
            while inflight >= window:
                room.clear()
                try:
                    async with asyncio.timeout(self._stall_timeout(give_up_at)):
                        await room.wait()
                except TimeoutError:
                    # No ack for a whole attempt timeout: the connection or the stream is stalled.
                    return give_up(todo[position:])
            item = prepared[index]
            assert item is not None
            future = await self._transport.publish_async(item.subject, item.payload, item.headers)
            inflight += 1
            future.add_done_callback(lambda f, i=index: settle(i, f))  # type: ignore[misc]
            futures.append(future)
        pending: set[asyncio.Future[PublishAck]] = {f for f in futures if not f.done()}
        while pending:
            done, pending = await asyncio.wait(pending, timeout=self._stall_timeout(give_up_at))
            if not done:
                give_up(())
                break
        # Let the done-callbacks of the last futures run before reading ``retry``.
        await asyncio.sleep(0)
        return retry

    def _stall_timeout(self, give_up_at: float) -> float:
        return max(0.0, min(self._attempt_timeout, give_up_at - asyncio.get_running_loop().time()))

    def _begin(self) -> None:
        self._inflight += 1
        self._idle.clear()

    def _end(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until no publish is in flight; False if ``timeout`` passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
