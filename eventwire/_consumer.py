"""Durable consumption: a continuous pull, a fixed pool of workers, explicit settlement.

The hot path is one worker loop per unit of concurrency taking messages from
a local buffer: no task per message, and no log record unless its level is on.

Each delivery goes through the handler's settlement chain (eventwire.middleware:
decoding, the retry policy, dead-lettering and the App's middleware), which
returns an Outcome; the consumer only applies it: ack, nak with its delay, term.

Only what is still ours is dispatched: a fetched event that waited here past
its ack_wait (a paused process, a stalled loop) belongs to the server again,
which has redelivered it or will. A pull whose requests or acks the server
refuses stops the handler with an ERROR; it never re-runs handlers whose acks
cannot land.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Hashable

from ._delivery import HandlerSpec, Settled, Settlement, SettlementListener, describe, log_fields
from ._errors import EventwireError
from .middleware import Step
from .transport import InboundMessage, MessageSource, Transport

logger = logging.getLogger("eventwire.consumer")

CONFIRM_ATTEMPTS = 3
_EVERYTHING = "*"


class Consumer:
    """Runs one handler on its durable until stopped."""

    def __init__(
        self,
        spec: HandlerSpec,
        transport: Transport,
        chain: Step,
        *,
        service: str | None = None,
        listeners: list[SettlementListener] | None = None,
    ) -> None:
        self._spec = spec
        self._service = service
        self._listeners = listeners if listeners is not None else []
        self._transport = transport
        self._chain = chain
        self._buffer: deque[InboundMessage] = deque()
        self._inflight: set[InboundMessage] = set()
        # Ordered modes: messages waiting for an earlier one of their key, and the keys being worked on.
        self._parked: dict[Hashable, deque[InboundMessage]] = {}
        self._parked_count = 0
        self._busy_keys: set[Hashable] = set()
        self._ready = asyncio.Event()
        self._stopping = False
        self._source: MessageSource | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._settling: set[asyncio.Task[None]] = set()
        self.handled = 0
        self.redelivered = 0
        self.expired = 0
        self.unconfirmed_acks = 0
        self.failure: EventwireError | None = None

    @property
    def spec(self) -> HandlerSpec:
        return self._spec

    @property
    def holds_pin(self) -> bool:
        """Whether this consumer's pinned durable delivers to this instance."""
        return self._source is not None and self._source.holds_pin

    @property
    def idle(self) -> bool:
        """Nothing fetched, waiting or being handled here."""
        return not self._buffer and not self._inflight and not self._parked_count

    async def release_pin(self) -> None:
        if self._source is not None:
            await self._source.release()

    def _free_slots(self) -> int:
        return self._spec.prefetch - len(self._buffer) - len(self._inflight) - self._parked_count

    def _on_message(self, message: InboundMessage) -> None:
        if self._stopping:
            # Fetched but never started: hand it straight back for another instance.
            task = asyncio.ensure_future(self._settle(message, "nak", None, None))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
            return
        self._buffer.append(message)
        self._ready.set()

    async def start(self) -> None:
        spec = self._spec
        self._source = await self._transport.pull(
            spec.durable,
            self._on_message,
            self._free_slots,
            min_batch=_min_batch(spec),
            on_failure=self._fail,
        )
        work = self._work if spec.ordered_by is None else self._work_in_order
        self._workers = [
            asyncio.create_task(work(), name=f"eventwire-{spec.name}-{i}") for i in range(spec.concurrency)
        ]
        self._heartbeat = asyncio.create_task(self._beat(), name=f"eventwire-{spec.name}-heartbeat")

    def _fail(self, error: EventwireError) -> None:
        """The pull can never work (a refused permission): stop dispatching, say so once."""
        if self.failure is not None:
            return
        self.failure = error
        held = len(self._buffer) + self._parked_count
        logger.error(
            "handler %s stopped: %s; grant it and restart the service (%d fetched event(s) left to the server)",
            self._spec.name,
            error,
            held,
        )
        self._stopping = True
        self._buffer.clear()
        self._parked.clear()
        self._parked_count = 0
        self._ready.set()

    def _still_ours(self, message: InboundMessage) -> bool:
        """False for an event that waited here past its ack_wait; then every such one waiting is dropped too."""
        ack_wait = self._spec.durable.ack_wait
        oldest_allowed = asyncio.get_running_loop().time() - ack_wait
        if message.progress_at >= oldest_allowed:
            return True
        dropped = 1 + self._drop_expired(oldest_allowed)
        self.expired += dropped
        if self._source is not None:
            self._source.notify()  # their room is free again
        headers = message.headers or {}
        logger.warning(
            "handler %s: %d fetched event(s) waited here longer than ack_wait (%gs), the process was paused or its "
            "loop stalled; not handled, the server redelivers them [first: %s]",
            self._spec.name,
            dropped,
            ack_wait,
            describe(message, headers.get("ce-type"), headers.get("ce-id")),
            extra={"eventwire": self._fields(message, headers.get("ce-type"), headers.get("ce-id"), "expired")},
        )
        return False

    def _drop_expired(self, oldest_allowed: float) -> int:
        kept = [m for m in self._buffer if m.progress_at >= oldest_allowed]
        dropped = len(self._buffer) - len(kept)
        self._buffer = deque(kept)
        for key in list(self._parked):
            waiting = self._parked[key]
            fresh = deque(m for m in waiting if m.progress_at >= oldest_allowed)
            dropped += len(waiting) - len(fresh)
            self._parked_count -= len(waiting) - len(fresh)
            if fresh:
                self._parked[key] = fresh
            else:
                del self._parked[key]
        return dropped

    async def _work(self) -> None:
        ready = self._ready
        time = asyncio.get_running_loop().time
        ack_wait = self._spec.durable.ack_wait
        while not self._stopping:
            if not self._buffer:
                ready.clear()
                await ready.wait()
                continue
            message = self._buffer.popleft()
            if message.progress_at < time() - ack_wait and not self._still_ours(message):
                continue
            self._inflight.add(message)
            try:
                await self._dispatch(message)
            finally:
                self._inflight.discard(message)
            if self._source is not None:
                self._source.notify()

    def _key_of(self, message: InboundMessage) -> Hashable:
        if self._spec.ordered_by == "all":
            return _EVERYTHING
        key = (message.headers or {}).get("ce-subject")
        return key if key is not None else object()  # no key: no order to keep

    async def _work_in_order(self) -> None:
        """One key at a time per worker: a key's next event waits for the one before it to settle."""
        ready = self._ready
        while not self._stopping:
            if not self._buffer:
                ready.clear()
                await ready.wait()
                continue
            message: InboundMessage | None = self._buffer.popleft()
            assert message is not None
            if not self._still_ours(message):
                continue
            key = self._key_of(message)
            if key in self._busy_keys:
                self._parked.setdefault(key, deque()).append(message)
                self._parked_count += 1
                continue
            self._busy_keys.add(key)
            try:
                while message is not None:
                    self._inflight.add(message)
                    try:
                        await self._dispatch(message)
                    finally:
                        self._inflight.discard(message)
                    message = None
                    waiting = self._parked.get(key)
                    while waiting and not self._stopping and message is None:
                        message = waiting.popleft()
                        self._parked_count -= 1
                        if not waiting:
                            del self._parked[key]
                        if not self._still_ours(message):
                            message = None
                            waiting = self._parked.get(key)
            finally:
                self._busy_keys.discard(key)
            if self._source is not None:
                self._source.notify()

    async def _dispatch(self, message: InboundMessage) -> None:
        if message.delivery_count > 1:
            self.redelivered += 1
        outcome = await self._chain(message)
        kind = outcome.kind
        if kind == "ack" and not self._listeners and not self._spec.confirm_acks:
            self.handled += 1  # the common case, without the bookkeeping a listener or a confirmation needs
            try:
                await message.ack()
            except Exception as settle_error:
                self._settle_failed(message, settle_error)
            return
        headers = message.headers or {}
        if kind == "ack":
            self.handled += 1
            await self._settle(message, "ack", headers.get("ce-type"), headers.get("ce-id"))
            return
        settled: Settled = "ack" if kind == "skip" else "nak" if kind == "nak" else "term"
        await self._settle(
            message,
            settled,
            headers.get("ce-type"),
            headers.get("ce-id"),
            outcome.reason or kind,
            delay=outcome.delay,
            exc=outcome.error,
        )

    def _settle_failed(self, message: InboundMessage, error: Exception, outcome: Settled = "ack") -> None:
        headers = message.headers or {}
        ce_type, ce_id = headers.get("ce-type"), headers.get("ce-id")
        logger.warning(
            "could not %s (%r); the broker will redeliver it [%s]",
            outcome,
            error,
            describe(message, ce_type, ce_id),
            extra={"eventwire": self._fields(message, ce_type, ce_id, outcome)},
        )

    async def _settle(
        self,
        message: InboundMessage,
        outcome: Settled,
        ce_type: str | None,
        ce_id: str | None,
        reason: str | None = None,
        *,
        delay: float | None = None,
        exc: BaseException | None = None,
    ) -> None:
        if reason is not None:
            # An unexpected exception is an ERROR with its traceback; a Reject or bad input says it in one line.
            level = logging.ERROR if outcome == "term" and exc is not None else logging.WARNING
            if logger.isEnabledFor(level):
                logger.log(
                    level,
                    "%s: %s [%s]",
                    outcome,
                    reason,
                    describe(message, ce_type, ce_id),
                    extra={"eventwire": self._fields(message, ce_type, ce_id, outcome)},
                    exc_info=exc if outcome == "term" else None,
                )
        try:
            if outcome == "ack":
                if self._spec.confirm_acks:
                    await self._ack_confirmed(message, ce_type, ce_id)
                else:
                    await message.ack()
            elif outcome == "nak":
                await message.nak(delay)
            else:
                await message.term()
        except Exception as settle_error:
            self._settle_failed(message, settle_error, outcome)
            return
        if self._listeners:
            settlement = Settlement(
                self._spec.name,
                message.subject,
                message.stream_sequence,
                message.delivery_count,
                ce_type,
                ce_id,
                outcome,
                delay,
                reason,
            )
            for listener in self._listeners:
                listener(settlement)

    async def _ack_confirmed(self, message: InboundMessage, ce_type: str | None, ce_id: str | None) -> None:
        """Ack until the server confirms it; an ack that stays unconfirmed is logged and counted, not hidden."""
        timeout = min(1.0, self._spec.durable.ack_wait / 4)
        last: Exception | None = None
        for _ in range(CONFIRM_ATTEMPTS):
            try:
                await message.ack_confirmed(timeout)
            except Exception as exc:  # no answer in time, or the connection is down
                last = exc
                continue
            return
        self.unconfirmed_acks += 1
        logger.warning(
            "ack not confirmed after %d attempts (%s); the server may deliver it again [%s]",
            CONFIRM_ATTEMPTS,
            type(last).__name__,
            describe(message, ce_type, ce_id),
            extra={"eventwire": self._fields(message, ce_type, ce_id, "ack")},
        )

    def _fields(
        self, message: InboundMessage, ce_type: str | None, ce_id: str | None, outcome: str | None
    ) -> dict[str, object]:
        return log_fields(message, ce_type, ce_id, service=self._service, handler=self._spec.name, outcome=outcome)

    def _held(self) -> list[InboundMessage]:
        return [*self._inflight, *self._buffer, *(m for waiting in self._parked.values() for m in waiting)]

    async def _beat(self) -> None:
        """Send in-progress for messages held longer than half of ack_wait, so none is redelivered mid-work."""
        ack_wait = self._spec.durable.ack_wait
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(ack_wait / 4)
            now = loop.time()
            due = now - ack_wait / 2
            for message in self._held():
                # Past ack_wait the server owns it again: a heartbeat now would only hide that here.
                if now - ack_wait <= message.progress_at < due:
                    message.progress_at = loop.time()
                    try:
                        await message.in_progress()
                    except Exception as exc:
                        if logger.isEnabledFor(logging.DEBUG):
                            headers = message.headers or {}
                            logger.debug(
                                "in-progress failed: %r [%s]",
                                exc,
                                describe(message, headers.get("ce-type"), headers.get("ce-id")),
                                extra={
                                    "eventwire": self._fields(
                                        message, headers.get("ce-type"), headers.get("ce-id"), None
                                    )
                                },
                            )

    async def stop(self, timeout: float) -> None:
        """Stop fetching, let in-flight handlers settle within ``timeout``, hand back the rest."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + timeout
        self._stopping = True
        self._ready.set()
        if self._source is not None:
            await self._source.stop()
        if self._workers:
            _, cut_off = await asyncio.wait(self._workers, timeout=max(0.0, give_up_at - loop.time()))
            for task in cut_off:
                # Not settled: the broker redelivers it after ack_wait.
                task.cancel()
            if cut_off:
                logger.warning(
                    "handler %s: %d in-flight deliveries cut off by the shutdown timeout",
                    self._spec.name,
                    len(cut_off),
                )
                await asyncio.gather(*cut_off, return_exceptions=True)
        unstarted = [*self._buffer, *(m for waiting in self._parked.values() for m in waiting)]
        self._buffer.clear()
        self._parked.clear()
        self._parked_count = 0
        for message in unstarted:
            await self._settle(message, "nak", None, None)
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        if self._source is not None:
            await self._source.release()  # everything settled: the next instance may take the partition now
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)


def _min_batch(spec: HandlerSpec) -> int:
    """The smallest pull worth a request. A pinned durable's pull keeps one request out at a time
    (transport/_pull.py says why): a new one only when all it could hold is free again."""
    if spec.durable.pinned:
        return max(1, spec.prefetch - spec.durable.max_ack_pending)
    return max(1, spec.prefetch // 2)
