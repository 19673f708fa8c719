"""Fast-ingest batch publishing (nats-server 2.14+, ADR-50), on nats-py's core API, which lacks it.

A batch is a run of ordinary publishes whose reply subject says what they
are: ``<prefix>.<batch id>.<flow>.fail.<batch seq>.<op>.$FI``. The server
persists them in order (``fail``: a gap ends the batch), drops known
``Nats-Msg-Id``\\ s silently, and answers on the reply subjects:

- ``{"type":"ack","seq":N,"msgs":M}``: messages up to N are persisted; the
  next ack comes after M more. The first comes after message 1 with N = 0.
- ``{"type":"err","seq":N,"error":…}``: message N was refused; the batch
  commits what came before it, and a final PubAck follows.
- ``{"type":"gap",…}``: a message went missing; likewise a commit follows.
- a PubAck (``stream``, ``seq``, ``batch``, ``count``) once the batch is
  committed, or an ordinary PubAck error when the batch cannot start or no
  longer exists (a restarted server forgets it).

The sender keeps at most two acks' worth of messages unconfirmed, as ADR-50
advises, and waits for the first ack before its second message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from .._nats_client import EventwireClient
from ._protocol import BatchMessage, BatchRefusal, FastBatchResult

logger = logging.getLogger("eventwire.transport")

_START, _APPEND, _COMMIT, _PING = 0, 1, 2, 4
BATCH_ID_UNKNOWN = 10208


class _Batch:
    """The client's state of one batch: what the server confirmed so far, and its outcome once known."""

    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id
        self.acked = -1  # no flow ack yet
        self.per_ack = 1
        self.changed = asyncio.Event()
        self.result: FastBatchResult | None = None
        self.refusal: BatchRefusal | None = None

    def room(self, sent: int) -> int:
        """How many more messages may go: one at first, then up to two acks' worth beyond the last ack."""
        if sent == 0:
            return 1
        return max(0, self.acked + 2 * self.per_ack - sent) if self.acked >= 0 else 0

    def finish(self, result: FastBatchResult) -> None:
        if self.result is None:
            self.result = result
        self.changed.set()

    def on_reply(self, data: bytes, status: str | None) -> None:
        if self.result is not None:
            return
        if status == "503":
            self.finish(FastBatchResult(max(self.acked, 0), unknown="no responders: no stream, or no leader"))
            return
        try:
            reply = json.loads(data)
        except ValueError:
            logger.warning("fast-ingest batch %s: unreadable reply %r", self.batch_id, data[:200])
            return
        kind = reply.get("type")
        if kind == "ack":
            self.acked = max(self.acked, int(reply.get("seq", 0)))
            self.per_ack = max(1, int(reply.get("msgs", 1)))
            self.changed.set()
        elif kind == "err":
            error = reply.get("error") or {}
            seq = int(reply.get("seq", 0))
            self.refusal = BatchRefusal(
                seq - 1, int(error.get("code", 0)), int(error.get("err_code", 0)), str(error.get("description", ""))
            )
        elif kind == "gap":
            logger.warning("fast-ingest batch %s: the server missed messages (%s)", self.batch_id, reply)
        else:
            self._on_pub_ack(reply)

    def _on_pub_ack(self, reply: dict[str, Any]) -> None:
        error = reply.get("error")
        if error is not None:
            refusal = BatchRefusal(
                0, int(error.get("code", 0)), int(error.get("err_code", 0)), str(error.get("description", ""))
            )
            if self.acked < 0:  # only message 1 was sent: it is the one refused
                self.finish(FastBatchResult(0, refusal=refusal))
            elif refusal.err_code == BATCH_ID_UNKNOWN:
                # Restarted, or it just committed and the PubAck is still on its way.
                self.refusal = BatchRefusal(None, refusal.code, refusal.err_code, refusal.description)
                self.changed.set()
            else:
                self.finish(FastBatchResult(self.acked, unknown=refusal.description))
            return
        if "batch" not in reply:
            self.finish(FastBatchResult(1, last_sequence=int(reply["seq"]), not_batched=reply))
            return
        count = int(reply.get("count", 0))
        sequence = int(reply["seq"])
        if reply.get("duplicate"):
            self.finish(FastBatchResult(1, first_duplicate=sequence))
            return
        refused = self.refusal if self.refusal is not None and self.refusal.index == count else None
        self.finish(FastBatchResult(count, last_sequence=sequence or None, refusal=refused))


