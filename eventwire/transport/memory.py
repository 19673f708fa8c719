"""An in-process transport with JetStream's semantics, for tests.

A :class:`MemoryBroker` plays the server: streams with subject wildcards and
limits, durable consumers (every durable sees every message of its filter,
instances of one durable split them), explicit ack, nak with delay, term,
in-progress, redelivery after ack_wait, max_deliver, max_ack_pending, the
dedup window and expected-sequence checks, partitioned streams (the partition
token computed as nats-server computes it) and pinned durables (the first puller
holds the pin until it has stopped pulling for the pinned TTL, or is unpinned);
on a stream declared ``allow_msg_schedules``, also roll-ups (``Nats-Rollup``),
per-message TTLs (``Nats-TTL``) and one-shot message schedules (``Nats-Schedule:
@at <time>``, fired to ``Nats-Schedule-Target`` as nats-server 2.12 fires them).
Each :class:`MemoryTransport` is one connection to it. Delivery is always
asynchronous, as over a network: ``publish`` never runs a handler.

All timing reads the event loop's clock, so on
:class:`eventwire.testing.VirtualTimeLoop` delays cost no real time.
"""

from __future__ import annotations

import asyncio
import bisect
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from .._errors import EventwireError, PublishError, StreamConfigError, WrongLastSequence
from .._streams import Durable, Stream, partition_of, subject_matches, subjects_overlap
from .._wall_clock import wall_time
from ._protocol import (
    BatchMessage,
    DurableState,
    InboundMessage,
    PinState,
    PublishAck,
    StoredValue,
    TransientPublishFailure,
    refusal_error,
)

DEFAULT_MAX_PAYLOAD = 1024 * 1024
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_SECONDS_PER = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def _message_ttl(value: str) -> float | None:
    """Seconds of a ``Nats-TTL`` (a Go duration, or whole seconds; ``never``: None), as nats-server reads it."""
    if value.lower() == "never":
        return None
    parts = _GO_DURATION_PART.findall(value)
    if value.isdigit():
        seconds = float(value)
        if seconds == 0:
            return None
    elif parts and "".join(number + unit for number, unit in parts) == value:
        seconds = sum(float(number) * _SECONDS_PER[unit] for number, unit in parts)
    else:
        seconds = 0.0
    if seconds < 1:
        raise refusal_error(400, 10165, "invalid per-message TTL")
    return seconds


def _schedule_due(value: str) -> float:
    """The Unix time of a one-shot ``@at <RFC 3339>`` schedule."""
    pattern, _, at = value.partition(" ")
    invalid = refusal_error(
        400, 10189, "message schedules pattern is invalid (the memory transport schedules '@at <time>' only)"
    )
    if pattern != "@at":
        raise invalid
    try:
        return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise invalid from None


@dataclass(slots=True)
class _Stored:
    sequence: int
    subject: str
    data: bytes
    headers: dict[str, str]
    stored_at: float
    # Durables that still owe an ack (interest and workqueue retention only).
    awaiting: set[str] = field(default_factory=set)

    @property
    def size(self) -> int:
        return len(self.subject) + len(self.data) + sum(len(k) + len(v) for k, v in self.headers.items())


class _MemoryStream:
    def __init__(self, config: Stream) -> None:
        self.config = config
        self.messages: OrderedDict[int, _Stored] = OrderedDict()
        self.last_sequence = 0
        self.bytes = 0
        self.last_by_subject: dict[str, int] = {}
        self.dedup: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self.durables: dict[str, _MemoryDurable] = {}

    def delete(self, sequence: int) -> None:
        stored = self.messages.pop(sequence, None)
        if stored is not None:
            self.bytes -= stored.size

    def purge_subject(self, subject: str, keep: int | None = None) -> None:
        for sequence in [q for q, stored in self.messages.items() if stored.subject == subject and q != keep]:
            self.delete(sequence)

    def expire(self, now: float) -> None:
        window = self.config.duplicate_window
        while self.dedup:
            msg_id, (_, at) = next(iter(self.dedup.items()))
            if now - at < window:
                break
            del self.dedup[msg_id]
        if self.config.max_age is not None:
            oldest_allowed = now - self.config.max_age
            while self.messages:
                first = next(iter(self.messages.values()))
                if first.stored_at > oldest_allowed:
                    break
                self.delete(first.sequence)

    def enforce_limits(self) -> None:
        config = self.config
        while self.messages and (
            (config.max_msgs is not None and len(self.messages) > config.max_msgs)
            or (config.max_bytes is not None and self.bytes > config.max_bytes)
        ):
            self.delete(next(iter(self.messages)))


