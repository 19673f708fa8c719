"""Dead letters for operators: read, replay and purge the dead-letter streams (``eventwire dlq``).

A dead letter is the original message, payload and headers untouched, plus
``Eventwire-Dlq-*`` headers saying why it failed and where it came from; see
docs/failures.md. Dead-letter streams are named ``DLQ-<service>``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime

import nats.js.errors
from nats.js.client import JetStreamContext

from . import _dead_letters as dl
from ._dead_letters import dead_letter_stream
from ._envelope import decode_value
from ._errors import EnvelopeError
from ._publisher import send_with_retries
from ._streams import subject_matches
from .transport import PublishAck, Transport

REPLAYED_FROM = "Eventwire-Replayed-From"
STREAM_PREFIX = "DLQ-"


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter, as stored in a dead-letter stream."""

    stream: str
    sequence: int
    reason: str
    service: str
    handler: str
    subject: str
    original_stream: str
    original_sequence: int
    delivery_count: int
    time: datetime | None
    error_type: str | None
    error: str | None
    traceback: str | None
    payload: bytes
    headers: dict[str, str] = field(repr=False)

    @property
    def ce_type(self) -> str | None:
        return _plain(self.headers.get("ce-type"))

    @property
    def ce_id(self) -> str | None:
        return _plain(self.headers.get("ce-id"))

    def original_headers(self) -> dict[str, str]:
        """The headers the event carried before it was dead-lettered (its dedup id restored)."""
        headers = {k: v for k, v in self.headers.items() if not k.startswith(dl.PREFIX) and k != "Nats-Msg-Id"}
        msg_id = self.headers.get(dl.MSG_ID)
        if msg_id is not None:
            headers["Nats-Msg-Id"] = msg_id
        return headers

    @classmethod
    def from_stored(cls, stream: str, sequence: int, headers: dict[str, str], payload: bytes) -> DeadLetter:
        def number(name: str) -> int:
            try:
                return int(headers.get(name, "0"))
            except ValueError:
                return 0

        stamp = headers.get(dl.TIME)
        when = None
        if stamp:
            with contextlib.suppress(ValueError):
                when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        return cls(
            stream=stream,
            sequence=sequence,
            reason=headers.get(dl.REASON, "?"),
            service=headers.get(dl.SERVICE, "?"),
            handler=headers.get(dl.HANDLER, "?"),
            subject=headers.get(dl.SUBJECT, ""),
            original_stream=headers.get(dl.STREAM, ""),
            original_sequence=number(dl.SEQUENCE),
            delivery_count=number(dl.DELIVERY_COUNT),
            time=when,
            error_type=headers.get(dl.ERROR_TYPE),
            error=_plain(headers.get(dl.ERROR)),
            traceback=_plain(headers.get(dl.TRACEBACK)),
            payload=payload,
            headers=headers,
        )


def _plain(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return decode_value(value, "")
    except EnvelopeError:
        return value


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters an operation applies to; every field left empty matches everything."""

    service: str | None = None
    handler: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    sequences: frozenset[int] = frozenset()

    def matches(self, letter: DeadLetter) -> bool:
        if self.service is not None and letter.service != self.service:
            return False
        if self.handler is not None and letter.handler != self.handler:
            return False
        if self.event_type is not None and letter.ce_type != self.event_type:
            return False
        if self.sequences and letter.sequence not in self.sequences:
            return False
        if letter.time is not None:
            if self.since is not None and letter.time < self.since:
                return False
            if self.until is not None and letter.time > self.until:
                return False
        return True


async def dead_letter_streams(js: JetStreamContext, service: str | None = None) -> list[str]:
    """The dead-letter streams on the server (of one service, when given)."""
    if service is not None:
        name = f"{STREAM_PREFIX}{service}"
        try:
            await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            return []
        return [name]
    names = [info.config.name for info in await js.streams_info()]
    return sorted(n for n in names if n and n.startswith(STREAM_PREFIX))


async def read(js: JetStreamContext, matching: DeadLetterFilter = DeadLetterFilter()) -> AsyncIterator[DeadLetter]:
    """Every dead letter that matches, oldest first, stream by stream."""
    for stream in await dead_letter_streams(js, matching.service):
        info = await js.stream_info(stream)
        if not info.state.messages:
            continue
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                stored = await js.get_msg(stream, sequence)
            except nats.js.errors.NotFoundError:
                continue  # deleted or expired
            letter = DeadLetter.from_stored(stream, sequence, dict(stored.headers or {}), stored.data or b"")
            if matching.matches(letter):
                yield letter


async def replay(
    js: JetStreamContext,
    transport: Transport,
    letter: DeadLetter,
    *,
    keep: bool = False,
    deadline: float = 30.0,
) -> PublishAck:
    """Publish a dead letter's event again to its original subject, then delete the dead letter.

    The event keeps its ``ce-id`` (it is the same event) but gets a new dedup
    id, so JetStream stores it even inside the duplicate window; replaying the
    same dead letter twice within the window stores it once.
    """
    headers = letter.original_headers()
    headers["Nats-Msg-Id"] = f"replay:{letter.stream}:{letter.sequence}"
    headers[REPLAYED_FROM] = f"{letter.stream}:{letter.sequence}"
    ack = await send_with_retries(transport, letter.subject, letter.payload, headers, deadline=deadline)
    if not keep:
        await js.delete_msg(letter.stream, letter.sequence)
    return ack


async def recipients(js: JetStreamContext, stream: str, subject: str) -> list[str]:
    """The durables of ``stream`` whose filter takes ``subject``: everyone a replay to it reaches, not only
    the handler that dead-lettered the event."""
    names = []
    for info in await js.consumers_info(stream):
        config = info.config
        filters = config.filter_subjects or ([config.filter_subject] if config.filter_subject else [])
        durable = config.durable_name  # an ephemeral consumer (a running `eventwire tail`) is nobody's handler
        if durable and (not filters or any(subject_matches(pattern, subject) for pattern in filters)):
            names.append(durable)
    return sorted(names)


async def purge(
    js: JetStreamContext, matching: DeadLetterFilter, on_deleted: Callable[[DeadLetter], None] | None = None
) -> int:
    """Delete the matching dead letters; return how many."""
    letters = [letter async for letter in read(js, matching)]
    for letter in letters:
        await js.delete_msg(letter.stream, letter.sequence)
        if on_deleted is not None:
            on_deleted(letter)
    return len(letters)


__all__ = [
    "REPLAYED_FROM",
    "DeadLetter",
    "DeadLetterFilter",
    "dead_letter_stream",
    "dead_letter_streams",
    "purge",
    "read",
    "replay",
]
