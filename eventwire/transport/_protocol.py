"""The seam between eventwire and a broker: one protocol, a JetStream and an in-memory implementation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .._errors import BatchHoldsDuplicate, EventwireError, PublishError, WrongLastSequence
from .._streams import Durable, Stream


@dataclass(frozen=True, slots=True)
class PublishAck:
    """JetStream's acknowledgement of a stored (or deduplicated) message."""

    stream: str
    sequence: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class DurableState:
    """What the server says about a durable: its ack floor, unacked deliveries and messages not yet delivered."""

    ack_floor: int
    num_ack_pending: int
    num_pending: int


@dataclass(frozen=True, slots=True)
class PinState:
    """Who holds a pinned durable: the server's pin id (None when no instance does), since when, and how many
    pull requests wait on it (a partitioned handler's instance keeps one out on each partition)."""

    pin_id: str | None
    since: str | None
    waiting: int


@dataclass(frozen=True, slots=True)
class BatchRefusal:
    """The server's error for one message of a batch (its index) or for the batch as a whole (None)."""

    index: int | None
    code: int
    err_code: int
    description: str

    @property
    def batching_disabled(self) -> bool:
        """The stream does not take fast-ingest batches (its ``allow_batched`` is off)."""
        return self.err_code == _BATCH_PUBLISH_DISABLED

    @property
    def error(self) -> Exception:
        return refusal_error(self.code, self.err_code, self.description)


@dataclass(frozen=True, slots=True)
class FastBatchResult:
    """How far one batch got.

    The first ``settled`` messages are persisted or were dropped as duplicates;
    ``last_sequence`` is the stream sequence of the last one stored (None when
    none was). ``first_duplicate`` is the stored sequence when message 1 was a
    known msg id (the server then ends the batch at once). Of the messages after
    ``settled``, none is stored when ``refusal`` names one of them; when
    ``unknown`` is set the batch broke off (lost server, silence) and some may be.
    ``not_batched`` means the server treated message 1 as an ordinary publish:
    it has no fast path, and ``ordinary_ack`` is that message's PubAck.
    """

    settled: int
    last_sequence: int | None = None
    first_duplicate: int | None = None
    refusal: BatchRefusal | None = None
    unknown: str | None = None
    not_batched: dict[str, Any] | None = None


BatchMessage = tuple[str, bytes, dict[str, str]]


class BatchTarget(Protocol):
    """A stream that takes fast-ingest batches (nats-server 2.14+, ``allow_batched``)."""

    @property
    def stream(self) -> str: ...

    async def last_sequence(self) -> int:
        """The sequence of the newest message the stream holds (0 when it never held one)."""

    async def send(self, messages: list[BatchMessage], *, flow: int, stall_timeout: float) -> FastBatchResult:
        """Send ``messages`` as one batch; the result says how far it got."""

    async def stored_msg_ids(self, first: int, last: int) -> dict[str, int]:
        """``Nats-Msg-Id`` to sequence of the messages the stream holds from ``first`` to ``last``."""


class TransientPublishFailure(Exception):
    """A publish attempt failed in a way that a retry with the same msg id may fix."""


# "wrong last sequence: N", and the same without N (inside a batch).
_WRONG_LAST_SEQUENCE = (10071, 10164)
# A retry reached the stream leader while the first attempt with the same msg id is still being
# replicated: the event will be stored, and the next retry gets its ack (duplicate=True).
_DUPLICATE_IN_PROCESS = 10158
_BATCH_PUBLISH_DISABLED = 10205
_ATOMIC_PUBLISH_DISABLED = 10174
_ATOMIC_BATCH_INCOMPLETE = 10176
_ATOMIC_BATCH_DUPLICATE = 10201


def refusal_error(code: int, err_code: int, description: str, stream: str = "") -> Exception:
    """JetStream's error answer to a publish: transient (503, 429, in process) or the typed refusal."""
    if err_code in _WRONG_LAST_SEQUENCE:
        return WrongLastSequence(description)
    if err_code == _ATOMIC_BATCH_DUPLICATE:
        return BatchHoldsDuplicate(f"JetStream refused the atomic batch: {description}; none of it was stored", stream)
    if err_code == _ATOMIC_PUBLISH_DISABLED:
        return PublishError(f"JetStream refused the atomic batch: {description} (declare the stream allow_atomic=True)")
    if err_code == _ATOMIC_BATCH_INCOMPLETE:
        return PublishError(
            f"JetStream refused the atomic batch: {description} "
            "(all its events must go to one stream; none of it was stored)"
        )
    if code in (503, 429) or err_code == _DUPLICATE_IN_PROCESS:
        return TransientPublishFailure(f"JetStream: {description}")
    return PublishError(f"JetStream refused the message ({code}/{err_code}): {description}")


