"""The JetStream transport, on nats-py."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api

from .._errors import PublishError, StreamConfigError, WrongLastSequence
from .._streams import Durable, Stream
from ._client import EventwireClient
from ._protocol import InboundMessage, PublishAck, TransientPublishFailure

logger = logging.getLogger("eventwire.transport")

_WRONG_LAST_SEQUENCE = 10071
_RETRYABLE_STATUS = "503"
# Servers older than these carry known data-loss and security bugs (DESIGN §10).
_MIN_PATCH = {(2, 11): 15, (2, 12): 6}


@dataclass(frozen=True)
class ConnectOptions:
    """How to reach a NATS cluster. Secrets are kept out of ``repr`` and logs."""

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    name: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    nkeys_seed: str | None = field(default=None, repr=False)
    creds_file: str | None = None
    tls: ssl.SSLContext | None = None
    tls_hostname: str | None = None
    connect_timeout: float = 5.0
    reconnect_time_wait: float = 0.5
    max_reconnect_attempts: int = -1  # keep trying: a service outlives a broker restart

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ConnectOptions:
        """Options for a comma-separated list of server URLs."""
        servers = tuple(s.strip() for s in url.split(",") if s.strip())
        return cls(servers=servers, **kwargs)


def _version_is_outdated(version: str) -> bool:
    try:
        major, minor, patch = (int(part) for part in version.split("-", maxsplit=1)[0].split(".")[:3])
    except ValueError:
        return False
    if (major, minor) < (2, 11):
        return True
    floor = _MIN_PATCH.get((major, minor))
    return floor is not None and patch < floor


def _parse_ack(data: bytes) -> PublishAck:
    response = json.loads(data)
    error = response.get("error")
    if error is not None:
        raise _api_error(error.get("code", 0), error.get("err_code", 0), error.get("description", ""))
    return PublishAck(response["stream"], response["seq"], bool(response.get("duplicate", False)))


def _api_error(code: int, err_code: int, description: str) -> Exception:
    if err_code == _WRONG_LAST_SEQUENCE:
        return WrongLastSequence(description)
    if code == 503:
        return TransientPublishFailure(f"JetStream unavailable: {description}")
    return PublishError(f"JetStream refused the message ({code}/{err_code}): {description}")


class JetStreamMessage:
    """A delivered JetStream message with its metadata parsed once."""

    __slots__ = (
        "_msg",
        "consumer_sequence",
        "data",
        "delivery_count",
        "headers",
        "progress_at",
        "stream",
        "stream_sequence",
        "subject",
    )

    def __init__(self, msg: Msg, now: float) -> None:
        self._msg = msg
        self.subject = msg.subject
        self.data = msg.data
        self.headers = msg.headers
        # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>, or the v2 form with
        # domain and account hash in front and a random token at the end.
        tokens = msg.reply.split(".")
        offset = 2 if len(tokens) == 9 else 4
        self.delivery_count = int(tokens[offset + 2])
        self.stream = tokens[offset]
        self.stream_sequence = int(tokens[offset + 3])
        self.consumer_sequence = int(tokens[offset + 4])
        self.progress_at = now

    async def ack(self) -> None:
        await self._msg.ack()

    async def nak(self, delay: float | None = None) -> None:
        await self._msg.nak(delay=delay)

    async def term(self) -> None:
        await self._msg.term()

    async def in_progress(self) -> None:
        await self._msg.in_progress()


class JetStreamPull:
    """A continuous pull on one durable.

    Pull requests are issued before the previous ones are used up, so messages
    keep flowing while the consumer works. ``outstanding`` counts messages
    requested and not yet received; the server's status messages (408 request
    expired, 409 with pending counts) and missed idle heartbeats bring it back
    in line with what the server still owes us.
    """

    def __init__(
        self,
        nc: NatsClient,
        durable: Durable,
        sink: Callable[[InboundMessage], None],
        capacity: Callable[[], int],
        *,
        min_batch: int,
        expires: float,
        idle_heartbeat: float,
    ) -> None:
        self._nc = nc
        self._durable = durable
        self._sink = sink
        self._capacity = capacity
        self._min_batch = min_batch
        self._expires = expires
        self._idle_heartbeat = idle_heartbeat
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{durable.stream}.{durable.name}"
        self._inbox = nc.new_inbox()
        self._loop = asyncio.get_running_loop()
        self._outstanding = 0
        self._last_activity = self._loop.time()
        self._wake = asyncio.Event()
        self._stopping = False
        self._sub: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(
            self._inbox, cb=self._on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        self._tasks = [
            asyncio.create_task(self._pump(), name=f"eventwire-pull-{self._durable.name}"),
            asyncio.create_task(self._watchdog(), name=f"eventwire-pull-watchdog-{self._durable.name}"),
        ]
        self._wake.set()

    def notify(self) -> None:
        if not self._wake.is_set() and self._capacity() - self._outstanding >= self._min_batch:
            self._wake.set()

    def reset(self) -> None:
        """Forget requests the server may have lost (reconnect, leader change)."""
        self._outstanding = 0
        self.notify()

    async def _on_msg(self, msg: Msg) -> None:
        now = self._loop.time()
        self._last_activity = now
        if msg.reply:
            self._outstanding -= 1
            self._sink(JetStreamMessage(msg, now))
            return
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "100":
            return
        pending = headers.get("Nats-Pending-Messages")
        if pending is not None:
            self._outstanding = max(0, self._outstanding - int(pending))
        elif status in ("404", "408", "409"):
            self._outstanding = 0
        if status == "409":
            description = headers.get("Description", "")
            if "Exceeded Max" not in description:
                logger.warning("pull on durable %s: %s", self._durable.name, description)
        elif status not in ("404", "408"):
            logger.warning(
                "pull on durable %s: unexpected status %s %s",
                self._durable.name,
                status,
                headers.get("Description", ""),
            )
        self._wake.set()

    async def _watchdog(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._idle_heartbeat)
            if self._outstanding and self._loop.time() - self._last_activity > 2 * self._idle_heartbeat:
                # Two heartbeats missed: the server no longer holds our requests.
                self._outstanding = 0
                self._wake.set()

    async def _pump(self) -> None:
        request_errors = 0
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            want = self._capacity() - self._outstanding
            if want < self._min_batch:
                continue
            request = {
                "batch": want,
                "expires": int(self._expires * 1e9),
                "idle_heartbeat": int(self._idle_heartbeat * 1e9),
            }
            try:
                await self._nc.publish(self._next_subject, json.dumps(request).encode(), reply=self._inbox)
            except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError) as exc:
                request_errors += 1
                logger.warning("pull on durable %s failed: %r", self._durable.name, exc)
                await asyncio.sleep(min(2.0, 0.05 * 2**request_errors))
                self._wake.set()
                continue
            request_errors = 0
            self._outstanding += want
            self._last_activity = self._loop.time()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._tasks[1].cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sub is not None and not self._nc.is_closed:
            # Unsubscribe and flush: what the server sent before that still reaches the sink.
            with contextlib.suppress(
                nats.errors.ConnectionClosedError,
                nats.errors.BadSubscriptionError,
                nats.errors.ConnectionDrainingError,
                nats.errors.FlushTimeoutError,
                nats.errors.TimeoutError,
            ):
                await self._sub.drain()


class JetStreamTransport:
    """Publishing, provisioning and pulling over one NATS connection."""

    def __init__(self, nc: NatsClient, *, pull_expires: float = 30.0, idle_heartbeat: float = 5.0) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._pull_expires = pull_expires
        self._idle_heartbeat = idle_heartbeat
        self._pulls: list[JetStreamPull] = []
        self._closing = False
        self._ack_prefix = ""
        self._ack_futures: dict[str, asyncio.Future[PublishAck]] = {}
        self._ack_tokens = itertools.count()

    @classmethod
    async def connect(cls, options: ConnectOptions, **kwargs: Any) -> JetStreamTransport:
        transport: JetStreamTransport | None = None

        async def on_reconnected() -> None:
            logger.info("reconnected to %s", nc.connected_url.netloc if nc.connected_url else "?")
            if transport is not None:
                transport._on_reconnected()

        async def on_disconnected() -> None:
            if transport is None or not transport._closing:
                logger.warning("disconnected from NATS; reconnecting")

        async def on_error(exc: Exception) -> None:
            # While reconnecting every refused attempt lands here; the disconnect was logged once already.
            level = logging.DEBUG if nc.is_reconnecting else logging.WARNING
            logger.log(level, "NATS connection error: %r", exc)

        connect_kwargs: dict[str, Any] = {
            "servers": list(options.servers),
            "name": options.name,
            "user": options.user,
            "password": options.password,
            "token": options.token,
            "nkeys_seed": options.nkeys_seed,
            "user_credentials": options.creds_file,
            "tls": options.tls,
            "tls_hostname": options.tls_hostname,
            "connect_timeout": options.connect_timeout,
            "reconnect_time_wait": options.reconnect_time_wait,
            "max_reconnect_attempts": options.max_reconnect_attempts,
            "reconnected_cb": on_reconnected,
            "disconnected_cb": on_disconnected,
            "error_cb": on_error,
            # Publisher subjects are checked once by eventwire; acks go to subjects the server chose.
            "skip_subject_validation": True,
        }
        nc = EventwireClient()
        await nc.connect(**{k: v for k, v in connect_kwargs.items() if v is not None})
        version = nc.connected_server_version
        if _version_is_outdated(str(version)):
            logger.warning(
                "nats-server %s has known data-loss and security bugs; upgrade to 2.11.15, 2.12.6 or later",
                version,
            )
        transport = cls(nc, **kwargs)
        return transport

    @property
    def nc(self) -> NatsClient:
        return self._nc

    @property
    def max_payload(self) -> int:
        return self._nc.max_payload

    def _on_reconnected(self) -> None:
        for pull in self._pulls:
            pull.reset()

    # -- provisioning --------------------------------------------------------------------------

    async def ensure_stream(self, stream: Stream) -> None:
        wanted = api.StreamConfig(
            name=stream.name,
            description=stream.description,
            subjects=list(stream.subjects),
            retention=api.RetentionPolicy(stream.retention),
            storage=api.StorageType(stream.storage),
            num_replicas=stream.replicas,
            duplicate_window=stream.duplicate_window,
            max_age=stream.max_age or 0,
            max_msg_size=stream.max_msg_size or -1,
            max_msgs=stream.max_msgs or -1,
            max_bytes=stream.max_bytes or -1,
        )
        try:
            info = await self._js.stream_info(stream.name)
        except nats.js.errors.NotFoundError:
            try:
                await self._js.add_stream(wanted)
            except nats.js.errors.APIError as exc:
                raise StreamConfigError(stream.name, "create", str(exc.description)) from exc
            logger.info("created stream %s on %s", stream.name, ", ".join(stream.subjects))
            return
        current = info.config
        for name, have, want in (
            ("storage", current.storage, wanted.storage),
            ("retention", current.retention, wanted.retention),
        ):
            if have != want:
                raise StreamConfigError(
                    stream.name,
                    name,
                    f"is {_plain(have)} on the server, declared {_plain(want)}; "
                    "this cannot change in place: migrate to a new stream",
                )
        differences = _stream_differences(current, wanted)
        if not differences:
            return
        try:
            await self._js.update_stream(wanted)
        except nats.js.errors.APIError as exc:
            raise StreamConfigError(stream.name, ", ".join(differences), str(exc.description)) from exc
        logger.info("updated stream %s: %s", stream.name, ", ".join(differences))

    async def ensure_durable(self, durable: Durable) -> None:
        wanted = api.ConsumerConfig(
            durable_name=durable.name,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            filter_subject=durable.filter_subject,
            ack_wait=durable.ack_wait,
            max_deliver=durable.max_deliver,
            max_ack_pending=durable.max_ack_pending,
        )
        try:
            info = await self._js.consumer_info(durable.stream, durable.name)
        except nats.js.errors.NotFoundError:
            info = None
        if info is not None:
            current = info.config
            if current.deliver_subject:
                raise StreamConfigError(
                    durable.stream,
                    f"consumer {durable.name}",
                    "exists as a push consumer; eventwire needs a pull consumer",
                )
            if (
                current.filter_subject == wanted.filter_subject
                and math.isclose(current.ack_wait or 0, durable.ack_wait, rel_tol=1e-6)
                and current.max_deliver == wanted.max_deliver
                and current.max_ack_pending == wanted.max_ack_pending
            ):
                return
        try:
            await self._js.add_consumer(durable.stream, wanted)
        except nats.js.errors.APIError as exc:
            raise StreamConfigError(durable.stream, f"consumer {durable.name}", str(exc.description)) from exc
        logger.info(
            "%s durable %s on %s (%s)",
            "updated" if info else "created",
            durable.name,
            durable.stream,
            durable.filter_subject,
        )

    # -- publishing ----------------------------------------------------------------------------

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str], *, timeout: float) -> PublishAck:
        # The pipelined path with one message: cheaper than nc.request, which starts a task per call.
        future = await self.publish_async(subject, payload, headers)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as exc:
            future.cancel()
            raise TransientPublishFailure("no ack before the attempt timed out") from exc

    async def publish_async(self, subject: str, payload: bytes, headers: dict[str, str]) -> asyncio.Future[PublishAck]:
        if not self._ack_prefix:
            self._ack_prefix = self._nc.new_inbox() + "."
            await self._nc.subscribe(
                self._ack_prefix + "*", cb=self._on_ack, pending_msgs_limit=-1, pending_bytes_limit=-1
            )
        token = str(next(self._ack_tokens))
        future: asyncio.Future[PublishAck] = asyncio.get_running_loop().create_future()
        self._ack_futures[token] = future
        future.add_done_callback(lambda _: self._ack_futures.pop(token, None))
        try:
            await self._nc.publish(subject, payload, reply=self._ack_prefix + token, headers=headers)
        except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError) as exc:
            future.set_exception(TransientPublishFailure(f"connection unavailable: {exc!r}"))
        return future

    async def _on_ack(self, msg: Msg) -> None:
        future = self._ack_futures.get(msg.subject[len(self._ack_prefix) :])
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == _RETRYABLE_STATUS:
            future.set_exception(TransientPublishFailure("no responders: no stream, or no JetStream leader"))
            return
        try:
            future.set_result(_parse_ack(msg.data))
        except Exception as exc:
            future.set_exception(exc)

    # -- consuming -----------------------------------------------------------------------------

    async def pull(
        self,
        durable: Durable,
        sink: Callable[[InboundMessage], None],
        capacity: Callable[[], int],
        *,
        min_batch: int,
    ) -> JetStreamPull:
        pull = JetStreamPull(
            self._nc,
            durable,
            sink,
            capacity,
            min_batch=min_batch,
            expires=self._pull_expires,
            idle_heartbeat=self._idle_heartbeat,
        )
        await pull.start()
        self._pulls.append(pull)
        return pull

    async def close(self) -> None:
        self._closing = True
        for future in list(self._ack_futures.values()):
            future.cancel()
        if self._nc.is_closed:
            return
        try:
            await self._nc.drain()
        except (
            nats.errors.ConnectionClosedError,
            nats.errors.ConnectionReconnectingError,
            nats.errors.FlushTimeoutError,
            TimeoutError,
        ):
            # nats-py may report the lost socket again while closing it; the connection is gone either way.
            with contextlib.suppress(OSError):
                await self._nc.close()


def _plain(value: object) -> str:
    return str(getattr(value, "value", value))


def _stream_differences(current: api.StreamConfig, wanted: api.StreamConfig) -> list[str]:
    differences = []
    if sorted(current.subjects or []) != sorted(wanted.subjects or []):
        differences.append("subjects")
    exact = ("num_replicas", "max_msg_size", "max_msgs", "max_bytes", "description")
    differences += [name for name in exact if getattr(current, name) != getattr(wanted, name)]
    durations = ("duplicate_window", "max_age")
    differences += [
        name
        for name in durations
        if not math.isclose(getattr(current, name) or 0, getattr(wanted, name) or 0, abs_tol=1e-6)
    ]
    return differences
