"""Key-value buckets on JetStream, with nats-py's KV: a bucket any NATS client and ``nats kv`` can read."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from .._errors import PermissionDenied, StreamConfigError
from ._protocol import StoredValue

T = TypeVar("T")
# A clustered bucket answers again once its stream has a new leader: seconds, not minutes.
_RETRY_FOR = 30.0
_RETRY_EVERY = 0.25


async def _retried(bucket: str, call: Callable[[], Awaitable[T]]) -> T:
    """``call`` again while JetStream cannot answer (a leader election, a reconnect), up to a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _RETRY_FOR
    while True:
        try:
            return await call()
        except PermissionDenied as exc:
            raise PermissionDenied(exc.operation, exc.subject, f"needed for key-value bucket {bucket}") from None
        except (
            nats.errors.TimeoutError,
            nats.errors.NoRespondersError,
            nats.js.errors.ServiceUnavailableError,
            nats.errors.ConnectionReconnectingError,
        ):
            if loop.time() >= deadline:
                raise StreamConfigError(
                    f"KV_{bucket}", "request", f"no answer from JetStream in {_RETRY_FOR:.0f} s"
                ) from None
            await asyncio.sleep(_RETRY_EVERY)


class JetStreamKeyValue:
    def __init__(self, js: JetStreamContext, kv: KeyValue, bucket: str) -> None:
        self._js = js
        self._kv = kv
        self._bucket = bucket

    async def get(self, key: str) -> StoredValue | None:
        async def read() -> StoredValue | None:
            try:
                entry = await self._kv.get(key)
            except nats.js.errors.KeyNotFoundError:  # deleted keys too
                return None
            return StoredValue(entry.value or b"", entry.revision or 0)

        return await _retried(self._bucket, read)

    async def create(self, key: str, value: bytes) -> int | None:
        async def write() -> int | None:
            try:
                return await self._kv.create(key, value)
            except nats.js.errors.KeyWrongLastSequenceError:
                return None

        return await _retried(self._bucket, write)

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        async def write() -> int | None:
            try:
                return await self._kv.update(key, value, last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                return None

        return await _retried(self._bucket, write)

    async def keys(self) -> list[str]:
        prefix = f"$KV.{self._bucket}."
        # The stream's subject counts, in one request: no consumer to make and remove.
        info = await _retried(
            self._bucket,
            lambda: self._js.stream_info(f"KV_{self._bucket}", subjects_filter=f"{prefix}>"),
        )
        return sorted(subject.removeprefix(prefix) for subject in (info.state.subjects or {}))


async def open_bucket(js: JetStreamContext, bucket: str, *, replicas: int, create: bool) -> JetStreamKeyValue | None:
    async def find() -> KeyValue | None:
        try:
            return await js.key_value(bucket)
        except (nats.js.errors.BucketNotFoundError, nats.js.errors.NotFoundError):
            return None

    kv = await _retried(bucket, find)
    if kv is None and create:
        config = api.KeyValueConfig(bucket=bucket, history=1, replicas=replicas, direct=True)
        try:
            kv = await _retried(bucket, lambda: js.create_key_value(config))
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code == 10058:  # created meanwhile by another instance, with other settings
                kv = await _retried(bucket, find)
            else:
                raise StreamConfigError(f"KV_{bucket}", "create", exc.description or str(exc)) from None
    return None if kv is None else JetStreamKeyValue(js, kv, bucket)
