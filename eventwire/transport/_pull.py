"""A continuous pull on one JetStream durable, and the messages it delivers.

Each pull request has a reply subject of its own, so every status the server
sends ends the request it is about: 404 and 408 (nothing more, or expired),
409 (leader change, server shutdown, a limit, the durable deleted), 503 (no
consumer leader yet, common right after a failover), 400. A request that gets
no message and no idle heartbeat for two heartbeat intervals is taken as lost
(its consumer leader died with it). What a request still owed goes back to the
consumer's room, and the next request follows at once, or after a short backoff
(250 ms doubling to 2 s) when the server could not take the last one.

On a pinned durable (priority policy ``pinned_client``) every request names the
priority group and, once a delivery has told it (``Nats-Pin-Id``), the pin id;
the server delivers only to the pinned instance and answers the others' requests
with 423 when the pin has moved on, so the pull forgets the id and asks again
without one. Such a pull keeps one request out at a time (deliveries do not say
which request they fill, and the server skips requests without the id), and
renews it well within the pinned TTL so the pin stays while the instance lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats.errors

from .._errors import EventwireError, PermissionDenied, StreamConfigError
from .._nats_client import EventwireClient
from .._streams import PARTITION_GROUP, Durable
from ._protocol import InboundMessage

logger = logging.getLogger("eventwire.transport")

RETRY_FIRST = 0.25
RETRY_MAX = 2.0
# Consumer-side 409s after which pulling again cannot help.
_FATAL_409 = ("consumer deleted", "consumer is push based")
# After this many refusals in a row, ask whether the durable still exists: one deleted while a request was
# queued on the server answers nothing but 503s from then on.
_REFUSALS_BEFORE_CHECK = 5
_CONSUMER_NOT_FOUND = 10014


class JetStreamMessage:
    """A delivered JetStream message with its metadata parsed once."""

    __slots__ = (
        "_nc",
        "consumer_sequence",
        "data",
        "delivery_count",
        "headers",
        "progress_at",
        "reply",
        "stream",
        "stream_sequence",
        "subject",
    )

    def __init__(
        self, nc: EventwireClient, subject: str, reply: str, data: bytes, headers: dict[str, str] | None, *, now: float
    ) -> None:
        self._nc = nc
        self.subject = subject
        self.reply = reply
        self.data = data
        self.headers = headers
        # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>, or the v2 form with
        # domain and account hash in front and a random token at the end.
        tokens = reply.split(".")
        offset = 2 if len(tokens) == 9 else 4
        self.delivery_count = int(tokens[offset + 2])
        self.stream = tokens[offset]
        self.stream_sequence = int(tokens[offset + 3])
        self.consumer_sequence = int(tokens[offset + 4])
        self.progress_at = now

    async def ack(self) -> None:
        await self._nc.publish_reply(self.reply)

    async def ack_confirmed(self, timeout: float) -> None:
        await self._nc.request(self.reply, _ACK, timeout=timeout)

    async def nak(self, delay: float | None = None) -> None:
        payload = _NAK if not delay else _NAK + b" " + json.dumps({"delay": int(delay * 1e9)}).encode()
        await self._nc.publish_reply(self.reply, payload)

    async def term(self) -> None:
        await self._nc.publish_reply(self.reply, _TERM)

    async def in_progress(self) -> None:
        await self._nc.publish_reply(self.reply, _IN_PROGRESS)


# What the server reads on a delivery's reply subject (ADR-15); an empty message is an ack too.
_ACK, _NAK, _TERM, _IN_PROGRESS = b"+ACK", b"-NAK", b"+TERM", b"+WPI"


@dataclass(slots=True)
class _Request:
    remaining: int
    heard_at: float


def _first_line(text: str | None) -> str:
    # nats-py puts the header lines after a status without text into its description.
    return (text or "").split("\n", 1)[0].strip()


class JetStreamPull:
    """A continuous pull on one durable: requests are issued before the previous ones are used up."""

    def __init__(
        self,
        nc: EventwireClient,
        durable: Durable,
        sink: Callable[[InboundMessage], None],
        capacity: Callable[[], int],
        *,
        min_batch: int,
        expires: float,
        idle_heartbeat: float,
        on_failure: Callable[[EventwireError], None] | None = None,
    ) -> None:
        self._nc = nc
        self._durable = durable
        self._sink = sink
        self._capacity = capacity
        self._on_failure = on_failure
        self.failure: EventwireError | None = None
        self._min_batch = min_batch
        self._expires = expires
        self._idle_heartbeat = idle_heartbeat
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{durable.stream}.{durable.name}"
        self._inbox = nc.new_inbox()
        self._loop = asyncio.get_running_loop()
        # Requests in the order they were sent; the server fills them in that order.
        self._requests: OrderedDict[str, _Request] = OrderedDict()
        self._tokens = itertools.count()
        self._outstanding = 0
        self._refusals = 0
        self._retry_at = 0.0
        self._yield_until = 0.0
        self._logged: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._sub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._checking: asyncio.Task[None] | None = None
        self.lost_requests = 0
        self._group = PARTITION_GROUP if durable.pinned else None
        self.pin_id: str | None = None
        self._handed_on: str | None = None

    async def start(self) -> None:
        self._stop_listening = self._nc.on_denial(self._on_denial)
        self._sub = await self._nc.subscribe_direct(self._inbox + ".*", self._on_delivery)
        self._tasks = [
            asyncio.create_task(self._pump(), name=f"eventwire-pull-{self._durable.name}"),
            asyncio.create_task(self._watchdog(), name=f"eventwire-pull-watchdog-{self._durable.name}"),
        ]
        self._wake.set()

    def _refusal(self, denial: PermissionDenied) -> PermissionDenied | None:
        """What ``denial`` means for this pull, if it is about one of its subjects."""
        name = self._durable.name
        if denial.operation == "subscribe":
            if denial.subject == (self._inbox + ".*").lower():
                return PermissionDenied("subscribe", self._inbox + ".*", f"deliveries of durable {name}")
            return None
        if denial.subject == self._next_subject.lower():
            return PermissionDenied("publish", self._next_subject, f"pull requests of durable {name}")
        ack = ack_grant(denial.subject, self._durable.stream, name)
        return PermissionDenied("publish", ack, f"acks of durable {name}") if ack is not None else None

    def _on_denial(self, denial: PermissionDenied) -> bool:
        refused = self._refusal(denial)
        if refused is None:
            return False
        self._fail(refused)
        return True

    def _fail(self, error: EventwireError) -> None:
        if self.failure is None:
            self.failure = error
            self._stopping = True
            self._wake.set()
            if self._on_failure is not None:
                self._on_failure(error)

    def notify(self) -> None:
        if not self._wake.is_set() and self._capacity() - self._outstanding >= self._min_batch:
            self._wake.set()

    def reset(self) -> None:
        """Forget every request: after a reconnect the server holds none of them."""
        self._requests.clear()
        self._outstanding = 0
        self._refusals = 0
        self._retry_at = 0.0
        self._wake.set()

    def _end(self, token: str) -> None:
        request = self._requests.pop(token, None)
        if request is not None:
            self._outstanding -= request.remaining

    def _on_delivery(self, subject: str, reply: str, data: bytes, headers: dict[str, str] | None) -> None:
        try:
            self._on_msg(subject, reply, data, headers)
        except Exception:  # in the connection's reading task: never let it through
            logger.exception("pull on durable %s: could not take a delivery", self._durable.name)

    def _on_msg(self, subject: str, reply: str, data: bytes, headers: dict[str, str] | None) -> None:
        now = self._loop.time()
        if reply:
            if self._requests:
                token, request = next(iter(self._requests.items()))
                request.remaining -= 1
                request.heard_at = now
                self._outstanding -= 1
                if request.remaining <= 0:
                    del self._requests[token]
            self._refusals = 0
            if self._group is not None and headers:
                self._note_pin(headers.get("Nats-Pin-Id"))
            self._sink(JetStreamMessage(self._nc, subject, reply, data, headers, now=now))
            return
        token = subject[len(self._inbox) + 1 :]
        headers = headers or {}
        status = headers.get("Status")
        if status == "100":
            waiting = self._requests.get(token)
            if waiting is not None:
                waiting.heard_at = now
            self._refusals = 0
            return
        self._end(token)
        self._on_status(status, _first_line(headers.get("Description")))
        self._wake.set()

    def _note_pin(self, pin_id: str | None) -> None:
        # A delivery the server sent before it took our released pin back still carries that pin's id.
        if pin_id is not None and pin_id not in (self.pin_id, self._handed_on):
            self.pin_id = pin_id
            logger.info("durable %s: this instance holds its pin (%s)", self._durable.name, pin_id)

    def _on_status(self, status: str | None, description: str) -> None:
        name = self._durable.name
        lowered = description.lower()
        if status in ("404", "408"):
            return
        if status == "423":
            # The pin is another instance's (or no one's yet): ask again without the old id.
            if self.pin_id is not None:
                self.pin_id = None
                logger.info("durable %s: its pin moved to another instance", name)
            return
        if status == "409":
            if any(fatal in lowered for fatal in _FATAL_409):
                self._fail(
                    StreamConfigError(self._durable.stream, f"consumer {name}", f"{description}: pulling stopped")
                )
            elif "leadership change" in lowered or "server shutdown" in lowered:
                self._log_once(logging.INFO, f"pull on durable {name}: {description}; pulling again")
            elif "exceeded max" in lowered:
                self._log_once(logging.WARNING, f"pull on durable {name}: {description}")
            return
        # 503: no consumer leader (yet); 400 and anything unknown: the server could not take the request.
        self._back_off()
        if self._refusals >= _REFUSALS_BEFORE_CHECK and (self._checking is None or self._checking.done()):
            self._checking = asyncio.create_task(self._check_durable_exists())
        self._log_once(
            logging.INFO if status == "503" else logging.WARNING,
            f"pull on durable {name}: status {status}{' ' + description if description else ''}; "
            f"pulling again in {self._retry_at - self._loop.time():.2f}s",
            key=str(status),
        )

    async def _check_durable_exists(self) -> None:
        subject = f"$JS.API.CONSUMER.INFO.{self._durable.stream}.{self._durable.name}"
        try:
            reply = json.loads((await self._nc.request(subject, b"", timeout=2.0)).data)
        except Exception:  # no answer (a failover still under way): keep pulling
            return
        error = reply.get("error") if isinstance(reply, dict) else None
        if isinstance(error, dict) and error.get("err_code") == _CONSUMER_NOT_FOUND:
            where = f"consumer {self._durable.name}"
            self._fail(StreamConfigError(self._durable.stream, where, "the durable was deleted: pulling stopped"))

    def _back_off(self) -> None:
        self._refusals += 1
        self._retry_at = self._loop.time() + min(RETRY_MAX, RETRY_FIRST * 2 ** (self._refusals - 1))

    def _log_once(self, level: int, text: str, *, key: str | None = None, every: float = 5.0) -> None:
        """One line per kind of event per pull, however many requests it ends at once."""
        key = key or text
        now = self._loop.time()
        if now - self._logged.get(key, -every) >= every:
            self._logged[key] = now
            logger.log(level, "%s", text)

    async def _watchdog(self) -> None:
        limit = 2 * self._idle_heartbeat
        while not self._stopping:
            await asyncio.sleep(self._idle_heartbeat / 2)
            now = self._loop.time()
            lost = [token for token, request in self._requests.items() if now - request.heard_at > limit]
            if not lost:
                continue
            for token in lost:
                self._end(token)
            self.lost_requests += len(lost)
            self._back_off()
            self._log_once(
                logging.INFO,
                f"pull on durable {self._durable.name}: no heartbeat for {limit:g}s, request lost; pulling again",
                key="lost",
            )
            self._wake.set()

    async def _pump(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            wait = max(self._retry_at, self._yield_until) - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                if self._stopping:
                    return
            want = self._capacity() - self._outstanding
            if want < self._min_batch:
                continue
            token = str(next(self._tokens))
            request: dict[str, Any] = {
                "batch": want,
                "expires": int(self._expires * 1e9),
                "idle_heartbeat": int(self._idle_heartbeat * 1e9),
            }
            if self._group is not None:
                request["group"] = self._group
                if self.pin_id is not None:
                    request["id"] = self.pin_id
            try:
                await self._nc.publish(self._next_subject, json.dumps(request).encode(), reply=f"{self._inbox}.{token}")
            except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError) as exc:
                self._back_off()
                self._log_once(logging.WARNING, f"pull on durable {self._durable.name} failed: {exc!r}", key="send")
                self._wake.set()
                continue
            self._requests[token] = _Request(want, self._loop.time())
            self._outstanding += want

    @property
    def holds_pin(self) -> bool:
        return self.pin_id is not None

    async def release(self) -> None:
        """Hand the pin on at once, instead of leaving the partition to wait for the pinned TTL (a graceful stop)
        or keeping more partitions than this instance's share. Our queued request still carries the old id: the
        server turns it away with 423. The server gives a free pin to the request at the head of its queue, which
        could be ours again, so this pull sends none for one request's lifetime: every other instance pulling
        has renewed its request by then, and one of theirs takes the pin."""
        if self.pin_id is None or self.failure is not None or not self._nc.is_connected:
            return
        self._handed_on, self.pin_id = self.pin_id, None
        self._yield_until = self._loop.time() + self._expires
        try:
            await request_unpin(self._nc, self._durable, timeout=2.0)
        except Exception as exc:  # the pin then moves after its TTL, as after a crash
            logger.info("durable %s: could not hand its pin on (%s)", self._durable.name, type(exc).__name__)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._stop_listening()
        self._tasks[1].cancel()
        if self._checking is not None:
            self._checking.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sub is not None and not self._nc.is_closed:
            # Unsubscribe and flush: what the server sent before that still reaches the sink.
            with contextlib.suppress(
                nats.errors.ConnectionClosedError,
                nats.errors.ConnectionReconnectingError,
                nats.errors.BadSubscriptionError,
                nats.errors.ConnectionDrainingError,
                nats.errors.FlushTimeoutError,
                nats.errors.TimeoutError,
            ):
                await self._sub.drain()


async def request_unpin(nc: EventwireClient, durable: Durable, *, timeout: float) -> None:
    """``$JS.API.CONSUMER.UNPIN`` for a pinned durable's group; a refusal is a StreamConfigError."""
    subject = f"$JS.API.CONSUMER.UNPIN.{durable.stream}.{durable.name}"
    reply = await nc.request(subject, json.dumps({"group": PARTITION_GROUP}).encode(), timeout=timeout)
    error = json.loads(reply.data).get("error")
    if error:
        raise StreamConfigError(durable.stream, f"consumer {durable.name}", str(error.get("description")))


def ack_grant(subject: str, stream: str, durable: str) -> str | None:
    """The ack grant a refused ``$JS.ACK`` subject of this durable needed, or None if it is another's.

    nats-server sends ``$JS.ACK.<stream>.<consumer>.<n>.<sseq>.<cseq>.<ts>.<pending>``, or since 2.10 may
    send the form with ``<domain>.<account hash>`` in front and a token at the end (both lowercased here).
    """
    tokens = subject.split(".")
    if tokens[:2] != ["$js", "ack"]:
        return None
    if len(tokens) == 9 and tokens[2:4] == [stream.lower(), durable.lower()]:
        return f"$JS.ACK.{stream}.{durable}.>"
    if len(tokens) >= 11 and tokens[4:6] == [stream.lower(), durable.lower()]:
        return f"$JS.ACK.*.*.{stream}.{durable}.>"
    return None