@dataclass(slots=True)
class _Pending:
    delivery_count: int
    timer: asyncio.TimerHandle | None
    # Waiting for its nak delay or ack_wait to pass, or already queued for redelivery.
    redeliver: bool = False


class MemoryMessage:
    """One delivery from a :class:`MemoryBroker`."""

    __slots__ = (
        "_durable",
        "_pull",
        "consumer_sequence",
        "data",
        "delivery_count",
        "headers",
        "progress_at",
        "stream",
        "stream_sequence",
        "subject",
    )

    def __init__(
        self, durable: _MemoryDurable, pull: MemoryPull, stored: _Stored, delivery_count: int, now: float
    ) -> None:
        self._durable = durable
        self._pull = pull
        self.subject = stored.subject
        self.data = stored.data
        self.headers: Mapping[str, str] | None = dict(stored.headers) if stored.headers else None
        self.stream = durable.stream.config.name
        self.stream_sequence = stored.sequence
        self.delivery_count = delivery_count
        durable.delivered += 1
        self.consumer_sequence = durable.delivered
        self.progress_at = now

    # A severed connection's settles never reach the broker, as a crashed process's never reach the server.
    async def ack(self) -> None:
        if not self._pull.severed:
            self._durable.ack(self.stream_sequence)

    async def ack_confirmed(self, timeout: float) -> None:
        if self._pull.severed:
            raise TransientPublishFailure("the connection is severed")
        self._durable.ack(self.stream_sequence)

    async def nak(self, delay: float | None = None) -> None:
        if not self._pull.severed:
            self._durable.nak(self.stream_sequence, delay)

    async def term(self) -> None:
        if not self._pull.severed:
            self._durable.term(self.stream_sequence)

    async def in_progress(self) -> None:
        if not self._pull.severed:
            self._durable.in_progress(self.stream_sequence)


class MemoryPull:
    """A pull on a memory durable: the broker delivers while the consumer has room."""

    def __init__(self, durable: _MemoryDurable, sink: Callable[[InboundMessage], None], capacity: Callable[[], int]):
        self._durable = durable
        self.sink = sink
        self.capacity = capacity
        self.severed = False

    def notify(self) -> None:
        self._durable.schedule()

    async def stop(self) -> None:
        self._durable.detach(self)

    async def release(self) -> None:
        if not self.severed:
            self._durable.release(self)

    @property
    def holds_pin(self) -> bool:
        return self._durable.pinned_pull is self


