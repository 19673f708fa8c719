"""The transactional outbox: events written in the business transaction, published by a relay."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from .._batch_publish import FastBatchRun, by_batch_target
from .._errors import ConfigError, PermissionDenied, PublishError
from .._ids import uuid7
from .._publisher import ATTEMPT_TIMEOUT, FAST_PATH_FLOW, RETRY_BACKOFF, EventEncoder, send_with_retries
from .._streams import Stream
from .._tracing import current_trace_context
from ..contracts import PROTOBUF, EventRegistry
from ..transport import BatchMessage, PublishAck, Transport
from ._tables import metadata, outbox_keys_table, outbox_table

logger = logging.getLogger("eventwire.outbox")

NOTIFY_CHANNEL = "eventwire_outbox"


async def create_tables(engine: AsyncEngine) -> None:
    """Create the outbox tables if they are missing."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


class Outbox:
    """Adds events to the outbox inside a caller's transaction.

    Nothing is published unless that transaction commits; a relay publishes
    committed rows, per key in commit order, with ``Nats-Msg-Id`` = the row id.
    ``streams`` names the partitioned streams its events go to (their key goes into the subject).
    """

    def __init__(
        self,
        *,
        source: str,
        registry: EventRegistry | None = None,
        content_type: str = PROTOBUF,
        streams: Iterable[Stream] = (),
    ) -> None:
        self._encoder = EventEncoder(source, registry, content_type, streams)

    async def add(
        self,
        session: AsyncSession,
        event: Message,
        *,
        subject: str,
        key: str | None = None,
        msg_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Store ``event`` in the session's transaction; return its msg id (the outbox row id).

        ``headers`` are NATS headers sent beside the event's own (a message schedule's, say).
        """
        event_id = uuid7()
        traceparent, tracestate = current_trace_context()
        encoded = self._encoder.encode(
            event,
            subject,
            key=key,
            msg_id=msg_id,
            event_id=event_id,
            correlation_id=correlation_id,
            causation_id=causation_id,
            traceparent=traceparent,
            tracestate=tracestate,
        )
        if headers:
            encoded.headers.update(headers)
        row_id = encoded.headers["Nats-Msg-Id"]
        dialect = session.bind.dialect.name if session.bind is not None else ""
        if key is None:
            event_key, key_seq = row_id, 0
        else:
            key_seq = await _next_key_seq(session, dialect, key)
            event_key = key
        await session.execute(
            insert(outbox_table).values(
                id=row_id,
                event_key=event_key,
                key_seq=key_seq,
                subject=encoded.subject,
                headers=json.dumps(encoded.headers),
                payload=encoded.payload,
                created_at=datetime.now(UTC),
            )
        )
        if dialect == "postgresql":
            # Delivered on commit only: a relay wakes for committed rows.
            await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
        return row_id


async def _pending_of(conn: AsyncConnection, keys: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Each key's earliest pending key_seq and how many rows it has pending."""
    pending = outbox_table.c.sent_at.is_(None)
    query = (
        select(outbox_table.c.event_key, func.min(outbox_table.c.key_seq), func.count())
        .where(pending, outbox_table.c.event_key.in_(sorted(keys)))
        .group_by(outbox_table.c.event_key)
    )
    return {key: (int(first), int(count)) for key, first, count in (await conn.execute(query)).all()}


async def _next_key_seq(session: AsyncSession, dialect: str, key: str) -> int:
    if dialect == "postgresql":
        upsert_pg = postgresql.insert(outbox_keys_table).values(event_key=key, last_seq=1)
        statement: Any = upsert_pg.on_conflict_do_update(
            index_elements=[outbox_keys_table.c.event_key],
            set_={"last_seq": outbox_keys_table.c.last_seq + 1},
        )
    elif dialect == "sqlite":
        upsert_lite = sqlite.insert(outbox_keys_table).values(event_key=key, last_seq=1)
        statement = upsert_lite.on_conflict_do_update(
            index_elements=[outbox_keys_table.c.event_key],
            set_={"last_seq": outbox_keys_table.c.last_seq + 1},
        )
    else:
        raise ConfigError(f"the outbox supports PostgreSQL and SQLite, not {dialect!r}")
    result = await session.execute(statement.returning(outbox_keys_table.c.last_seq))
    return int(result.scalar_one())