class FastIngest:
    """Sends fast-ingest batches over one connection; one reply subscription serves them all."""

    def __init__(self, nc: EventwireClient) -> None:
        self._nc = nc
        self._prefix = ""
        self._batches: dict[str, _Batch] = {}

    async def _subscribe(self) -> None:
        if self._prefix:
            return
        self._prefix = self._nc.new_inbox()
        await self._nc.subscribe(self._prefix + ".>", cb=self._on_reply, pending_msgs_limit=-1, pending_bytes_limit=-1)

    async def _on_reply(self, msg: Msg) -> None:
        batch_id = msg.subject[len(self._prefix) + 1 :].split(".", 1)[0]
        batch = self._batches.get(batch_id)
        if batch is not None:
            batch.on_reply(msg.data, msg.headers.get("Status") if msg.headers else None)

    async def send(self, messages: Sequence[BatchMessage], *, flow: int, stall_timeout: float) -> FastBatchResult:
        """Send ``messages`` as one batch and wait for its commit, or for what can be known when it breaks off."""
        await self._subscribe()
        batch_id = uuid.uuid4().hex
        batch = _Batch(batch_id)
        self._batches[batch_id] = batch
        try:
            return await self._run(batch, messages, flow, stall_timeout)
        finally:
            self._batches.pop(batch_id, None)

    async def _run(
        self, batch: _Batch, messages: Sequence[BatchMessage], flow: int, stall_timeout: float
    ) -> FastBatchResult:
        reply_base = f"{self._prefix}.{batch.batch_id}.{flow}.fail."
        sent = 0
        while sent < len(messages) and batch.result is None and batch.refusal is None:
            room = batch.room(sent)
            if not room:
                if not await self._wait(batch, stall_timeout, reply_base, messages[0][0], sent):
                    return self._broken_off(batch, "no flow acknowledgement in time")
                continue
            chunk = []
            for number in range(sent + 1, min(len(messages), sent + room) + 1):
                subject, payload, headers = messages[number - 1]
                op = _COMMIT if number == len(messages) else (_START if number == 1 else _APPEND)
                chunk.append((subject, f"{reply_base}{number}.{op}.$FI", headers, payload))
            try:
                await self._nc.publish_all(chunk)
            except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError) as exc:
                return self._broken_off(batch, f"connection unavailable: {exc!r}")
            sent += len(chunk)
        while batch.result is None:
            if batch.refusal is not None and batch.refusal.err_code == BATCH_ID_UNKNOWN:
                # A final PubAck may still come right behind; then give up on what was not acked.
                await self._wait_once(batch, min(stall_timeout, 0.5))
                if batch.result is None:
                    return self._broken_off(batch, "the server lost the batch")
                break
            if not await self._wait(batch, stall_timeout, reply_base, messages[0][0], sent):
                return self._broken_off(batch, "no acknowledgement of the commit in time")
        assert batch.result is not None
        return batch.result

    async def _wait_once(self, batch: _Batch, timeout: float) -> bool:
        batch.changed.clear()
        try:
            async with asyncio.timeout(timeout):
                await batch.changed.wait()
        except TimeoutError:
            return False
        return True

    async def _wait(self, batch: _Batch, timeout: float, reply_base: str, subject: str, sent: int) -> bool:
        """Wait for news of ``batch``; after a silent ``timeout`` ask once with a ping (acks can be lost)."""
        if await self._wait_once(batch, timeout):
            return True
        try:
            await self._nc.publish(subject, b"", reply=f"{reply_base}{max(sent, 1)}.{_PING}.$FI")
        except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError):
            return False
        return await self._wait_once(batch, timeout)

    @staticmethod
    def _broken_off(batch: _Batch, why: str) -> FastBatchResult:
        if batch.result is not None:
            return batch.result
        return FastBatchResult(max(batch.acked, 0), unknown=why)