class _MemoryDurable:
    def __init__(self, broker: MemoryBroker, stream: _MemoryStream, config: Durable) -> None:
        self.broker = broker
        self.stream = stream
        self.config = config
        self.next_sequence = 1  # the first stream sequence not yet delivered
        self.ack_floor = 0
        self.delivered = 0  # the consumer sequence: every delivery counts
        self.pending: dict[int, _Pending] = {}
        # Deliveries ran out before an ack: JetStream's ack floor never passes these.
        self.exhausted: set[int] = set()
        self.redeliveries: list[int] = []  # sorted stream sequences ready for redelivery
        self.pulls: deque[MemoryPull] = deque()
        self._scheduled = False
        # A pinned durable: the pull holding the pin, its id, and the TTL running out once it stopped pulling.
        self.pinned_pull: MemoryPull | None = None
        self.pin_id: str | None = None
        self.pinned_at: float | None = None
        self._pins = 0
        self._pin_expiry: asyncio.TimerHandle | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def schedule(self) -> None:
        if not self._scheduled and self.pulls:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._deliver)

    def detach(self, pull: MemoryPull) -> None:
        if pull in self.pulls:
            self.pulls.remove(pull)
        if pull is self.pinned_pull and self._pin_expiry is None:
            # The server only sees that no request renews the pin: it moves once the TTL has passed.
            self._pin_expiry = self.loop.call_later(self.config.ack_wait, self.unpin)

    def release(self, pull: MemoryPull) -> None:
        if pull is self.pinned_pull:
            # As the server turns away the old holder's queued request: it asks again from the back.
            if pull in self.pulls:
                self.pulls.remove(pull)
                self.pulls.append(pull)
            self.unpin()

    def unpin(self) -> None:
        if self._pin_expiry is not None:
            self._pin_expiry.cancel()
            self._pin_expiry = None
        self.pinned_pull = self.pin_id = self.pinned_at = None
        self.schedule()

    def _pin(self, pull: MemoryPull) -> None:
        self._pins += 1
        self.pinned_pull = pull
        self.pin_id = f"pin-{self._pins}"
        self.pinned_at = self.loop.time()

    def _next(self) -> tuple[_Stored, int] | None:
        """The next message to deliver and its delivery count: redeliveries first, in order."""
        while self.redeliveries:
            sequence = self.redeliveries.pop(0)
            entry = self.pending.get(sequence)
            stored = self.stream.messages.get(sequence)
            if entry is None or stored is None:
                self.pending.pop(sequence, None)
                continue
            entry.redeliver = False
            entry.delivery_count += 1
            return stored, entry.delivery_count
        if len(self.pending) >= self.config.max_ack_pending:
            return None
        while self.next_sequence <= self.stream.last_sequence:
            sequence = self.next_sequence
            self.next_sequence += 1
            stored = self.stream.messages.get(sequence)
            if stored is not None and subject_matches(self.config.filter_subject, stored.subject):
                self.pending[sequence] = _Pending(delivery_count=1, timer=None)
                return stored, 1
        return None

    def _deliver(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        self.stream.expire(loop.time())
        while self.pulls:
            if self.config.pinned and self.pinned_pull is not None:
                pull: MemoryPull | None = self.pinned_pull if self.pinned_pull.capacity() > 0 else None
                if pull not in self.pulls:
                    return  # held by an instance that stopped pulling: wait for the TTL
            else:
                pull = next((p for p in self.pulls if p.capacity() > 0), None)
            if pull is None:
                return
            found = self._next()
            if found is None:
                return
            if self.config.pinned and self.pinned_pull is None:
                self._pin(pull)
            stored, delivery_count = found
            entry = self.pending[stored.sequence]
            entry.timer = loop.call_at(loop.time() + self.config.ack_wait, self._ack_wait_expired, stored.sequence)
            # Round-robin, so instances of one durable share the work.
            self.pulls.remove(pull)
            self.pulls.append(pull)
            pull.sink(MemoryMessage(self, pull, stored, delivery_count, loop.time()))

    def _settle(self, sequence: int) -> _Pending | None:
        entry = self.pending.pop(sequence, None)
        if entry is not None and entry.timer is not None:
            entry.timer.cancel()
        if sequence in self.redeliveries:
            self.redeliveries.remove(sequence)
        return entry

    def _advance_floor(self) -> None:
        floor = min(self.pending.keys() | self.exhausted, default=self.next_sequence) - 1
        self.ack_floor = max(self.ack_floor, floor)

    def ack(self, sequence: int) -> None:
        if self._settle(sequence) is None:
            return
        self._advance_floor()
        self.broker.acknowledged(self.stream, self.config.name, sequence)
        self.schedule()

    def term(self, sequence: int) -> None:
        self.ack(sequence)

    def nak(self, sequence: int, delay: float | None) -> None:
        entry = self.pending.get(sequence)
        if entry is None or entry.redeliver:
            return
        if entry.timer is not None:
            entry.timer.cancel()
        entry.redeliver = True
        if delay:
            loop = asyncio.get_running_loop()
            entry.timer = loop.call_at(loop.time() + delay, self._ready_again, sequence)
        else:
            entry.timer = None
            self._ready_again(sequence)

    def in_progress(self, sequence: int) -> None:
        entry = self.pending.get(sequence)
        if entry is None or entry.redeliver or entry.timer is None:
            return
        entry.timer.cancel()
        loop = asyncio.get_running_loop()
        entry.timer = loop.call_at(loop.time() + self.config.ack_wait, self._ack_wait_expired, sequence)

    def _ack_wait_expired(self, sequence: int) -> None:
        entry = self.pending.get(sequence)
        if entry is None or entry.redeliver:
            return
        entry.redeliver = True
        self._ready_again(sequence)

    def _ready_again(self, sequence: int) -> None:
        entry = self.pending.get(sequence)
        if entry is None:
            return
        entry.timer = None
        if 0 < self.config.max_deliver <= entry.delivery_count:
            # Deliveries exhausted: JetStream stops delivering it.
            del self.pending[sequence]
            self.exhausted.add(sequence)
            self._advance_floor()
            self.schedule()
            return
        bisect.insort(self.redeliveries, sequence)
        self.schedule()


class MemoryBroker:
    """The in-memory "server" shared by the :class:`MemoryTransport` connections of a test."""

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD, wall_clock: Callable[[], float] = wall_time) -> None:
        self.max_payload = max_payload
        self.streams: dict[str, _MemoryStream] = {}
        self.buckets: dict[str, MemoryKeyValue] = {}
        # What "@at <time>" is measured against; the delay until then runs on the loop's clock.
        self.wall_clock = wall_clock

    def stream_for(self, subject: str) -> _MemoryStream | None:
        for stream in self.streams.values():
            if any(subject_matches(pattern, subject) for pattern in stream.config.wire_subjects):
                return stream
        return None

    def ensure_stream(self, config: Stream) -> None:
        current = self.streams.get(config.name)
        if current is None:
            for other in self.streams.values():
                for mine in config.wire_subjects:
                    if any(subjects_overlap(mine, theirs) for theirs in other.config.wire_subjects):
                        raise StreamConfigError(
                            config.name, "create", f"subjects overlap with stream {other.config.name}"
                        )
            self.streams[config.name] = _MemoryStream(config)
            return
        for name in ("storage", "retention"):
            have, want = getattr(current.config, name), getattr(config, name)
            if have != want:
                raise StreamConfigError(
                    config.name, name, f"is {have} on the server, declared {want}; this cannot change in place"
                )
        current.config = config
        current.enforce_limits()

    def ensure_durable(self, config: Durable) -> None:
        stream = self.streams.get(config.stream)
        if stream is None:
            raise StreamConfigError(config.stream, f"consumer {config.name}", "stream not found")
        durable = stream.durables.get(config.name)
        if durable is None:
            stream.durables[config.name] = _MemoryDurable(self, stream, config)
        else:
            durable.config = config

    def publish(self, subject: str, payload: bytes, headers: Mapping[str, str], now: float) -> PublishAck:
        stream = self.stream_for(subject)
        if stream is None:
            raise TransientPublishFailure("no responders: no stream, or no JetStream leader")
        config = stream.config
        if config.partitions is not None:
            # The stream's subject transform: the key token's partition appended.
            subject = f"{subject}.{partition_of(subject.rsplit('.', 1)[1], config.partitions)}"
        stream.expire(now)
        expected_stream = headers.get("Nats-Expected-Stream")
        if expected_stream is not None and expected_stream != config.name:
            raise PublishError("JetStream refused the message (400/10060): expected stream does not match")
        size = len(payload) + sum(len(k) + len(v) for k, v in headers.items())
        if config.max_msg_size is not None and size > config.max_msg_size:
            raise PublishError("JetStream refused the message (400/10054): message size exceeds maximum allowed")
        msg_id = headers.get("Nats-Msg-Id")
        if msg_id is not None and msg_id in stream.dedup:
            return PublishAck(config.name, stream.dedup[msg_id][0], duplicate=True)
        expected_last = headers.get("Nats-Expected-Last-Sequence")
        if expected_last is not None and int(expected_last) != stream.last_sequence:
            raise WrongLastSequence(f"wrong last sequence: {stream.last_sequence}")
        expected_subject = headers.get("Nats-Expected-Last-Subject-Sequence")
        if expected_subject is not None and int(expected_subject) != stream.last_by_subject.get(subject, 0):
            raise WrongLastSequence(f"wrong last sequence: {stream.last_by_subject.get(subject, 0)}")
        ttl, rollup, due = self._check_schedule_headers(stream, subject, headers)
        stream.last_sequence += 1
        sequence = stream.last_sequence
        stored = _Stored(sequence, subject, payload, dict(headers), now)
        if config.retention != "limits":
            stored.awaiting = {
                name for name, d in stream.durables.items() if subject_matches(d.config.filter_subject, subject)
            }
        # An interest stream keeps nothing that no one is interested in.
        if config.retention != "interest" or stored.awaiting:
            stream.messages[sequence] = stored
            stream.bytes += stored.size
        stream.last_by_subject[subject] = sequence
        if msg_id is not None:
            stream.dedup[msg_id] = (sequence, now)
        if rollup == "sub":
            stream.purge_subject(subject, keep=sequence)
        elif rollup == "all":
            for older in [q for q in stream.messages if q != sequence]:
                stream.delete(older)
        scheduler = headers.get("Nats-Scheduler")
        if scheduler is not None and headers.get("Nats-Schedule-Next") == "purge":
            stream.purge_subject(scheduler)  # a one-shot schedule is gone once it fired
        if ttl is not None:
            asyncio.get_running_loop().call_later(ttl, stream.delete, sequence)
        if due is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(max(0.0, due - self.wall_clock()), self._fire_schedule, stream, sequence)
        stream.enforce_limits()
        for durable in stream.durables.values():
            durable.schedule()
        return PublishAck(config.name, sequence)

    @staticmethod
    def _check_schedule_headers(
        stream: _MemoryStream, subject: str, headers: Mapping[str, str]
    ) -> tuple[float | None, str | None, float | None]:
        """A message's TTL, roll-up and schedule due time, refused as nats-server refuses them."""
        config = stream.config
        ttl = rollup = due = None
        if "Nats-TTL" in headers:
            if not config.allow_msg_schedules:
                raise refusal_error(400, 10166, "per-message TTL is disabled")
            ttl = _message_ttl(headers["Nats-TTL"])
        if "Nats-Rollup" in headers:
            rollup = headers["Nats-Rollup"]
            if not config.allow_msg_schedules:
                raise refusal_error(500, 10111, "rollup not permitted")
            if rollup not in ("sub", "all"):
                raise refusal_error(500, 10111, f"rollup value invalid: {rollup}")
        if "Nats-Schedule" in headers:
            if not config.allow_msg_schedules:
                raise refusal_error(400, 10188, "message schedules is disabled")
            due = _schedule_due(headers["Nats-Schedule"])
            target = headers.get("Nats-Schedule-Target", "")
            in_stream = any(subject_matches(pattern, target) for pattern in config.wire_subjects)
            if not target or target == subject or "*" in target or ">" in target or not in_stream:
                raise refusal_error(400, 10190, "message schedules target is invalid")
        return ttl, rollup, due

    def _fire_schedule(self, stream: _MemoryStream, sequence: int) -> None:
        schedule = stream.messages.get(sequence)
        if schedule is None or self.streams.get(stream.config.name) is not stream:
            return  # rolled up (cancelled), expired or purged before it came due
        # As nats-server: the schedule's own headers stripped, the target's copy names its scheduler.
        headers = {
            name: value
            for name, value in schedule.headers.items()
            if not name.startswith(("Nats-Schedule", "Nats-Expected-"))
            and name not in ("Nats-Scheduler", "Nats-Msg-Id", "Nats-TTL", "Nats-Rollup")
        }
        headers["Nats-Scheduler"] = schedule.subject
        headers["Nats-Schedule-Next"] = "purge"
        target = schedule.headers["Nats-Schedule-Target"]
        self.publish(target, schedule.data, headers, asyncio.get_running_loop().time())

    def publish_atomic(self, messages: list[BatchMessage], now: float) -> PublishAck:
        """All or none, checked as JetStream checks an atomic batch at its commit."""
        stream = self.stream_for(messages[-1][0])  # the commit's stream judges the batch
        if stream is None:
            raise TransientPublishFailure("no responders: no stream, or no JetStream leader")
        if not stream.config.allow_atomic:
            raise refusal_error(400, 10174, "atomic publish is disabled")
        if any(self.stream_for(subject) is not stream for subject, _, _ in messages):
            raise refusal_error(400, 10176, "atomic publish batch is incomplete")
        stream.expire(now)
        ids = [headers.get("Nats-Msg-Id") for _, _, headers in messages]
        if any(i in stream.dedup for i in ids if i is not None) or len(set(ids)) < len(ids):
            raise refusal_error(400, 10201, "atomic publish batch contains duplicate message id", stream.config.name)
        written: set[str] = set()
        for number, (subject, _, headers) in enumerate(messages):
            # As JetStream: checks see the stream as it was before the batch; a check of the last
            # sequence only on the first message, of a subject's only before the batch writes to it.
            expected_last = headers.get("Nats-Expected-Last-Sequence")
            if expected_last is not None and (number > 0 or int(expected_last) != stream.last_sequence):
                raise WrongLastSequence(f"wrong last sequence: {stream.last_sequence}")
            expected_subject = headers.get("Nats-Expected-Last-Subject-Sequence")
            held = stream.last_by_subject.get(subject, 0)
            if expected_subject is not None and (subject in written or int(expected_subject) != held):
                raise WrongLastSequence(f"wrong last sequence: {held}")
            written.add(subject)
        acks = [self.publish(subject, payload, headers, now) for subject, payload, headers in messages]
        return acks[-1]

    def acknowledged(self, stream: _MemoryStream, durable: str, sequence: int) -> None:
        if stream.config.retention == "limits":
            return
        stored = stream.messages.get(sequence)
        if stored is None:
            return
        if stream.config.retention == "workqueue":
            stream.delete(sequence)
            return
        stored.awaiting.discard(durable)
        if not stored.awaiting:
            stream.delete(sequence)

    def stream_messages(self, stream: str) -> int:
        """How many messages the stream holds now (age limits applied)."""
        state = self.streams[stream]
        state.expire(asyncio.get_running_loop().time())
        return len(state.messages)

    def durable(self, config: Durable) -> _MemoryDurable:
        stream = self.streams.get(config.stream)
        if stream is None or config.name not in stream.durables:
            raise StreamConfigError(config.stream, f"consumer {config.name}", "not found")
        return stream.durables[config.name]

    def info(self, stream: str, durable: str) -> DurableState:
        """What JetStream's consumer info would say about a durable, for assertions."""
        state = self.streams[stream].durables[durable]
        return DurableState(
            ack_floor=state.ack_floor,
            num_ack_pending=len(state.pending),
            num_pending=sum(
                1
                for s in state.stream.messages.values()
                if s.sequence >= state.next_sequence and subject_matches(state.config.filter_subject, s.subject)
            ),
        )


