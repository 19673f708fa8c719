"""The JetStream transport, on nats-py."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api

from .._connect_options import ConnectOptions
from .._connection import ConnectionState, connect
from .._errors import EventwireError, PermissionDenied, PublishError, StreamConfigError
from .._nats_client import EventwireClient, dotted, server_version
from .._streams import PARTITION_GROUP, Durable, Stream, subject_matches
from ._fast_ingest import FastIngest
from ._key_value import JetStreamKeyValue, open_bucket
from ._protocol import (
    BatchMessage,
    DurableState,
    FastBatchResult,
    InboundMessage,
    PinState,
    PublishAck,
    TransientPublishFailure,
    refusal_error,
)
from ._pull import JetStreamPull, request_unpin

logger = logging.getLogger("eventwire.transport")

_NOT_CLUSTERED = 10074
_NO_PLACEMENT = 10005
_RETRYABLE_STATUS = "503"
# Servers older than these carry known data-loss and security bugs (DESIGN §10).
_MIN_PATCH = {(2, 11): 15, (2, 12): 6}
_FAST_INGEST_SINCE = (2, 14, 0)
_ATOMIC_SINCE = (2, 12, 0)  # atomic batches and message schedules
_PINNED_SINCE = (2, 11, 0)
_API_TIMEOUT = 5.0
_CONSUMER_NOT_FOUND = 10014
_MAX_CACHED_SUBJECTS = 10_000
T = TypeVar("T")


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
        raise refusal_error(
            error.get("code", 0), error.get("err_code", 0), error.get("description", ""), response.get("stream", "")
        )
    return PublishAck(response["stream"], response["seq"], bool(response.get("duplicate", False)))


class JetStreamTransport:
    """Publishing, provisioning and pulling over one NATS connection."""

    def __init__(
        self,
        nc: EventwireClient,
        *,
        pull_expires: float = 30.0,
        idle_heartbeat: float = 1.0,
        state: ConnectionState | None = None,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._pull_expires = pull_expires
        self._idle_heartbeat = idle_heartbeat
        self._state = state
        self._pulls: list[JetStreamPull] = []
        self._ack_prefix = ""
        self._ack_futures: dict[str, tuple[asyncio.Future[PublishAck], str]] = {}
        self._ack_tokens = itertools.count()
        self._acks_refused: PermissionDenied | None = None
        self._fast_ingest = FastIngest(nc)
        # What this connection knows of streams' fast path: declared subjects, and allow_batched per stream.
        self._stream_subjects: dict[str, tuple[str, ...]] = {}
        self._batched: dict[str, bool] = {}
        self._stream_of_subject: dict[str, str | None] = {}
        nc.on_denial(self._on_denial)
        if state is not None:
            state.reconnect_listeners.append(self._on_reconnected)

    @classmethod
    async def connect(cls, options: ConnectOptions, **kwargs: Any) -> JetStreamTransport:
        """Connect (bounded: :class:`~eventwire.ConnectError` on failure) and warn about outdated servers."""
        nc, state = await connect(options)
        version = nc.connected_server_version
        if _version_is_outdated(str(version)):
            logger.warning(
                "nats-server %s has known data-loss and security bugs; upgrade to 2.11.15, 2.12.6 or later",
                version,
            )
        return cls(nc, state=state, **kwargs)

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    @property
    def reconnects(self) -> int:
        return int(self._nc.stats["reconnects"])

    async def durable_state(self, durable: Durable) -> DurableState:
        info = await self._js.consumer_info(durable.stream, durable.name)
        return DurableState(info.ack_floor.stream_seq or 0, info.num_ack_pending or 0, info.num_pending or 0)

    async def stream_size(self, stream: str) -> int:
        return int((await self._js.stream_info(stream)).state.messages)

    @property
    def nc(self) -> EventwireClient:
        return self._nc

    @property
    def max_payload(self) -> int:
        return self._nc.max_payload

    @property
    def message_schedules(self) -> bool:
        return server_version(self._nc) >= _ATOMIC_SINCE

    def _on_reconnected(self) -> None:
        for pull in self._pulls:
            pull.reset()

    def _on_denial(self, denial: PermissionDenied) -> bool:
        if denial.operation == "subscribe":
            if not self._ack_prefix or denial.subject != (self._ack_prefix + "*").lower():
                return False
            self._acks_refused = PermissionDenied("subscribe", self._ack_prefix + "*", "publish acknowledgements")
            for future, _ in list(self._ack_futures.values()):
                if not future.done():
                    future.set_exception(self._acks_refused)
            return True
        claimed = False
        for future, subject in list(self._ack_futures.values()):
            if not future.done() and subject.lower() == denial.subject:
                future.set_exception(PermissionDenied("publish", subject))
                claimed = True
        return claimed

    async def _api(self, what: str, field: str, call: Awaitable[T]) -> T:
        """A JetStream API call during provisioning, its failures as typed errors with one-line messages."""
        try:
            return await call
        except PermissionDenied as exc:
            raise PermissionDenied(exc.operation, exc.subject, f"needed to provision {what}") from None
        except (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError):
            raise StreamConfigError(
                what, field, "JetStream did not answer: is it enabled on the server and for this account?"
            ) from None
        except nats.errors.TimeoutError:
            raise StreamConfigError(what, field, "no answer from JetStream in time") from None
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
            raise StreamConfigError(what, field, "the connection to NATS was lost") from None

    # -- provisioning --------------------------------------------------------------------------

    async def ensure_stream(self, stream: Stream) -> None:
        wanted = api.StreamConfig(
            name=stream.name,
            description=stream.description,
            subjects=list(stream.wire_subjects),
            subject_transform=_transform(stream),
            retention=api.RetentionPolicy(stream.retention),
            storage=api.StorageType(stream.storage),
            num_replicas=stream.replicas,
            duplicate_window=stream.duplicate_window,
            max_age=stream.max_age or 0,
            max_msg_size=stream.max_msg_size or -1,
            max_msgs=stream.max_msgs or -1,
            max_bytes=stream.max_bytes or -1,
            allow_batched=stream.allow_batched or None,  # unset, not false: older servers know neither
            allow_atomic=stream.allow_atomic or None,
            allow_msg_schedules=stream.allow_msg_schedules or None,
            # A schedule is cancelled by a roll-up of its subject, with a marker that expires.
            allow_rollup_hdrs=stream.allow_msg_schedules or None,  # type: ignore[arg-type]
            allow_msg_ttl=stream.allow_msg_schedules or None,
        )
        self._check_server_supports(stream)
        self._stream_subjects[stream.name] = stream.wire_subjects
        self._batched[stream.name] = stream.allow_batched
        self._stream_of_subject.clear()
        try:
            info = await self._api(stream.name, "info", self._js.stream_info(stream.name))
        except nats.js.errors.NotFoundError:
            try:
                await self._api(stream.name, "create", self._js.add_stream(wanted))
            except nats.js.errors.APIError as exc:
                raise _refused(stream, "create", exc) from exc
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
            await self._api(stream.name, ", ".join(differences), self._js.update_stream(wanted))
        except nats.js.errors.APIError as exc:
            raise _refused(stream, ", ".join(differences), exc) from exc
        logger.info("updated stream %s: %s", stream.name, ", ".join(differences))

    def _check_server_supports(self, stream: Stream) -> None:
        version = server_version(self._nc)
        for name, wanted, since in (
            ("allow_batched", stream.allow_batched, _FAST_INGEST_SINCE),
            ("allow_atomic", stream.allow_atomic, _ATOMIC_SINCE),
            ("allow_msg_schedules", stream.allow_msg_schedules, _ATOMIC_SINCE),
            ("partitions", stream.partitions is not None, _PINNED_SINCE),
        ):
            if wanted and version < since:
                raise StreamConfigError(
                    stream.name,
                    name,
                    f"needs nats-server {dotted(since)} or later; this one is {dotted(version)}",
                )

    async def ensure_durable(self, durable: Durable) -> None:
        if durable.pinned:
            await self._ensure_pinned_durable(durable)
            return
        wanted = api.ConsumerConfig(
            durable_name=durable.name,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            filter_subject=durable.filter_subject,
            ack_wait=durable.ack_wait,
            max_deliver=durable.max_deliver,
            max_ack_pending=durable.max_ack_pending,
        )
        what = f"consumer {durable.name}"
        try:
            info = await self._api(durable.stream, what, self._js.consumer_info(durable.stream, durable.name))
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
            await self._api(durable.stream, what, self._js.add_consumer(durable.stream, wanted))
        except nats.js.errors.APIError as exc:
            raise StreamConfigError(durable.stream, f"consumer {durable.name}", str(exc.description)) from exc
        logger.info(
            "%s durable %s on %s (%s)",
            "updated" if info else "created",
            durable.name,
            durable.stream,
            durable.filter_subject,
        )

    async def _ensure_pinned_durable(self, durable: Durable) -> None:
        """A pinned-client durable, made through the JetStream API: nats-py's ConsumerConfig lacks priority fields."""
        what = f"consumer {durable.name}"
        version = server_version(self._nc)
        if version < _PINNED_SINCE:
            raise StreamConfigError(
                durable.stream,
                what,
                f"pinned consumers (partitions) need nats-server {dotted(_PINNED_SINCE)} or later; "
                f"this one is {dotted(version)}",
            )
        ttl = int(durable.ack_wait * 1e9)
        wanted: dict[str, Any] = {
            "durable_name": durable.name,
            "ack_policy": "explicit",
            "deliver_policy": "all",
            "filter_subject": durable.filter_subject,
            "ack_wait": ttl,
            "max_deliver": durable.max_deliver,
            "max_ack_pending": durable.max_ack_pending,
            "priority_groups": [PARTITION_GROUP],
            "priority_policy": "pinned_client",
            "priority_timeout": ttl,
        }
        where = f"{durable.stream}.{durable.name}"
        info = await self._api(durable.stream, what, self._json_api(f"$JS.API.CONSUMER.INFO.{where}", None))
        error = info.get("error")
        if error is None:
            current = info.get("config", {})
            if all(current.get(name) == value for name, value in wanted.items()):
                return
        elif error.get("err_code") != _CONSUMER_NOT_FOUND:
            raise StreamConfigError(durable.stream, what, str(error.get("description")))
        request = {"stream_name": durable.stream, "config": wanted}
        created = await self._api(durable.stream, what, self._json_api(f"$JS.API.CONSUMER.CREATE.{where}", request))
        if "error" in created:
            raise StreamConfigError(durable.stream, what, str(created["error"].get("description")))
        logger.info(
            "%s pinned durable %s on %s (%s)",
            "created" if error is not None else "updated",
            durable.name,
            durable.stream,
            durable.filter_subject,
        )

    async def _json_api(self, subject: str, request: dict[str, Any] | None) -> dict[str, Any]:
        payload = json.dumps(request).encode() if request is not None else b""
        answer: dict[str, Any] = json.loads((await self._nc.request(subject, payload, timeout=_API_TIMEOUT)).data)
        return answer

    async def pinned_state(self, durable: Durable) -> PinState:
        """Who holds the pin of a pinned durable: the server's pin id and since when (None when no one)."""
        answer = await self._json_api(f"$JS.API.CONSUMER.INFO.{durable.stream}.{durable.name}", None)
        if "error" in answer:
            raise StreamConfigError(durable.stream, f"consumer {durable.name}", str(answer["error"].get("description")))
        groups = answer.get("priority_groups") or [{}]
        return PinState(
            groups[0].get("pinned_client_id"), groups[0].get("pinned_ts"), int(answer.get("num_waiting", 0))
        )

    async def unpin(self, durable: Durable) -> None:
        """Take the pin from whichever instance holds it: the next one to pull gets it."""
        await request_unpin(self._nc, durable, timeout=_API_TIMEOUT)

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
        if self._acks_refused is not None:
            future.set_exception(self._acks_refused)
            return future
        self._ack_futures[token] = (future, subject)
        future.add_done_callback(lambda _: self._ack_futures.pop(token, None))
        try:
            await self._nc.publish(subject, payload, reply=self._ack_prefix + token, headers=headers)
        except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError) as exc:
            future.set_exception(TransientPublishFailure(f"connection unavailable: {exc!r}"))
        return future

    async def publish_atomic(self, messages: list[BatchMessage], *, timeout: float) -> PublishAck:
        version = server_version(self._nc)
        if version < _ATOMIC_SINCE:
            # An older server would store each message on its own: refuse rather than lose atomicity.
            raise PublishError(
                f"atomic batches need nats-server {dotted(_ATOMIC_SINCE)} or later; this one is {dotted(version)}"
            )
        batch_id = uuid.uuid4().hex
        last = len(messages)
        for number, (subject, payload, headers) in enumerate(messages, start=1):
            marked = {**headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)}
            if number < last:
                try:
                    await self._nc.publish(subject, payload, headers=marked)
                except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError) as exc:
                    raise TransientPublishFailure(f"connection unavailable: {exc!r}") from exc
                continue
            marked["Nats-Batch-Commit"] = "1"
            return await self.publish(subject, payload, marked, timeout=timeout)
        raise PublishError("an atomic batch needs at least one event")

    async def batch_target(self, subject: str) -> JetStreamBatchTarget | None:
        if server_version(self._nc) < _FAST_INGEST_SINCE:
            return None
        if subject in self._stream_of_subject:
            stream = self._stream_of_subject[subject]
        else:
            declared = self._stream_subjects.items()
            stream = next((name for name, fs in declared if any(subject_matches(f, subject) for f in fs)), None)
            if stream is None:
                stream = await self._look_up_stream(subject)
            if len(self._stream_of_subject) >= _MAX_CACHED_SUBJECTS:
                self._stream_of_subject.clear()
            self._stream_of_subject[subject] = stream
        if stream is None:
            return None
        if stream not in self._batched:
            try:
                self._batched[stream] = bool((await self._js.stream_info(stream)).config.allow_batched)
            except (nats.errors.Error, nats.js.errors.Error):
                return None
        return JetStreamBatchTarget(self, stream) if self._batched[stream] else None

    async def _look_up_stream(self, subject: str) -> str | None:
        try:
            return await self._js.find_stream_name_by_subject(subject)
        except (nats.errors.Error, nats.js.errors.Error):
            return None

    async def _on_ack(self, msg: Msg) -> None:
        pending = self._ack_futures.get(msg.subject[len(self._ack_prefix) :])
        if pending is None or pending[0].done():
            return
        future = pending[0]
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
        on_failure: Callable[[EventwireError], None] | None = None,
    ) -> JetStreamPull:
        expires, heartbeat = self._pull_expires, self._idle_heartbeat
        if durable.pinned:
            # Each request renews the pin: several fit in its TTL (ack_wait), a heartbeat in half of one.
            expires = min(expires, durable.ack_wait / 3)
            heartbeat = min(heartbeat, expires / 4)
        pull = JetStreamPull(
            self._nc,
            durable,
            sink,
            capacity,
            min_batch=min_batch,
            expires=expires,
            idle_heartbeat=heartbeat,
            on_failure=on_failure,
        )
        await pull.start()
        self._pulls.append(pull)
        return pull

    async def key_value(self, bucket: str, *, replicas: int = 1, create: bool = True) -> JetStreamKeyValue | None:
        return await open_bucket(self._js, bucket, replicas=replicas, create=create)

    async def close(self) -> None:
        if self._state is not None:
            self._state.close()
        for future, _ in list(self._ack_futures.values()):
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


