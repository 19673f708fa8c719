"""Sagas: a process manager's state per key, moved by events in one database transaction per step.

Each step runs in one transaction that holds the inbox record of the event that caused it, the saga's
state (its row locked for the step), the outbox rows of what it sends and the timers it arms or
cancels. A redelivered event finds its inbox record and changes nothing; a step that raises leaves
nothing behind and is retried; a crash between the commit and the ack is a redelivery.

Timers are JetStream message schedules (nats-server 2.12 or later, ``timers="schedules"``): arming one
writes a schedule message to the outbox, on a subject of its own (``<prefix>.schedule.<key>.<timer>``);
cancelling writes a roll-up of that subject, which removes the schedule. A schedule that comes due
publishes the timer to ``<prefix>.fired.<key>.<timer>``, where the saga handles it as any event. With
``timers="table"`` (servers before 2.12) the saga's database keeps the timers and the
saga polls them. Either way a timer can fire late or after it was cancelled (a schedule that came due
while a cancel was on its way, one that comes due after an outage): each armed timer has an id in the
saga's state, and a firing whose id is not armed any more is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from google.protobuf.message import Message
from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .._errors import ConfigError, EventwireError
from .._ids import uuid7
from .._retry import RetryPolicy
from .._streams import Stream, check_name, key_token
from .._wall_clock import wall_time
from ..inbox import claim_event
from ..outbox import Outbox
from ..transport import Transport
from ._tables import saga_table, saga_timers_table
from .contracts.eventwire.saga.v1.saga_pb2 import SagaTimerFired

if TYPE_CHECKING:
    from .._app import App
    from .._delivery import Delivery

logger = logging.getLogger("eventwire.saga")

S = TypeVar("S")
TimerMode = Literal["schedules", "table"]
StepFunc = Callable[[Any, "SagaStep[Any]"], Awaitable[None]]
TimeoutFunc = Callable[["SagaStep[Any]"], Awaitable[None]]

# A cancelled schedule leaves a marker on its subject; the server removes it after this long.
_CANCEL_MARKER_TTL = "60s"


class SagaNotStarted(EventwireError):
    """An event reached a saga whose key has no state yet (its start may still be on its way): retried."""


class SagaStep(Generic[S]):
    """One step of one saga instance: its key and state, and what the step sends and arms.

    Everything the step does (``send``, ``schedule``, ``cancel``, ``finish``, writes through
    ``session``) commits with the step, or not at all.
    """

    def __init__(
        self,
        saga: Saga[S],
        session: AsyncSession,
        key: str,
        state: S,
        timers: dict[str, dict[str, Any]],
        *,
        is_new: bool,
        finished: bool,
        correlation_id: str,
        causation_id: str,
    ) -> None:
        self._saga = saga
        self.session = session
        self.key = key
        self.state = state
        self.is_new = is_new
        self._finished = finished
        self._timers = timers
        self._armed: dict[str, dict[str, Any]] = {}
        self._cancelled: set[str] = set()
        self._correlation_id = correlation_id
        self._causation_id = causation_id

    @property
    def finished(self) -> bool:
        """The saga has finished: a later event can still arrive (and may need compensating)."""
        return self._finished

    def armed(self, timer: str) -> bool:
        return timer in self._timers

    async def send(self, event: Message, *, subject: str, key: str | None = None, msg_id: str | None = None) -> str:
        """Add ``event`` to the outbox in this step's transaction (key: the saga's key); return its msg id."""
        return await self._saga.outbox.add(
            self.session,
            event,
            subject=subject,
            key=self.key if key is None else key,
            msg_id=msg_id,
            correlation_id=self._correlation_id,
            causation_id=self._causation_id,
        )

    def schedule(self, timer: str, after: float) -> None:
        """Arm ``timer`` to fire ``after`` seconds from now (again: replacing the one armed)."""
        if timer not in self._saga.timeouts:
            raise ConfigError(f"saga {self._saga.name!r} has no on_timeout({timer!r}) handler")
        if after < 0:
            raise ConfigError("SagaStep.schedule: after must not be negative")
        armed = {"id": uuid7(), "due_at_ms": int((self._saga.clock() + after) * 1000)}
        self._timers[timer] = armed
        self._armed[timer] = armed
        self._cancelled.discard(timer)

    def cancel(self, timer: str) -> None:
        """Disarm ``timer``; a firing already under way is then ignored."""
        if self._timers.pop(timer, None) is not None:
            self._armed.pop(timer, None)
            self._cancelled.add(timer)

    def finish(self) -> None:
        """The saga is done: its timers are cancelled, and its state is pruned after the retention."""
        for timer in list(self._timers):
            self.cancel(timer)
        self._finished = True


@dataclasses.dataclass(frozen=True)
class _Handler:
    func: StepFunc
    starts: bool
    key: Callable[[Any], str] | None


class Saga(Generic[S]):
    """A process manager on ``app``: steps by event type and timer, its state (a dataclass) per key in SQL.

    ``state`` is a dataclass whose fields all have defaults and hold JSON values; a new saga starts from
    ``state()``. ``sessions`` opens the saga's database sessions (the tables: :func:`create_tables`);
    ``outbox`` is where steps send events, published by an ``OutboxRelay`` the App runs.
    ``timers`` chooses JetStream message schedules (nats-server 2.12+) or the database's timer table
    (polled every ``poll_interval`` seconds). Finished sagas are deleted ``retention`` seconds later.
    ``ack_wait`` is its handlers' (how soon a crashed instance's steps are redelivered).
    """

    def __init__(
        self,
        app: App,
        name: str,
        state: type[S],
        *,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        timers: TimerMode = "schedules",
        retention: float = 7 * 24 * 3600.0,
        poll_interval: float = 1.0,
        ack_wait: float = 30.0,
        clock: Callable[[], float] = wall_time,
    ) -> None:
        check_name("saga", name)
        if not dataclasses.is_dataclass(state) or not isinstance(state, type):
            raise ConfigError(f"saga {name!r}: state must be a dataclass")
        try:
            state()
        except TypeError as exc:
            raise ConfigError(f"saga {name!r}: every field of the state {state.__name__} needs a default") from exc
        if timers not in ("schedules", "table"):
            raise ConfigError(f"saga {name!r}: timers must be 'schedules' or 'table'")
        if retention <= 0 or poll_interval <= 0:
            raise ConfigError(f"saga {name!r}: retention and poll_interval must be positive")
        self.app = app
        self.name = name
        self.state_type = state
        self.sessions = sessions
        self.outbox = outbox
        self.timer_mode = timers
        self.retention = retention
        self.poll_interval = poll_interval
        self.clock = clock
        self.ack_wait = ack_wait
        self.timeouts: dict[str, TimeoutFunc] = {}
        self.ignored_timers = 0
        self.handler_name = f"saga-{name}"
        self._prefix = f"sagas.{app.name}.{name}"
        self.timer_stream: Stream | None = None
        if timers == "schedules":
            self.timer_stream = Stream(
                f"SAGA_{app.name}_{name}".upper().replace("-", "_"),
                (f"{self._prefix}.>",),
                allow_msg_schedules=True,
                description=f"Timers of saga {name} of {app.name}",
            )
            app.handler(
                SagaTimerFired,
                stream=self.timer_stream,
                subject=f"{self._prefix}.fired.>",
                name=f"{self.handler_name}-timers",
                ordered_by="key",
                concurrency=8,
                ack_wait=ack_wait,
            )(self._on_fired)
        app._add_relay(self)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # -- declaring steps -----------------------------------------------------------------------

    def on(
        self,
        *event_types: type[Message],
        stream: Stream,
        subject: str | None = None,
        starts: bool = False,
        key: Callable[[Any], str] | None = None,
        durable: str | None = None,
        concurrency: int = 8,
        retry: RetryPolicy = RetryPolicy(),
    ) -> Callable[[StepFunc], StepFunc]:
        """Declare a step for ``event_types``: ``async def f(event, step)``.

        The saga's key is the event's key (its ``ce-subject``) unless ``key`` computes it from the event.
        A step with ``starts=True`` may begin a saga; an event of another step for a key with no saga yet
        is retried (its start may arrive later) and dead-lettered when its deliveries run out.
        """

        def register(func: StepFunc) -> StepFunc:
            handler = _Handler(func, starts, key)
            name = f"{self.handler_name}-{func.__name__}"

            async def step(event: Message, delivery: Delivery) -> None:
                await self._run_event(name, handler, event, delivery)

            self.app.handler(
                *event_types,
                stream=stream,
                subject=subject,
                name=name,
                durable=durable,
                concurrency=concurrency,
                retry=retry,
                ordered_by="key",
                ack_wait=self.ack_wait,
            )(step)
            return func

        return register

    def on_timeout(self, timer: str) -> Callable[[TimeoutFunc], TimeoutFunc]:
        """Declare what happens when ``timer`` fires while armed: ``async def f(step)``."""
        check_name("timer", timer)

        def register(func: TimeoutFunc) -> TimeoutFunc:
            if timer in self.timeouts:
                raise ConfigError(f"saga {self.name!r} already has an on_timeout({timer!r}) handler")
            self.timeouts[timer] = func
            return func

        return register

    # -- running steps -------------------------------------------------------------------------

    async def _run_event(self, handler_name: str, handler: _Handler, event: Message, delivery: Delivery) -> None:
        envelope = delivery.envelope
        key = handler.key(event) if handler.key is not None else envelope.subject
        if not key:
            raise ConfigError(f"saga {self.name!r}: event {envelope.id} has no key (ce-subject) and no key= was given")
        correlation = envelope.correlation_id or envelope.id
        async with self._transaction(delivery) as session:
            if session is None:
                return
            loaded = await self._load(session, key)
            if loaded is None and not handler.starts:
                raise SagaNotStarted(f"saga {self.name!r} has no state for key {key!r} yet")
            step = self._step(session, key, loaded, correlation, envelope.id)
            await handler.func(event, step)
            await self._save(session, step, loaded)

    async def _on_fired(self, fired: SagaTimerFired, delivery: Delivery) -> None:
        async with self._transaction(delivery) as session:
            if session is not None:
                await self._fire(session, fired.key, fired.timer, fired.timer_id, delivery.envelope.id)

    async def _fire(self, session: AsyncSession, key: str, timer: str, timer_id: str, cause: str) -> bool:
        """Run ``timer``'s step if that very timer is still armed; False when it is ignored."""
        loaded = await self._load(session, key)
        armed = loaded["timers"].get(timer) if loaded is not None else None
        func = self.timeouts.get(timer)
        if loaded is None or armed is None or armed["id"] != timer_id or func is None:
            self.ignored_timers += 1
            logger.debug("saga %s %s: timer %s (%s) is not armed: ignored", self.name, key, timer, timer_id)
            return False
        step = self._step(session, key, loaded, loaded["correlation_id"], cause)
        del step._timers[timer]  # it fired: no roll-up needed, and a step may arm it again
        await func(step)
        await self._save(session, step, loaded)
        return True

    @contextlib.asynccontextmanager
    async def _transaction(self, delivery: Delivery) -> AsyncIterator[AsyncSession | None]:
        """The step's transaction, with the delivery's inbox record; None when the event was processed before.

        With the App's Inbox middleware, its transaction (it has recorded the event already)."""
        if delivery.session is not None:
            yield delivery.session
            return
        async with self.sessions() as session, session.begin():
            yield session if await claim_event(session, delivery.handler, delivery.envelope.id) else None

    def _step(
        self, session: AsyncSession, key: str, loaded: dict[str, Any] | None, correlation: str, cause: str
    ) -> SagaStep[S]:
        if loaded is None:
            return SagaStep(
                self, session, key, self.state_type(), {}, is_new=True, finished=False,
                correlation_id=correlation, causation_id=cause,
            )  # fmt: skip
        return SagaStep(
            self,
            session,
            key,
            self._decode(loaded["state"]),
            dict(loaded["timers"]),
            is_new=False,
            finished=loaded["finished_at"] is not None,
            correlation_id=loaded["correlation_id"],
            causation_id=cause,
        )

    def _decode(self, text: str) -> S:
        fields = {f.name for f in dataclasses.fields(self.state_type)}  # type: ignore[arg-type]
        return self.state_type(**{k: v for k, v in json.loads(text).items() if k in fields})

    async def _load(self, session: AsyncSession, key: str) -> dict[str, Any] | None:
        """The saga's row, locked for this step (PostgreSQL; SQLite's one writer holds the database)."""
        query = (
            select(saga_table.c.state, saga_table.c.timers, saga_table.c.correlation_id, saga_table.c.finished_at)
            .where(saga_table.c.saga == self.name, saga_table.c.saga_key == key)
            .with_for_update()
        )
        row = (await session.execute(query)).first()
        if row is None:
            return None
        return {"state": row.state, "timers": json.loads(row.timers), "correlation_id": row.correlation_id,
                "finished_at": row.finished_at}  # fmt: skip

    async def _save(self, session: AsyncSession, step: SagaStep[S], loaded: dict[str, Any] | None) -> None:
        now = self._now()
        finished_at = loaded["finished_at"] if loaded is not None else None
        values = {
            "state": json.dumps(dataclasses.asdict(step.state)),  # type: ignore[call-overload]
            "timers": json.dumps(step._timers),
            "updated_at": now,
            "finished_at": finished_at or (now if step.finished else None),
        }
        if loaded is None:
            await session.execute(
                insert(saga_table).values(
                    saga=self.name, saga_key=step.key, correlation_id=step._correlation_id, version=1, started_at=now,
                    **values,
                )
            )  # fmt: skip
        else:
            await session.execute(
                update(saga_table)
                .where(saga_table.c.saga == self.name, saga_table.c.saga_key == step.key)
                .values(version=saga_table.c.version + 1, **values)
            )
        for timer in step._cancelled:
            await self._disarm(session, step, timer)
        for timer, armed in step._armed.items():
            await self._arm(session, step, timer, armed)

    async def _arm(self, session: AsyncSession, step: SagaStep[S], timer: str, armed: Mapping[str, Any]) -> None:
        due = datetime.fromtimestamp(armed["due_at_ms"] / 1000, UTC)
        if self.timer_mode == "table":
            await self._delete_timer(session, step.key, timer)
            await session.execute(
                insert(saga_timers_table).values(
                    saga=self.name, saga_key=step.key, timer=timer, timer_id=armed["id"], due_at=due
                )
            )
            self._wake.set()
            return
        token = key_token(step.key)
        fired = SagaTimerFired(
            saga=self.name, key=step.key, timer=timer, timer_id=armed["id"], due_at_ms=armed["due_at_ms"]
        )
        await self.outbox.add(
            session,
            fired,
            subject=f"{self._prefix}.schedule.{token}.{timer}",
            key=step.key,
            msg_id=f"saga-timer-{armed['id']}",
            correlation_id=step._correlation_id,
            causation_id=step._causation_id,
            headers={
                "Nats-Schedule": "@at " + due.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "Nats-Schedule-Target": f"{self._prefix}.fired.{token}.{timer}",
                # The schedule replaces whatever its subject held (a cancel marker, an older schedule).
                "Nats-Rollup": "sub",
            },
        )

    async def _disarm(self, session: AsyncSession, step: SagaStep[S], timer: str) -> None:
        if self.timer_mode == "table":
            await self._delete_timer(session, step.key, timer)
            return
        token = key_token(step.key)
        await self.outbox.add(
            session,
            SagaTimerFired(saga=self.name, key=step.key, timer=timer),
            subject=f"{self._prefix}.schedule.{token}.{timer}",
            key=step.key,
            correlation_id=step._correlation_id,
            causation_id=step._causation_id,
            headers={"Nats-Rollup": "sub", "Nats-TTL": _CANCEL_MARKER_TTL},
        )

    async def _delete_timer(self, session: AsyncSession, key: str, timer: str) -> None:
        table = saga_timers_table
        await session.execute(
            delete(table).where(table.c.saga == self.name, table.c.saga_key == key, table.c.timer == timer)
        )

    # -- the timer table and pruning -----------------------------------------------------------

    def start(self, transport: Transport) -> None:
        if self.timer_mode == "schedules" and not transport.message_schedules:
            raise ConfigError(
                f"saga {self.name!r}: this server cannot schedule messages (nats-server 2.12+): "
                "use Saga(timers='table')"
            )
        self._task = asyncio.create_task(self._run(), name=f"eventwire-saga-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        last_prune = 0.0
        failing = False
        while True:
            try:
                fired = await self.fire_due() if self.timer_mode == "table" else 0
                if asyncio.get_running_loop().time() - last_prune > min(3600.0, self.retention / 10):
                    await self.prune()
                    last_prune = asyncio.get_running_loop().time()
                failing = False
            except Exception as exc:  # the database is down: said once, tried again
                if not failing:
                    logger.warning("saga %s: cannot run its timers (%r); trying again", self.name, exc)
                failing, fired = True, 0
            if fired:
                continue
            self._wake.clear()
            try:
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def fire_due(self, limit: int = 100) -> int:
        """Run the steps of the table's timers that are due, each in its own transaction; return how many ran."""
        table = saga_timers_table
        now = self._now()
        async with self.sessions() as session:
            due = (
                await session.execute(
                    select(table.c.saga_key, table.c.timer, table.c.timer_id)
                    .where(table.c.saga == self.name, table.c.due_at <= now)
                    .order_by(table.c.due_at)
                    .limit(limit)
                )
            ).all()
        ran = 0
        for key, timer, timer_id in due:
            async with self.sessions() as session, session.begin():
                # Still there and still this timer? (Another instance, or a step meanwhile, may have taken it.)
                claimed = await session.execute(
                    delete(table).where(
                        and_(table.c.saga == self.name, table.c.saga_key == key, table.c.timer == timer),
                        table.c.timer_id == timer_id,
                    )
                )
                if not getattr(claimed, "rowcount", 0):
                    continue
                ran += await self._fire(session, key, timer, timer_id, f"timer-{timer_id}")
        return ran

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def prune(self) -> int:
        """Delete sagas finished more than ``retention`` ago (and their timers); return how many."""
        cutoff = self._now() - timedelta(seconds=self.retention)
        async with self.sessions() as session, session.begin():
            finished = select(saga_table.c.saga_key).where(
                saga_table.c.saga == self.name, saga_table.c.finished_at < cutoff
            )
            await session.execute(
                delete(saga_timers_table).where(
                    saga_timers_table.c.saga == self.name, saga_timers_table.c.saga_key.in_(finished)
                )
            )
            result = await session.execute(
                delete(saga_table).where(saga_table.c.saga == self.name, saga_table.c.finished_at < cutoff)
            )
        return int(getattr(result, "rowcount", 0) or 0)
