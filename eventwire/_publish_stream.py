"""Streaming publish: events go in as they come, outcomes come out as acks arrive, a bounded window between."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ._backoff import Backoff
from ._batch_publish import Outcome
from ._errors import PayloadTooLarge, PermissionDenied, PublishError, PublishTimeout
from ._tracing import end_span, start_producer_span, tracing_on
from .transport import PublishAck, Transport


@dataclass(slots=True, eq=False)  # identity: each one is one event in flight
class _InFlight:
    item: Any
    subject: str
    payload: bytes
    headers: dict[str, str]
    give_up_at: float
    started: float
    span: Any = None
    attempts: int = 0
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class PublishStream:
    """One run of :meth:`Publisher.publish_stream`."""

    def __init__(
        self,
        transport: Transport,
        prepare: Callable[[Any], tuple[str, bytes, dict[str, str]]],
        *,
        window: int,
        deadline: float,
        attempt_timeout: float,
        backoff: Backoff,
        on_retry: Callable[[int], None],
        on_outcome: Callable[[str, Outcome, float | None], None],
    ) -> None:
        self._transport = transport
        self._prepare = prepare
        self._window = asyncio.Semaphore(window)
        self._deadline = deadline
        self._attempt_timeout = attempt_timeout
        self._backoff = backoff
        self._on_retry = on_retry
        self._on_outcome = on_outcome
        self._outcomes: asyncio.Queue[tuple[Any, Outcome] | BaseException | None] = asyncio.Queue()
        self._inflight: set[_InFlight] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._resends: set[asyncio.Task[None]] = set()

    async def run(self, items: AsyncIterable[Any] | Iterable[Any]) -> AsyncIterator[tuple[Any, Outcome]]:
        feeding = asyncio.create_task(self._feed(items))
        try:
            while (got := await self._outcomes.get()) is not None:
                if isinstance(got, BaseException):
                    raise got
                yield got
        finally:
            feeding.cancel()
            for task in list(self._resends):
                task.cancel()
            for sending in self._inflight:
                if sending.timer is not None:
                    sending.timer.cancel()

    async def _feed(self, items: AsyncIterable[Any] | Iterable[Any]) -> None:
        source = aiter(items) if isinstance(items, AsyncIterable) else _as_async(items)
        try:
            while True:
                await self._window.acquire()  # a slot first: the producer is asked for no more than fits
                try:
                    item = await anext(source)
                except StopAsyncIteration:
                    self._window.release()
                    break
                except BaseException:
                    self._window.release()
                    raise
                await self._start(item)
            await self._idle.wait()
            self._outcomes.put_nowait(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the producer failed: the consumer hears it, after what was already settled
            await self._idle.wait()
            self._outcomes.put_nowait(exc)

    async def _start(self, item: Any) -> None:
        try:
            subject, payload, headers = self._prepare(item)
        except PayloadTooLarge as exc:
            self._window.release()
            self._on_outcome(type(item.event).DESCRIPTOR.full_name, exc, None)
            self._outcomes.put_nowait((item, exc))
            return
        loop = asyncio.get_running_loop()
        sending = _InFlight(item, subject, payload, headers, loop.time() + self._deadline, time.perf_counter())
        if tracing_on():
            sending.span = start_producer_span(subject, headers)
        self._inflight.add(sending)
        self._idle.clear()
        await self._send(sending)

    async def _send(self, sending: _InFlight) -> None:
        sending.attempts += 1
        try:
            future = await self._transport.publish_async(sending.subject, sending.payload, sending.headers)
        except Exception as exc:  # whatever it is, this event is settled or tried again
            self._attempted(sending, None, exc)
            return
        if not future.done():
            sending.timer = asyncio.get_running_loop().call_later(self._attempt_timeout, future.cancel)
        future.add_done_callback(lambda done: self._settled(sending, done))

    def _settled(self, sending: _InFlight, future: asyncio.Future[PublishAck]) -> None:
        if sending.timer is not None:
            sending.timer.cancel()
        if future.cancelled():
            self._attempted(sending, None, TimeoutError("no ack before the attempt timed out"))
        elif (failure := future.exception()) is not None:
            self._attempted(sending, None, failure)
        else:
            self._attempted(sending, future.result(), None)

    def _attempted(self, sending: _InFlight, ack: PublishAck | None, failure: BaseException | None) -> None:
        outcome: Outcome
        if ack is not None:
            outcome = ack
        elif isinstance(failure, PublishError | PermissionDenied):
            outcome = failure
        else:
            loop = asyncio.get_running_loop()
            remaining = sending.give_up_at - loop.time()
            if remaining > 0:
                self._on_retry(1)
                delay = min(remaining, self._backoff.delay(sending.attempts))
                sending.timer = loop.call_later(delay, self._resend, sending)
                return
            outcome = PublishTimeout(
                f"{sending.subject}: not acknowledged within {self._deadline:g}s after {sending.attempts} attempts "
                f"(last: {failure}); msg id {sending.headers.get('Nats-Msg-Id')}"
            )
        if sending.span is not None:
            end_span(sending.span, None if isinstance(outcome, PublishAck) else outcome)
        took = time.perf_counter() - sending.started if isinstance(outcome, PublishAck) else None
        self._on_outcome(sending.headers["ce-type"], outcome, took)
        self._outcomes.put_nowait((sending.item, outcome))
        self._window.release()
        self._inflight.discard(sending)
        if not self._inflight:
            self._idle.set()

    def _resend(self, sending: _InFlight) -> None:
        task = asyncio.ensure_future(self._send(sending))
        self._resends.add(task)
        task.add_done_callback(self._resends.discard)


async def _as_async(items: Iterable[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item
