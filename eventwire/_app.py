"""``App``: one service — its handlers, its publisher, its lifecycle and graceful shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TypeVar

from google.protobuf.message import Message

from ._connect_options import ConnectOptions, resolve_connect_options, split_servers
from ._consumer import Consumer
from ._dead_letters import DeadLetterWriter, dead_letter_stream
from ._delivery import HandlerFunc, HandlerSpec, Middleware, OrderingMode, SettlementListener, UnknownTypePolicy
from ._errors import ConfigError
from ._partitions import PartitionBalancer
from ._publication import Publication
from ._publisher import Publisher
from ._retry import RetryPolicy
from ._streams import Durable, Stream, check_name, check_subject, subject_matches
from ._tracing import tracing_on
from .contracts import PROTOBUF, EventRegistry
from .contracts._breaking import LEVELS, Level
from .middleware import Step, settlement_chain
from .observability import ServiceMetrics
from .observability._metrics import metrics_observer
from .observability._poll import poll_metrics
from .observability._tracing import tracing_observer

if TYPE_CHECKING:
    from .observability._health import HealthServer
from .server import EmbeddedServer
from .transport import JetStreamTransport, Transport

logger = logging.getLogger("eventwire.app")

URL_ENV = "EVENTWIRE_URL"  # the other EVENTWIRE_* connection variables: eventwire._connect_options
F = TypeVar("F", bound=HandlerFunc)


class BackgroundRelay(Protocol):
    """Work an App runs beside its handlers, such as ``eventwire.outbox.OutboxRelay``.

    One that also has ``async def backlog() -> tuple[int, float | None]`` (rows waiting, and the age in
    seconds of the oldest) is polled for the outbox metrics.
    """

    def start(self, transport: Transport) -> None: ...

    async def stop(self) -> None: ...


class App:
    """A service: declares streams and handlers, and runs them until told to stop.

    The server and credentials are the ``connect`` options (with ``url``, given
    to :meth:`start` or the constructor, replacing their servers); without
    them, the ``EVENTWIRE_*`` environment variables or the NATS CLI context
    they name (docs/connecting.md); else an embedded nats-server started for
    this App.
    ``publishes`` declares what the service publishes (see :class:`Publication`);
    each subject must lie within one of ``streams``. ``replicas`` is the replica
    count of the streams eventwire creates for the App itself (its dead letters);
    by default the highest of the App's declared streams, so a cluster's R3
    deployment keeps its dead letters on three nodes too.
    ``register_schemas`` registers the published types' contracts in the schema registry at start
    (``eventwire.registry``; off for a deployment that may not write it), refused, and the App not
    started, when a version breaks readers of the latest one at ``schema_level``.
    """

    def __init__(
        self,
        name: str,
        *,
        streams: Sequence[Stream] = (),
        publishes: Sequence[Publication] = (),
        url: str | None = None,
        connect: ConnectOptions | None = None,
        source: str | None = None,
        registry: EventRegistry | None = None,
        middleware: Sequence[Middleware] = (),
        content_type: str = PROTOBUF,
        publish_deadline: float = 30.0,
        shutdown_timeout: float = 30.0,
        pull_expires: float = 30.0,
        idle_heartbeat: float = 1.0,
        dead_letters: bool | Stream = True,
        replicas: int | None = None,
        relays: Sequence[BackgroundRelay] = (),
        metrics: bool = False,
        metrics_port: int | None = None,
        metrics_host: str = "0.0.0.0",
        metrics_interval: float = 5.0,
        register_schemas: bool = True,
        schema_level: Level = "WIRE_JSON",
    ) -> None:
        check_name("service", name)
        if shutdown_timeout < 0:
            raise ConfigError("App.shutdown_timeout must not be negative")
        self.name = name
        self.url = url
        self.source = source or f"/services/{name}"
        self.registry = registry if registry is not None else EventRegistry()
        self.shutdown_timeout = shutdown_timeout
        self._connect = connect
        self._middleware = tuple(middleware)
        self._content_type = content_type
        self._publish_deadline = publish_deadline
        self._pull_expires = pull_expires
        self._idle_heartbeat = idle_heartbeat
        self._streams: dict[str, Stream] = {}
        for stream in streams:
            self._add_stream(stream)
        self._publications: list[Publication] = []
        for publication in publishes:
            self._add_publication(publication)
        if replicas is not None and not 1 <= replicas <= 5:
            raise ConfigError("App.replicas must be between 1 and 5")
        self._replicas = replicas
        # True: the default dead-letter stream, built once the declared streams (and their replicas) are known.
        self._dead_letters: bool | Stream = dead_letters
        self._relays = tuple(relays)
        if metrics_interval <= 0:
            raise ConfigError("App.metrics_interval must be positive")
        if schema_level not in LEVELS:
            raise ConfigError(f"App.schema_level must be one of {', '.join(LEVELS)}, got {schema_level!r}")
        self._register_schemas = register_schemas
        self._schema_level: Level = schema_level
        self._metrics_on = False
        self._health: HealthServer | None = None
        self._metrics_interval = metrics_interval
        self.metrics: ServiceMetrics | None = None
        self._polling: asyncio.Task[None] | None = None
        self._balancing: list[asyncio.Task[None]] = []
        self._handlers: list[HandlerSpec] = []
        self._consumers: list[Consumer] = []
        self._listeners: list[SettlementListener] = []
        self._transport: Transport | None = None
        self._publisher: Publisher | None = None
        self._server: EmbeddedServer | None = None
        self._stop_requested = asyncio.Event()
        self._signals_seen = 0
        self._started = False
        self._starting: asyncio.Future[None] | None = None
        self._stopping = False
        if metrics or metrics_port is not None:
            self.enable_metrics(metrics_port, host=metrics_host)

    def _add_stream(self, stream: Stream) -> None:
        known = self._streams.get(stream.name)
        if known is not None and known != stream:
            raise ConfigError(f"stream {stream.name!r} is declared twice with different settings")
        self._streams[stream.name] = stream

    def _add_publication(self, publication: Publication) -> None:
        if publication in self._publications:
            raise ConfigError(
                f"App {self.name!r} declares {publication.event_type.DESCRIPTOR.full_name} "
                f"on {publication.subject!r} twice"
            )
        if not any(
            subject_matches(pattern, publication.subject) for s in self._streams.values() for pattern in s.subjects
        ):
            raise ConfigError(
                f"App {self.name!r} publishes on {publication.subject!r}, which no stream of the App covers: "
                "declare a stream whose subjects include it"
            )
        self.registry.register(publication.event_type)
        self._publications.append(publication)

    @property
    def health_port(self) -> int | None:
        """The port of ``/metrics``, ``/healthz`` and ``/readyz`` (known once started when it was 0)."""
        return self._health.port if self._health is not None else None

    @property
    def connect_options(self) -> ConnectOptions | None:
        """The connection options given in code, if any."""
        return self._connect

    @property
    def streams(self) -> tuple[Stream, ...]:
        return tuple(self._streams.values())

    @property
    def publications(self) -> tuple[Publication, ...]:
        """What this service declared it publishes."""
        return tuple(self._publications)

    @property
    def registers_schemas(self) -> bool:
        """Whether the App registers the types it publishes in the schema registry when it starts."""
        return self._register_schemas

    @property
    def content_type(self) -> str:
        """The payload codec this service publishes with."""
        return self._content_type

    @property
    def replicas(self) -> int:
        """The replica count of the streams eventwire creates for this App."""
        if self._replicas is not None:
            return self._replicas
        return max((s.replicas for s in self._streams.values()), default=1)

    @property
    def dead_letter_stream(self) -> Stream | None:
        if self._dead_letters is True:
            return dead_letter_stream(self.name, replicas=self.replicas)
        return self._dead_letters or None

    @property
    def handlers(self) -> tuple[HandlerSpec, ...]:
        return tuple(self._handlers)

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        return tuple(self._consumers)

    @property
    def publisher(self) -> Publisher:
        """Publishes as this service; available once the App has started."""
        if self._publisher is None:
            raise RuntimeError(f"App {self.name!r} has not started")
        return self._publisher

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            raise RuntimeError(f"App {self.name!r} has not started")
        return self._transport

    def handler(
        self,
        *event_types: type[Message],
        stream: Stream,
        subject: str | None = None,
        name: str | None = None,
        durable: str | None = None,
        concurrency: int = 1,
        prefetch: int | None = None,
        ack_wait: float = 30.0,
        max_ack_pending: int = 1000,
        retry: RetryPolicy = RetryPolicy(),
        ordered_by: OrderingMode | None = None,
        max_event_bytes: int | None = None,
        unknown_types: UnknownTypePolicy = "skip",
        confirm_acks: bool = False,
        partition_max_pending: int = 1,
    ) -> Callable[[F], F]:
        """Declare a handler for ``event_types`` on ``subject`` (default: the stream's only subject).

        The handler is ``async def f(event)`` or ``async def f(event, delivery)``.
        It gets a durable pull consumer named ``<service>-<handler>`` unless
        ``durable`` names it. Returning acks the event; raising follows
        ``retry`` (a nak with its backoff, or a dead letter for permanent
        errors and the last delivery). ``ordered_by="key"`` handles events of
        one ``ce-subject`` one after another (different keys in parallel),
        ``"all"`` strictly one after another; failures are then retried in
        place so nothing overtakes them. ``unknown_types="skip"`` acks events
        of registered types this handler does not take; unregistered types
        are always dead-lettered. ``confirm_acks=True`` waits for the server to
        confirm each ack (slower; docs/clusters.md has the figures) and logs and
        counts one that stays unconfirmed, as an ack lost in a failover would;
        the inbox remains the way to make a redelivery harmless.

        On a partitioned stream (``Stream(partitions=N)``) ``ordered_by="key"``
        keeps each key's order across instances: the handler gets a pinned
        durable per partition (``<durable>-p<i>``), each delivering to one
        instance at a time with at most ``partition_max_pending`` events
        unacked (1: strict order, also across a failover; more: faster, but a
        crashed instance's unacked events can be overtaken by later ones of
        their partition). docs/scaling.md.
        """
        if subject is None:
            if len(stream.subjects) != 1:
                raise ConfigError(f"stream {stream.name!r} has several subjects: name the handler's subject")
            subject = stream.subjects[0]
        check_subject(subject)
        for event_type in event_types:
            self.registry.register(event_type)
        self._add_stream(stream)

        if partition_max_pending < 1:
            raise ConfigError("handler: partition_max_pending must be at least 1")
        partitioned = stream.partitions is not None and ordered_by == "key"

        def register(func: F) -> F:
            handler_name = name or func.__name__
            if any(h.name == handler_name for h in self._handlers):
                raise ConfigError(f"App {self.name!r} already has a handler named {handler_name!r}")
            base = Durable(
                name=durable or f"{self.name}-{handler_name}",
                stream=stream.name,
                filter_subject=stream.stored_filter(subject),
                ack_wait=ack_wait,
                # With dead letters eventwire settles the last delivery itself (dead letter, then
                # term); the server must not give up first, or a dead-letter outage would lose it.
                max_deliver=-1 if self._dead_letters else retry.max_deliveries,
                max_ack_pending=partition_max_pending if partitioned else max_ack_pending,
                pinned=partitioned,
            )
            partitions = tuple(
                dataclasses.replace(base, name=f"{base.name}-p{i}", filter_subject=stream.stored_filter(subject, i))
                for i in range(stream.partitions if partitioned and stream.partitions else 0)
            )
            if prefetch is not None:
                fetched = prefetch
            elif partitioned:
                fetched = max(64, 2 * concurrency, 2 * partition_max_pending)
            else:
                fetched = min(max_ack_pending, max(1024, 2 * concurrency))
            spec = HandlerSpec(
                name=handler_name,
                func=func,
                event_types=tuple(event_types),
                durable=base,
                subject=subject,
                partitions=partitions,
                concurrency=concurrency,
                prefetch=fetched,
                retry=retry,
                unknown_types=unknown_types,
                ordered_by=ordered_by,
                max_event_bytes=max_event_bytes,
                confirm_acks=confirm_acks,
            )
            self._handlers.append(spec)
            return func

        return register

    def _add_relay(self, relay: BackgroundRelay) -> None:
        """Background work a part declared on this App brings along (a saga's timers)."""
        self._relays += (relay,)

    def enable_metrics(self, port: int | None = None, *, host: str = "0.0.0.0") -> None:
        """Count this App's metrics (before it starts); with ``port``, serve ``/metrics``, ``/healthz``, ``/readyz``.

        Several Apps of one process share Prometheus' default registry, told apart by the ``service`` label.
        """
        if self._started:
            raise RuntimeError(f"App {self.name!r} is running: enable metrics before it starts")
        self._metrics_on = True
        if port is not None:
            from .observability._health import HealthServer

            self._health = HealthServer([self.readiness], [self.liveness], port=port, host=host)

    def add_listener(self, listener: SettlementListener) -> None:
        """Call ``listener`` with a :class:`Settlement` each time a handler's delivery is settled.

        Listeners run on the hot path: keep them quick and never raise.
        """
        self._listeners.append(listener)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(
        self, url: str | None = None, *, transport: Transport | None = None, connect: ConnectOptions | None = None
    ) -> None:
        """Connect, provision streams and durables, and start consuming."""
        if self._started:
            raise RuntimeError(f"App {self.name!r} is already running")
        self._stop_requested.clear()
        self._stopping = False
        try:
            if self._health is not None:
                await self._health.start()  # not ready until everything below is done
            self._transport = transport or await self._connect_transport(url, connect)
            for stream in self._streams.values():
                await self._transport.ensure_stream(stream)
            if self._register_schemas and self._publications:
                await self._register_published_types(self._transport)
            metrics = self.metrics = ServiceMetrics(self.name) if self._metrics_on else None
            self._publisher = Publisher(
                self._transport,
                source=self.source,
                registry=self.registry,
                content_type=self._content_type,
                streams=self.streams,
                deadline=self._publish_deadline,
                stats=metrics,
            )
            writer = None
            dead_letters = self.dead_letter_stream
            if dead_letters is not None and self._handlers:
                await self._transport.ensure_stream(dead_letters)
                writer = DeadLetterWriter(self._transport, self.name, dead_letters)
                if metrics is not None:
                    metrics.dead_letter_stream = dead_letters.name
            for spec in self._handlers:
                for durable in spec.durables:
                    await self._transport.ensure_durable(durable)
            polled = []
            for spec in self._handlers:
                # Traced when an OpenTelemetry SDK is configured by now; otherwise not even a wrapper is added.
                observers = [tracing_observer(spec)] if tracing_on() else []
                if metrics is not None:
                    handler_metrics = metrics.handler(spec)
                    observers.append(metrics_observer(handler_metrics))
                    polled += [(handler_metrics, durable) for durable in spec.durables]
                chain = settlement_chain(
                    spec,
                    publisher=self._publisher,
                    registry=self.registry,
                    dead_letters=writer,
                    middleware=self._middleware,
                    observers=observers,
                    stopping=lambda: self._stopping,
                    service=self.name,
                )
                await self._start_consumers(spec, chain, metrics)
            for relay in self._relays:
                relay.start(self._transport)
            if metrics is not None:
                self._polling = asyncio.create_task(
                    poll_metrics(
                        metrics,
                        self._transport,
                        polled,
                        backlogs=[b for b in (getattr(r, "backlog", None) for r in self._relays) if b is not None],
                        interval=self._metrics_interval,
                    ),
                    name=f"eventwire-{self.name}-metrics",
                )
        except BaseException:
            await self._close()
            raise
        self._started = True
        logger.info("%s started: %d handler(s) on %d stream(s)", self.name, len(self._handlers), len(self._streams))

    async def _register_published_types(self, transport: Transport) -> None:
        from .registry import SchemaRegistry  # only a publishing App needs the breaking-change rules

        registry = await SchemaRegistry.open(transport, replicas=self.replicas)
        assert registry is not None
        for event_class in dict.fromkeys(p.event_type for p in self._publications):
            version, added = await registry.register(event_class, service=self.name, level=self._schema_level)
            logger.info(
                "%s: %s version %d (%s) %s",
                self.name,
                version.event_type,
                version.version,
                version.schema_id,
                "registered" if added else f"registered by {version.registered_by} at {version.registered_at}",
            )

    async def _start_consumers(self, spec: HandlerSpec, chain: Step, metrics: ServiceMetrics | None) -> None:
        """A handler's consumer; a partitioned handler's, one per partition (each with its own pull and its
        own order) and the balancer that spreads the partitions over the instances."""
        assert self._transport is not None
        consumed = [dataclasses.replace(spec, durable=d, partitions=()) for d in spec.partitions] or [spec]
        started = []
        for one in consumed:
            consumer = Consumer(one, self._transport, chain, service=self.name, listeners=self._listeners)
            await consumer.start()
            started.append(consumer)
        self._consumers += started
        if not spec.partitions:
            return
        if metrics is not None:
            metrics.handlers[spec.name].pins = lambda: {c.spec.durable.name: c.holds_pin for c in started}
        # Twice per pinned TTL: a partition left to one instance by the server is handed on within seconds.
        balancer = PartitionBalancer(spec.name, started, self._transport, interval=spec.durable.ack_wait / 2)
        self._balancing.append(asyncio.create_task(balancer.run(), name=f"eventwire-{spec.name}-balance"))

    async def _connect_transport(self, url: str | None, connect: ConnectOptions | None) -> JetStreamTransport:
        url = url or self.url
        options = connect or self._connect
        if options is None:
            options = resolve_connect_options(url=url)
        elif url is not None:
            options = dataclasses.replace(options, servers=split_servers(url))
        if options is None:
            logger.warning(
                "%s: no server URL configured; starting an embedded nats-server with a temporary store", self.name
            )
            self._server = await EmbeddedServer().start_async()
            logger.warning("%s: embedded nats-server (pid %s) on %s", self.name, self._server.pid, self._server.url)
            options = ConnectOptions.from_url(self._server.url)
        if options.name is None:
            options = dataclasses.replace(options, name=self.name)
        return await JetStreamTransport.connect(
            options, pull_expires=self._pull_expires, idle_heartbeat=self._idle_heartbeat
        )

    def readiness(self) -> list[str]:
        """Why this App is not ready to serve (``/readyz``): still starting, or one of :meth:`problems`."""
        return self.problems() if self._started else [f"{self.name} is not started"]

    def liveness(self) -> list[str]:
        """Why this App needs a restart (``/healthz``): handlers stopped for good; empty when it does not."""
        return [f"handler {c.spec.name}: {c.failure}" for c in self._consumers if c.failure is not None]

    def problems(self) -> list[str]:
        """Why this App is not healthy: handlers stopped for good, a lost connection; empty when healthy."""
        found = self.liveness()
        if self._started and self._transport is not None and not self._transport.connected:
            found.append("not connected to NATS")
        return found

    async def stop(self) -> None:
        """Graceful shutdown (DESIGN §7). Durables are kept: a restart resumes where this stopped."""
        if not self._started:
            return
        self._started = False
        self._stopping = True
        grace = self.shutdown_timeout
        await self._stop_balancing()
        if self._transport is not None and not self._transport.connected:
            # Nothing can be acked or published until the connection is back: waiting only delays the exit.
            grace = 0.0
            logger.warning("%s stopping while disconnected: in-flight deliveries are left to the server", self.name)
        else:
            logger.info("%s stopping: finishing in-flight handlers (up to %gs)", self.name, grace)
        await asyncio.gather(*(c.stop(grace) for c in self._consumers))
        if self._publisher is not None and not await self._publisher.flush(grace):
            logger.warning("%s: publishes still unacknowledged at shutdown", self.name)
        for relay in self._relays:
            await relay.stop()  # after its current batch
        await self._close()
        logger.info("%s stopped", self.name)

    async def _stop_balancing(self) -> None:
        for task in self._balancing:
            task.cancel()
        await asyncio.gather(*self._balancing, return_exceptions=True)
        self._balancing.clear()

    async def _close(self) -> None:
        await self._stop_balancing()
        self._consumers.clear()
        if self._polling is not None:
            self._polling.cancel()
            await asyncio.gather(self._polling, return_exceptions=True)
            self._polling = None
        if self._health is not None:
            await self._health.stop()
        if self._transport is not None:
            await self._transport.close()
        if self._server is not None:
            await asyncio.to_thread(self._server.stop)
            self._server = None

    def request_stop(self) -> None:
        """Ask :meth:`run` to shut down gracefully."""
        self._stop_requested.set()

    async def run(
        self, url: str | None = None, *, connect: ConnectOptions | None = None, handle_signals: bool = True
    ) -> None:
        """Start, serve until SIGTERM/SIGINT (or :meth:`request_stop`), then shut down gracefully.

        A signal while the first connect is under way ends it at once; a second signal exits the process.
        """
        loop = asyncio.get_running_loop()
        handled = (signal.SIGTERM, signal.SIGINT)
        if handle_signals:
            for sig in handled:
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            self._starting = asyncio.ensure_future(self.start(url, connect=connect))
            try:
                await self._starting
            except asyncio.CancelledError:
                if self._stop_requested.is_set() and not self._cancelling():
                    logger.info("%s: stopped before it was running", self.name)
                    return
                raise
            finally:
                self._starting = None
            await self._stop_requested.wait()
            await self.stop()
        finally:
            if handle_signals:
                for sig in handled:
                    loop.remove_signal_handler(sig)

    @staticmethod
    def _cancelling() -> bool:
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals_seen += 1
        if self._signals_seen == 1:
            self.request_stop()
            if self._starting is not None and not self._starting.done():
                logger.info("%s: %s received while starting; stopping", self.name, sig.name)
                self._starting.cancel()
                return
            logger.info("%s: %s received; shutting down gracefully (again to exit at once)", self.name, sig.name)
            return
        logger.warning("%s: second %s; exiting now", self.name, sig.name)
        if self._server is not None:
            self._server.kill()
        os._exit(128 + sig.value)

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