class JetStreamBatchTarget:
    """One stream's fast path on one connection."""

    def __init__(self, transport: JetStreamTransport, stream: str) -> None:
        self._transport = transport
        self._js = transport._js
        self.stream = stream

    async def last_sequence(self) -> int:
        try:
            return int((await self._js.stream_info(self.stream)).state.last_seq or 0)
        except nats.errors.Error as exc:
            raise TransientPublishFailure(f"stream {self.stream} info: {exc!r}") from exc

    async def send(self, messages: list[BatchMessage], *, flow: int, stall_timeout: float) -> FastBatchResult:
        result = await self._transport._fast_ingest.send(messages, flow=flow, stall_timeout=stall_timeout)
        refusal = result.refusal
        if result.not_batched is not None or (refusal is not None and refusal.batching_disabled):
            self._transport._batched[self.stream] = False  # the stream changed under us: pipelined from now on
        return result

    async def stored_msg_ids(self, first: int, last: int) -> dict[str, int]:
        if last < first:
            return {}
        try:
            return await self._read_msg_ids(first, last)
        except nats.errors.Error as exc:
            raise TransientPublishFailure(f"reading back stream {self.stream}: {exc!r}") from exc

    async def _read_msg_ids(self, first: int, last: int) -> dict[str, int]:
        # A headers-only ephemeral consumer: the payloads stay on the server.
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=first,
            ack_policy=api.AckPolicy.NONE,
            headers_only=True,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=30.0,
        )
        found: dict[str, int] = {}
        subscription = await self._js.pull_subscribe("", stream=self.stream, config=config)
        try:
            sequence, left = first - 1, 1
            while sequence < last and left:
                try:
                    batch = await subscription.fetch(min(1000, last - sequence), timeout=5.0)
                except nats.errors.TimeoutError:
                    break
                for msg in batch:
                    sequence, left = msg.metadata.sequence.stream, msg.metadata.num_pending
                    msg_id = (msg.headers or {}).get("Nats-Msg-Id")
                    if msg_id is not None and sequence <= last:
                        found.setdefault(msg_id, sequence)
        finally:
            with contextlib.suppress(nats.errors.Error):
                info = await subscription.consumer_info()
                await self._js.delete_consumer(self.stream, info.name)
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()
        return found


