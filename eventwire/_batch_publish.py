"""Publishing a run of events for one stream as fast-ingest batches, with an outcome for each.

The server confirms a batch as a whole: every hundred messages "persisted up
to here", then one PubAck with the stream sequence of the last one stored. It
drops a known ``Nats-Msg-Id`` silently. So each event's outcome is derived:
when the stream grew by exactly the number of events settled and nothing was
sent twice, they were stored in order right after the sequence the stream had
before; otherwise the stored range is read back (headers only) and matched by
msg id, and an event whose id is not there was a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from ._backoff import Backoff
from ._errors import PermissionDenied, PublishError, PublishTimeout
from .transport import BatchMessage, BatchTarget, FastBatchResult, PublishAck, TransientPublishFailure, Transport

logger = logging.getLogger("eventwire.publisher")

Outcome = PublishAck | PublishError | PermissionDenied


async def by_batch_target(
    transport: Transport, subjects: Sequence[str]
) -> tuple[list[tuple[BatchTarget, list[int]]], list[int]]:
    """Positions grouped by the stream that takes fast-ingest batches for their subject, in order; and the rest."""
    targets: dict[str, BatchTarget | None] = {}
    batched: dict[str, tuple[BatchTarget, list[int]]] = {}
    rest: list[int] = []
    for position, subject in enumerate(subjects):
        if subject not in targets:
            targets[subject] = await transport.batch_target(subject)
        target = targets[subject]
        if target is None:
            rest.append(position)
        else:
            batched.setdefault(target.stream, (target, []))[1].append(position)
    return list(batched.values()), rest


class FastBatchRun:
    """One ``publish_many``'s events for one stream, in order, until each has an outcome or goes pipelined."""

    def __init__(
        self,
        target: BatchTarget,
        messages: list[BatchMessage],
        *,
        flow: int,
        attempt_timeout: float,
        backoff: Backoff,
        give_up_at: float,
        deadline: float,
        on_retry: Callable[[int], None],
        keys: Sequence[str] | None = None,
    ) -> None:
        """``keys``, when given, name each message's ordering key: a refused message holds back its key's later ones."""
        self._target = target
        self._keys = keys
        self._messages = messages
        self._flow = flow
        self._attempt_timeout = attempt_timeout
        self._backoff = backoff
        self._give_up_at = give_up_at
        self._deadline = deadline
        self._on_retry = on_retry
        self.outcomes: list[Outcome | None] = [None] * len(messages)
        self._settled: list[int] = []  # stored or dropped as duplicates, in the order sent
        self._last_stored = 0
        self._exact = True  # every batch ended with the server's word on what it settled

    async def run(self) -> list[int]:
        """Send; return the positions that must take the pipelined path (the stream stopped taking batches)."""
        loop = asyncio.get_running_loop()
        try:
            before = await self._target.last_sequence()
        except TransientPublishFailure:
            return list(range(len(self._messages)))  # the pipelined path retries until the deadline
        self._last_stored = before
        pending = list(range(len(self._messages)))
        attempt = 0
        while pending:
            stall = max(0.001, min(self._attempt_timeout, self._give_up_at - loop.time()))
            result = await self._target.send([self._messages[p] for p in pending], flow=self._flow, stall_timeout=stall)
            pending, failure, batching_over = self._take(result, pending)
            if batching_over:
                break
            if failure is None or not pending:
                continue
            attempt += 1
            remaining = self._give_up_at - loop.time()
            if remaining <= 0:
                for p in pending:
                    self.outcomes[p] = PublishTimeout(
                        f"not acknowledged within {self._deadline:g}s after {attempt} attempts (last: {failure})"
                    )
                pending = []
                break
            self._on_retry(len(pending))
            stream = self._target.stream
            logger.debug("fast-ingest batch to %s broke off (%s); resending %d", stream, failure, len(pending))
            await asyncio.sleep(min(remaining, self._backoff.delay(attempt)))
        if self._settled:
            await self._attribute(before)
        return pending

    def _take(self, result: FastBatchResult, pending: list[int]) -> tuple[list[int], Exception | None, bool]:
        """Record what one batch settled; return what is left, why it broke off, and whether batching is over."""
        done, pending = pending[: result.settled], pending[result.settled :]
        if result.not_batched is not None:
            # An older server took message 1 as an ordinary publish; its PubAck is that message's outcome.
            ack = result.not_batched
            self.outcomes[done[0]] = PublishAck(ack["stream"], int(ack["seq"]), bool(ack.get("duplicate")))
            return pending, None, True
        if result.first_duplicate is not None:
            self.outcomes[done[0]] = PublishAck(self._target.stream, result.first_duplicate, True)
            done = done[1:]
        self._settled += done
        if result.last_sequence is not None:
            self._last_stored = max(self._last_stored, result.last_sequence)
        if result.refusal is not None and result.refusal.index is not None:
            if result.refusal.batching_disabled:  # not, or no longer: someone changed the stream
                return pending, None, True
            error = result.refusal.error
            if isinstance(error, TransientPublishFailure):
                return pending, error, False
            assert isinstance(error, PublishError)
            refused, pending = pending[0], pending[1:]
            self.outcomes[refused] = error
            if self._keys is not None:
                key = self._keys[refused]
                pending = [p for p in pending if self._keys[p] != key]  # left without an outcome: not sent
            return pending, None, False
        if result.unknown is not None:
            self._exact = False  # some of what followed the last flow ack may be stored: resent, and deduplicated
            return pending, TransientPublishFailure(result.unknown), False
        return pending, None, False

    async def _attribute(self, before: int) -> None:
        stream, settled, last_stored, exact = self._target.stream, self._settled, self._last_stored, self._exact
        if exact and last_stored - before == len(settled):
            for offset, p in enumerate(settled, start=1):
                self.outcomes[p] = PublishAck(stream, before + offset)
            return
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                if not exact:
                    last_stored = await self._target.last_sequence()
                stored = await self._target.stored_msg_ids(before + 1, last_stored)
                break
            except TransientPublishFailure as exc:
                attempt += 1
                remaining = self._give_up_at - loop.time()
                if remaining <= 0:
                    for p in settled:
                        # Stored or a duplicate for sure; a resend is deduplicated, so say "try again".
                        self.outcomes[p] = PublishTimeout(f"stored or duplicate, but could not tell which: {exc}")
                    return
                await asyncio.sleep(min(remaining, self._backoff.delay(attempt)))
        claimed: set[str] = set()
        for p in settled:
            msg_id = self._messages[p][2]["Nats-Msg-Id"]
            sequence = stored.get(msg_id)
            if sequence is None or msg_id in claimed:
                self.outcomes[p] = PublishAck(stream, sequence or 0, duplicate=True)
            else:
                claimed.add(msg_id)
                self.outcomes[p] = PublishAck(stream, sequence)