class InboundMessage(Protocol):
    """One delivery of a stored message to a durable consumer."""

    @property
    def subject(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, str] | None: ...

    @property
    def stream(self) -> str: ...

    @property
    def stream_sequence(self) -> int: ...

    @property
    def delivery_count(self) -> int: ...

    @property
    def consumer_sequence(self) -> int:
        """Counts every delivery of the durable, redeliveries included."""

    # Loop time of the last sign of life sent to the broker (delivery or in-progress).
    progress_at: float

    async def ack(self) -> None: ...

    async def ack_confirmed(self, timeout: float) -> None:
        """Ack and wait for the server to confirm it (JetStream's double ack); raise if no confirmation came."""

    async def nak(self, delay: float | None = None) -> None: ...

    async def term(self) -> None: ...

    async def in_progress(self) -> None: ...


class MessageSource(Protocol):
    """A continuous pull: keeps requests in flight so the consumer never waits for a round trip."""

    def notify(self) -> None:
        """The consumer has room again; issue the next pull if it is due."""

    async def stop(self) -> None:
        """Stop pulling; messages already on their way still reach the sink."""

    async def release(self) -> None:
        """Hand a pinned durable's pin to the next instance now (after a stop, or to balance partitions)."""

    @property
    def holds_pin(self) -> bool:
        """Whether this pull holds its pinned durable's pin, as far as it knows."""


@dataclass(frozen=True, slots=True)
class StoredValue:
    value: bytes
    revision: int


class KeyValueStore(Protocol):
    """A bucket of values, each with a revision; a write names the revision it replaces, so none is lost."""

    async def get(self, key: str) -> StoredValue | None: ...

    async def create(self, key: str, value: bytes) -> int | None:
        """Store ``value`` under a new ``key``; its revision, or None when the key exists."""

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        """Replace the value at ``revision``; the new revision, or None when it changed since."""

    async def keys(self) -> list[str]: ...


class Transport(Protocol):
    @property
    def max_payload(self) -> int: ...

    @property
    def message_schedules(self) -> bool:
        """Whether streams can schedule messages here (``Stream(allow_msg_schedules=True)``)."""

    @property
    def connected(self) -> bool:
        """Whether the broker can hear us now (False while reconnecting)."""

    @property
    def reconnects(self) -> int:
        """How often the connection came back after a loss."""

    async def durable_state(self, durable: Durable) -> DurableState: ...

    async def pinned_state(self, durable: Durable) -> PinState:
        """Who holds the pin of a pinned durable."""

    async def unpin(self, durable: Durable) -> None:
        """Take the pin of a pinned durable from its holder; the next instance to pull gets it."""

    async def stream_size(self, stream: str) -> int:
        """How many messages ``stream`` holds."""

    async def ensure_stream(self, stream: Stream) -> None: ...

    async def ensure_durable(self, durable: Durable) -> None: ...

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str], *, timeout: float) -> PublishAck: ...

    async def publish_async(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> asyncio.Future[PublishAck]: ...

    async def publish_atomic(self, messages: list[BatchMessage], *, timeout: float) -> PublishAck:
        """Store ``messages`` (all for one stream) all or none; the ack of the last one.

        Raises :class:`BatchHoldsDuplicate` when the stream already has one of
        their msg ids, :class:`PublishError` when refused, and
        :class:`TransientPublishFailure` when the outcome is unknown.
        """

    async def batch_target(self, subject: str) -> BatchTarget | None:
        """Where ``subject``'s stream takes fast-ingest batches; None sends it on the pipelined path."""

    async def pull(
        self,
        durable: Durable,
        sink: Callable[[InboundMessage], None],
        capacity: Callable[[], int],
        *,
        min_batch: int,
        on_failure: Callable[[EventwireError], None] | None = None,
    ) -> MessageSource:
        """Deliver to ``sink`` while ``capacity()`` allows; ``on_failure`` hears once if the pull can never work.

        That is a refused pull or ack permission: the source stops, and nothing it delivered can be settled.
        """

    async def key_value(self, bucket: str, *, replicas: int = 1, create: bool = True) -> KeyValueStore | None:
        """The key-value bucket ``bucket``, made with ``replicas`` if missing and ``create``; else None if missing."""

    async def close(self) -> None: ...