def _refused(stream: Stream, field: str, exc: nats.js.errors.APIError) -> StreamConfigError:
    """The server's refusal of a stream, said in the declaration's terms where it is about replicas."""
    if exc.err_code == _NOT_CLUSTERED:
        return StreamConfigError(
            stream.name,
            "replicas",
            f"declared {stream.replicas}, but the server is not clustered and holds one (use replicas=1 there)",
        )
    if exc.err_code == _NO_PLACEMENT and stream.replicas > 1:
        return StreamConfigError(
            stream.name,
            "replicas",
            f"declared {stream.replicas}, more than the cluster can place: it has fewer JetStream servers, "
            "or they have no room left",
        )
    return StreamConfigError(stream.name, field, str(exc.description))


def _transform(stream: Stream) -> api.SubjectTransform | None:
    transform = stream.partition_transform
    return api.SubjectTransform(src=transform[0], dest=transform[1]) if transform is not None else None


def _transform_pair(transform: api.SubjectTransform | None) -> tuple[str, str] | None:
    return (transform.src, transform.dest) if transform is not None else None


def _plain(value: object) -> str:
    return str(getattr(value, "value", value))


def _stream_differences(current: api.StreamConfig, wanted: api.StreamConfig) -> list[str]:
    differences = []
    if sorted(current.subjects or []) != sorted(wanted.subjects or []):
        differences.append("subjects")
    exact = ("num_replicas", "max_msg_size", "max_msgs", "max_bytes", "description")
    differences += [name for name in exact if getattr(current, name) != getattr(wanted, name)]
    if _transform_pair(current.subject_transform) != _transform_pair(wanted.subject_transform):
        differences.append("partitions")
    differences += [
        name
        for name in ("allow_batched", "allow_atomic", "allow_msg_schedules")
        if bool(getattr(current, name)) != bool(getattr(wanted, name))
    ]
    durations = ("duplicate_window", "max_age")
    differences += [
        name
        for name in durations
        if not math.isclose(getattr(current, name) or 0, getattr(wanted, name) or 0, abs_tol=1e-6)
    ]
    return differences
