"""The seam between eventwire and a broker: one protocol, a JetStream and an in-memory implementation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .._errors import EventwireError
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


class TransientPublishFailure(Exception):
    """A publish attempt failed in a way that a retry with the same msg id may fix."""


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


class Transport(Protocol):
    @property
    def max_payload(self) -> int: ...

    @property
    def connected(self) -> bool:
        """Whether the broker can hear us now (False while reconnecting)."""

    @property
    def reconnects(self) -> int:
        """How often the connection came back after a loss."""

    async def durable_state(self, durable: Durable) -> DurableState: ...

    async def stream_size(self, stream: str) -> int:
        """How many messages ``stream`` holds."""

    async def ensure_stream(self, stream: Stream) -> None: ...

    async def ensure_durable(self, durable: Durable) -> None: ...

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str], *, timeout: float) -> PublishAck: ...

    async def publish_async(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> asyncio.Future[PublishAck]: ...

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

    async def close(self) -> None: ...