class MemoryKeyValue:
    """A key-value bucket held by a :class:`MemoryBroker`; revisions count up per bucket, as a stream's do."""

    def __init__(self) -> None:
        self._values: dict[str, StoredValue] = {}
        self._revision = 0

    async def get(self, key: str) -> StoredValue | None:
        return self._values.get(key)

    async def create(self, key: str, value: bytes) -> int | None:
        return None if key in self._values else self._store(key, value)

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        current = self._values.get(key)
        return self._store(key, value) if current is not None and current.revision == revision else None

    async def keys(self) -> list[str]:
        return sorted(self._values)

    def _store(self, key: str, value: bytes) -> int:
        self._revision += 1
        self._values[key] = StoredValue(bytes(value), self._revision)
        return self._revision


class MemoryTransport:
    """One connection to a :class:`MemoryBroker`; implements the Transport protocol."""

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker if broker is not None else MemoryBroker()
        self._pulls: list[MemoryPull] = []

    @property
    def max_payload(self) -> int:
        return self.broker.max_payload

    @property
    def message_schedules(self) -> bool:
        return True

    @property
    def connected(self) -> bool:
        return True

    @property
    def reconnects(self) -> int:
        return 0

    async def durable_state(self, durable: Durable) -> DurableState:
        return self.broker.info(durable.stream, durable.name)

    async def stream_size(self, stream: str) -> int:
        return self.broker.stream_messages(stream)

    async def pinned_state(self, durable: Durable) -> PinState:
        state = self.broker.durable(durable)
        since = None if state.pinned_at is None else f"{state.pinned_at:.3f}s on the loop's clock"
        return PinState(state.pin_id, since, len(state.pulls))

    async def unpin(self, durable: Durable) -> None:
        self.broker.durable(durable).unpin()

    def sever(self) -> None:
        """Drop this connection dead, as a SIGKILL would: no more deliveries, and no settle of this one's counts."""
        for pull in self._pulls:
            pull.severed = True
            pull._durable.detach(pull)
        self._pulls.clear()

    async def ensure_stream(self, stream: Stream) -> None:
        self.broker.ensure_stream(stream)

    async def ensure_durable(self, durable: Durable) -> None:
        self.broker.ensure_durable(durable)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str], *, timeout: float) -> PublishAck:
        await asyncio.sleep(0)  # a publish is a round trip: other tasks run meanwhile
        return self.broker.publish(subject, payload, headers, asyncio.get_running_loop().time())

    async def publish_async(self, subject: str, payload: bytes, headers: dict[str, str]) -> asyncio.Future[PublishAck]:
        future: asyncio.Future[PublishAck] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self.broker.publish(subject, payload, headers, asyncio.get_running_loop().time()))
        except Exception as exc:
            future.set_exception(exc)
        return future

    async def publish_atomic(self, messages: list[BatchMessage], *, timeout: float) -> PublishAck:
        await asyncio.sleep(0)
        return self.broker.publish_atomic(messages, asyncio.get_running_loop().time())

    async def batch_target(self, subject: str) -> None:
        """The memory broker has no fast-ingest batches: publish_many takes the pipelined path, same outcomes."""
        return None

    async def pull(
        self,
        durable: Durable,
        sink: Callable[[InboundMessage], None],
        capacity: Callable[[], int],
        *,
        min_batch: int,
        on_failure: Callable[[EventwireError], None] | None = None,
    ) -> MemoryPull:
        stream = self.broker.streams.get(durable.stream)
        if stream is None or durable.name not in stream.durables:
            raise StreamConfigError(durable.stream, f"consumer {durable.name}", "not found")
        state = stream.durables[durable.name]
        pull = MemoryPull(state, sink, capacity)
        state.pulls.append(pull)
        self._pulls.append(pull)
        state.schedule()
        return pull

    async def key_value(self, bucket: str, *, replicas: int = 1, create: bool = True) -> MemoryKeyValue | None:
        if bucket not in self.broker.buckets and create:
            self.broker.buckets[bucket] = MemoryKeyValue()
        return self.broker.buckets.get(bucket)

    async def close(self) -> None:
        for pull in self._pulls:
            await pull.stop()
        self._pulls.clear()