class OutboxRelay:
    """Publishes committed outbox rows and marks them sent once JetStream acknowledged them.

    Several relays may share a PostgreSQL table (rows are claimed with
    ``FOR UPDATE SKIP LOCKED``; a key is left to whoever holds its earliest
    pending row); on SQLite relays take turns. A row published but
    not yet marked (a crash in between) is published again and deduplicated
    by JetStream through its msg id. A relay that cannot publish keeps its
    rows and backs off; it never drops them.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        retention: float = 7 * 24 * 3600.0,
        publish_deadline: float = 10.0,
        parallel_keys: int = 256,
    ) -> None:
        if batch_size < 1 or poll_interval <= 0 or retention <= 0 or parallel_keys < 1:
            raise ConfigError("OutboxRelay: batch_size, poll_interval, retention and parallel_keys must be positive")
        self._engine = engine
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._retention = retention
        self._publish_deadline = publish_deadline
        self._parallel_keys = parallel_keys
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def start(self, transport: Transport) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self.run(transport), name="eventwire-outbox-relay")

    async def stop(self) -> None:
        """Stop after the current batch."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def run(self, transport: Transport) -> None:
        """Relay until :meth:`stop`: batch after batch while rows are pending, then wait for a notify or a poll."""
        async with contextlib.AsyncExitStack() as stack:
            if self._engine.dialect.name == "postgresql":
                await self._listen(stack)
            failures = 0
            last_prune = 0.0
            loop = asyncio.get_running_loop()
            while not self._stopping:
                try:
                    sent = await self.relay_once(transport)
                    if loop.time() - last_prune > min(3600.0, self._retention / 10):
                        await self.prune()
                        last_prune = loop.time()
                    failures = 0
                except Exception as exc:
                    failures += 1
                    delay = min(30.0, 0.1 * 2**failures)
                    logger.warning("outbox relay failed (%r); retrying in %.1fs", exc, delay)
                    sent = 0
                    await self._sleep(delay)
                    continue
                if sent < self._batch_size:
                    await self._sleep(self._poll_interval)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()

    async def _listen(self, stack: contextlib.AsyncExitStack) -> None:
        connection = await stack.enter_async_context(self._engine.connect())
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        if driver is None or not hasattr(driver, "add_listener"):
            return

        def notified(*_: object) -> None:
            self._wake.set()

        await driver.add_listener(NOTIFY_CHANNEL, notified)
        stack.push_async_callback(driver.remove_listener, NOTIFY_CHANNEL, notified)

    async def relay_once(self, transport: Transport) -> int:
        """Publish one batch of pending rows; return how many were marked sent."""
        async with self._engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                # SQLite has no row locks: a write first takes the database's write lock, so relays
                # sharing the file take turns instead of publishing and marking the same rows.
                await conn.execute(update(outbox_keys_table).where(outbox_keys_table.c.last_seq < 0).values(last_seq=0))
            rows = await self._claim(conn)
            if not rows:
                return 0
            sent_ids = await self._publish(transport, rows)
            if sent_ids:
                await conn.execute(
                    update(outbox_table).where(outbox_table.c.id.in_(sent_ids)).values(sent_at=datetime.now(UTC))
                )
        self.published += len(sent_ids)
        return len(sent_ids)

    async def _claim(self, conn: AsyncConnection) -> list[Any]:
        pending = outbox_table.c.sent_at.is_(None)
        columns = (
            outbox_table.c.id,
            outbox_table.c.event_key,
            outbox_table.c.key_seq,
            outbox_table.c.subject,
            outbox_table.c.headers,
            outbox_table.c.payload,
        )
        if conn.dialect.name == "postgresql":
            first_pending = await self._claim_keys(conn)
            if not first_pending:
                return []
            keys = list(first_pending)
            query = (
                select(*columns)
                .where(pending, outbox_table.c.event_key.in_(keys))
                .order_by(outbox_table.c.created_at, outbox_table.c.key_seq)
                .limit(self._batch_size)
                .with_for_update(skip_locked=True)
            )
            rows = list((await conn.execute(query)).all())
        else:
            query = (
                select(*columns)
                .where(pending)
                .order_by(outbox_table.c.created_at, outbox_table.c.key_seq)
                .limit(self._batch_size)
            )
            rows = list((await conn.execute(query)).all())
            if not rows:
                return []
            first_pending = {
                k: first for k, (first, _) in (await _pending_of(conn, {r.event_key for r in rows})).items()
            }
        by_key: dict[str, list[Any]] = defaultdict(list)
        for row in sorted(rows, key=lambda r: (r.event_key, r.key_seq)):
            by_key[row.event_key].append(row)
        claimed: list[Any] = []
        for key, key_rows in by_key.items():
            expected = first_pending.get(key)
            # Publish a key only from its earliest pending row on, without gaps: a gap is a row
            # committed after the first query, or one whose transaction is still open.
            for row in key_rows:
                if row.key_seq != expected:
                    break
                claimed.append(row)
                expected = row.key_seq + 1
        return claimed

    async def _claim_keys(self, conn: AsyncConnection) -> dict[str, int]:
        """Take keys, oldest first, until they hold about a batch of rows; return each one's earliest pending key_seq.

        Relays split the table by key: a transaction-scoped advisory lock per key, tried without
        waiting, so a relay passes over keys another one is publishing instead of queueing behind
        their earliest rows. What a key holds is read again once it is locked: the relay that held
        it a moment ago may have sent its rows since.
        """
        pending = outbox_table.c.sent_at.is_(None)
        candidates = (
            await conn.execute(
                select(outbox_table.c.event_key, func.count())
                .where(pending)
                .group_by(outbox_table.c.event_key)
                .order_by(func.min(outbox_table.c.created_at))
                .limit(4 * self._batch_size)
            )
        ).all()
        taken: dict[str, int] = {}
        wanted, start = self._batch_size, 0
        while wanted > 0 and start < len(candidates):
            chunk, rows = [], 0
            while start < len(candidates) and rows < wanted:
                chunk.append(candidates[start])
                rows += candidates[start][1]
                start += 1
            locked = set(
                (
                    await conn.execute(
                        text(
                            "SELECT k FROM unnest(CAST(:keys AS text[])) AS k "
                            "WHERE pg_try_advisory_xact_lock(hashtextextended(k, 0))"
                        ),
                        {"keys": [key for key, _ in chunk]},
                    )
                ).scalars()
            )
            if not locked:
                continue
            for key, (first, count) in (await _pending_of(conn, locked)).items():
                taken[key] = first
                wanted -= count
        return taken

    async def _publish(self, transport: Transport, rows: Sequence[Any]) -> list[str]:
        """Publish rows, each key's in order; return the ids of those JetStream stored (or had already)."""
        messages = [(row.subject, bytes(row.payload), json.loads(row.headers)) for row in rows]
        batched, one_by_one = await by_batch_target(transport, [row.subject for row in rows])
        acked: list[str] = []
        loop = asyncio.get_running_loop()
        for target, positions in batched:
            if len(positions) < 2:  # a key's rows go one round trip after another: a batch beats that from two
                one_by_one.extend(positions)
                continue
            run = FastBatchRun(
                target,
                [messages[p] for p in positions],
                keys=[rows[p].event_key for p in positions],
                flow=FAST_PATH_FLOW,
                attempt_timeout=ATTEMPT_TIMEOUT,
                backoff=RETRY_BACKOFF,
                give_up_at=loop.time() + self._publish_deadline,
                deadline=self._publish_deadline,
                on_retry=lambda _: None,
            )
            left = [positions[i] for i in await run.run()]  # the stream stopped taking batches
            failed = []
            for position, outcome in zip(positions, run.outcomes, strict=True):
                if isinstance(outcome, PublishAck):
                    acked.append(rows[position].id)
                elif outcome is not None:
                    failed.append((rows[position].id, outcome))
            if failed:
                logger.warning(
                    "%d outbox rows not published (first: %s, %s); they stay pending", len(failed), *failed[0]
                )
            one_by_one.extend(left)
        one_by_one.sort()
        acked += await self._publish_one_by_one(transport, rows, messages, one_by_one)
        return acked

    async def _publish_one_by_one(
        self, transport: Transport, rows: Sequence[Any], messages: list[BatchMessage], positions: list[int]
    ) -> list[str]:
        """The rows at ``positions``: keys in parallel, each key's rows one after another."""
        by_key: dict[str, list[tuple[Any, BatchMessage]]] = defaultdict(list)
        for position in positions:
            by_key[rows[position].event_key].append((rows[position], messages[position]))
        room = asyncio.Semaphore(self._parallel_keys)
        acked: list[str] = []

        async def publish_key(key_rows: list[tuple[Any, BatchMessage]]) -> None:
            async with room:
                for row, (subject, payload, headers) in key_rows:
                    try:
                        await send_with_retries(transport, subject, payload, headers, deadline=self._publish_deadline)
                    except (PublishError, PermissionDenied) as exc:
                        # Later rows of this key wait: publishing them now would break the key's order.
                        logger.warning("outbox row %s not published (%s); it stays pending", row.id, exc)
                        return
                    acked.append(row.id)

        await asyncio.gather(*(publish_key(key_rows) for key_rows in by_key.values()))
        return acked

    async def backlog(self) -> tuple[int, float | None]:
        """Committed rows not yet published, and the age in seconds of the oldest (None when there is none)."""
        pending = outbox_table.c.sent_at.is_(None)
        async with self._engine.connect() as conn:
            count, oldest = (
                await conn.execute(select(func.count(), func.min(outbox_table.c.created_at)).where(pending))
            ).one()
        if oldest is None:
            return int(count), None
        if oldest.tzinfo is None:  # SQLite gives back what it stored, without the zone: written as UTC
            oldest = oldest.replace(tzinfo=UTC)
        return int(count), max(0.0, (datetime.now(UTC) - oldest).total_seconds())

    async def prune(self) -> int:
        """Delete rows sent longer than ``retention`` ago, and keys with no rows left."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self._retention)
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(outbox_table).where(outbox_table.c.sent_at < cutoff))
            await conn.execute(
                delete(outbox_keys_table).where(
                    ~select(outbox_table.c.id).where(outbox_table.c.event_key == outbox_keys_table.c.event_key).exists()
                )
            )
        return int(result.rowcount or 0)
