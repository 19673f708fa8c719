"""What ``eventwire status`` reports: every stream and consumer as the server sees them, with a health verdict.

The figures come from the JetStream API's own JSON (``$JS.API.STREAM.LIST``, ``$JS.API.CONSUMER.LIST``),
so fields newer than the client library (paused consumers, priority groups) are there too. The verdict
per consumer follows ``nats server check consumer``: each figure has a warning and a critical threshold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from nats.aio.client import Client

from ._dead_letters import service_of_dead_letters
from ._errors import ConfigError, ServerError

Level = Literal["ok", "warning", "critical"]
LEVELS: tuple[Level, ...] = ("ok", "warning", "critical")


@dataclass(frozen=True)
class Threshold:
    warning: float
    critical: float

    @staticmethod
    def parse(name: str, text: str) -> Threshold:
        """``WARN:CRIT``, e.g. ``1000:10000``."""
        warning, sep, critical = text.partition(":")
        try:
            parsed = Threshold(float(warning), float(critical if sep else warning))
        except ValueError:
            raise ConfigError(f"--{name} {text!r}: expected WARNING:CRITICAL, e.g. 1000:10000") from None
        if parsed.warning > parsed.critical or parsed.warning < 0:
            raise ConfigError(f"--{name} {text!r}: the warning threshold must be 0 or more and at most the critical")
        return parsed

    def level(self, value: float) -> Level:
        if value >= self.critical:
            return "critical"
        return "warning" if value >= self.warning else "ok"


@dataclass(frozen=True)
class Thresholds:
    """When a consumer's figure is a warning or critical (``nats server check consumer``'s checks)."""

    pending: Threshold = Threshold(1_000, 10_000)  # messages not delivered yet
    ack_pending: Threshold = Threshold(1_000, 10_000)  # delivered, not acked
    redelivered: Threshold = Threshold(10, 100)  # being redelivered now
    last_delivery: Threshold = Threshold(60, 300)  # seconds since a delivery, while messages wait
    last_ack: Threshold = Threshold(60, 300)  # seconds since an ack, while acks are outstanding


@dataclass(frozen=True)
class ConsumerStatus:
    stream: str
    name: str
    filter_subjects: tuple[str, ...]
    pending: int
    ack_pending: int
    redelivered: int
    waiting_pulls: int
    delivered_stream_seq: int
    ack_floor_stream_seq: int
    last_delivery_seconds: float | None
    last_ack_seconds: float | None
    paused_until: datetime | None
    pinned: tuple[str, ...]
    leader: str | None
    level: Level
    problems: tuple[str, ...]


@dataclass(frozen=True)
class StreamStatus:
    name: str
    subjects: tuple[str, ...]
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    replicas: int
    leader: str | None
    level: Level
    problems: tuple[str, ...]
    consumers: tuple[ConsumerStatus, ...] = ()

    @property
    def dead_letters_of(self) -> str | None:
        """The service whose dead letters this stream holds, if it is a dead-letter stream."""
        return service_of_dead_letters(self.name)


@dataclass(frozen=True)
class Status:
    streams: tuple[StreamStatus, ...]
    outbox: tuple[int, float | None] | None = None
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def level(self) -> Level:
        levels = [s.level for s in self.streams] + [c.level for s in self.streams for c in s.consumers]
        return max(levels, key=LEVELS.index, default="ok")

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 a warning, 2 something critical: for scripts and monitors."""
        return LEVELS.index(self.level)


async def js_api(nc: Client, subject: str, request: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One JetStream API request, its JSON answer; an error answer is a ServerError."""
    reply = await nc.request(subject, json.dumps(request or {}).encode(), timeout=5)
    answer: dict[str, Any] = json.loads(reply.data)
    error = answer.get("error")
    if error:
        raise ServerError(f"{error.get('description', error)} (error {error.get('err_code', '?')})")
    return answer


@dataclass(frozen=True)
class Listing:
    items: list[dict[str, Any]]
    unanswered: list[str]  # in the server's count, but offline or silent (a cluster's leader not answering)


async def list_all(nc: Client, subject: str, key: str) -> Listing:
    """Every page of a ``...LIST`` request. The server counts what did not answer in ``total`` but leaves
    it out of the page (naming it in ``missing`` or ``offline``): the next page starts after the page's
    ``limit``, not after what came back."""
    items: list[dict[str, Any]] = []
    unanswered: list[str] = []
    offset = 0
    while True:
        page = await js_api(nc, subject, {"offset": offset})
        items.extend(page.get(key) or [])
        unanswered.extend(page.get("missing") or [])
        unanswered.extend(page.get("offline") or {})
        limit = int(page.get("limit") or 0)
        offset = int(page.get("offset") or 0) + limit
        if limit <= 0 or offset >= int(page.get("total") or 0):
            return Listing(items, unanswered)


async def consumers_of(nc: Client, stream: str) -> list[dict[str, Any]]:
    """The info of every consumer of ``stream``, past the first page."""
    return (await list_all(nc, f"$JS.API.CONSUMER.LIST.{stream}", "consumers")).items


def _time(text: str | None) -> datetime | None:
    if not text or text.startswith("0001-01-01"):  # Go's zero time: never
        return None
    # Go writes nanoseconds; Python's fromisoformat takes at most microseconds.
    head, dot, tail = text.rstrip("Z").partition(".")
    fraction = "".join(ch for ch in tail if ch.isdigit())[:6]
    return datetime.fromisoformat(f"{head}{dot}{fraction}" if dot else head).replace(tzinfo=UTC)


def _age(text: str | None, now: datetime) -> float | None:
    moment = _time(text)
    return None if moment is None else max(0.0, (now - moment).total_seconds())


def _cluster_problems(cluster: Mapping[str, Any] | None, replicas: int) -> tuple[str | None, list[str], Level]:
    cluster = cluster or {}
    leader = cluster.get("leader")
    if replicas > 1 and not leader:
        return None, ["no leader"], "critical"
    behind = [r["name"] for r in cluster.get("replicas") or [] if not r.get("current") or r.get("offline")]
    if behind:
        return leader, [f"replica {name} not current" for name in behind], "warning"
    return leader, [], "ok"


def consumer_status(
    stream: str, info: Mapping[str, Any], thresholds: Thresholds, now: datetime, stream_replicas: int = 1
) -> ConsumerStatus:
    config = info.get("config", {})
    name = info.get("name") or config.get("durable_name") or config.get("name", "?")
    single = config.get("filter_subject")
    filters = tuple(config.get("filter_subjects") or ([single] if single else []))
    delivered, ack_floor = info.get("delivered", {}), info.get("ack_floor", {})
    pending, ack_pending = int(info.get("num_pending", 0)), int(info.get("num_ack_pending", 0))
    redelivered, waiting = int(info.get("num_redelivered", 0)), int(info.get("num_waiting", 0))
    # The server keeps these times in memory: after a restart, a leader change or a reset they are
    # unknown, and the consumer's own age (or the delivery's, for acks) stands in for them.
    last_delivery, last_ack = _age(delivered.get("last_active"), now), _age(ack_floor.get("last_active"), now)
    since_created = _age(info.get("created"), now)
    pinned = tuple(g["pinned_client_id"] for g in info.get("priority_groups") or [] if g.get("pinned_client_id"))
    replicas = int(config.get("num_replicas") or 0) or stream_replicas  # 0: as many as its stream
    leader, problems, level = _cluster_problems(info.get("cluster"), replicas)
    checks: list[tuple[str, float, Threshold]] = [
        (f"{pending} pending", pending, thresholds.pending),
        (f"{ack_pending} ack pending", ack_pending, thresholds.ack_pending),
        (f"{redelivered} redelivered", redelivered, thresholds.redelivered),
    ]
    paused_until = _time(config.get("pause_until")) if info.get("paused") else None
    if pending and paused_until is None:  # a paused durable delivers nothing on purpose
        age = _first_known(last_delivery, since_created)
        checks.append((f"no delivery for {age:.0f}s while messages wait", age, thresholds.last_delivery))
    if ack_pending:
        age = _first_known(last_ack, last_delivery, since_created)
        checks.append((f"no ack for {age:.0f}s while acks are outstanding", age, thresholds.last_ack))
    levels = [level]
    for problem, value, threshold in checks:
        found = threshold.level(value)
        if found != "ok":
            problems.append(problem)
            levels.append(found)
    if pending and not waiting and paused_until is None and not config.get("deliver_subject"):  # a pull consumer
        problems.append("no client is pulling")
        levels.append("warning")
    if paused_until is not None:
        problems.append(f"paused until {paused_until:%Y-%m-%d %H:%M:%S}Z")
        levels.append("warning")
    return ConsumerStatus(
        stream=stream,
        name=name,
        filter_subjects=filters,
        pending=pending,
        ack_pending=ack_pending,
        redelivered=redelivered,
        waiting_pulls=waiting,
        delivered_stream_seq=int(delivered.get("stream_seq", 0)),
        ack_floor_stream_seq=int(ack_floor.get("stream_seq", 0)),
        last_delivery_seconds=last_delivery,
        last_ack_seconds=last_ack,
        paused_until=paused_until,
        pinned=pinned,
        leader=leader,
        level=max(levels, key=LEVELS.index),
        problems=tuple(problems),
    )


def _first_known(*ages: float | None) -> float:
    return next((age for age in ages if age is not None), 0.0)


async def read_status(nc: Client, thresholds: Thresholds | None = None) -> Status:
    """Every stream and its consumers, with their verdicts."""
    thresholds = thresholds or Thresholds()
    now = datetime.now(UTC)
    streams = []
    listing = await list_all(nc, "$JS.API.STREAM.LIST", "streams")
    for name in sorted(listing.unanswered):
        problem = "did not answer: offline, or no leader"
        streams.append(StreamStatus(name, (), 0, 0, 0, 0, 0, None, "critical", (problem,)))
    for info in sorted(listing.items, key=lambda s: s["config"]["name"]):
        config, state = info["config"], info.get("state", {})
        name = config["name"]
        replicas = int(config.get("num_replicas") or 1)
        leader, problems, level = _cluster_problems(info.get("cluster"), replicas)
        consumers = await list_all(nc, f"$JS.API.CONSUMER.LIST.{name}", "consumers")
        if consumers.unanswered:
            problems.append(f"consumers did not answer: {', '.join(sorted(consumers.unanswered))}")
            level = "critical"
        streams.append(
            StreamStatus(
                name=name,
                subjects=tuple(config.get("subjects") or ()),
                messages=int(state.get("messages", 0)),
                bytes=int(state.get("bytes", 0)),
                first_seq=int(state.get("first_seq", 0)),
                last_seq=int(state.get("last_seq", 0)),
                replicas=replicas,
                leader=leader,
                level=level,
                problems=tuple(problems),
                consumers=tuple(
                    consumer_status(name, c, thresholds, now, replicas)
                    for c in sorted(consumers.items, key=lambda c: c["name"])
                ),
            )
        )
    return Status(tuple(streams), taken_at=now)


def status_json(status: Status) -> dict[str, Any]:
    """``status --json``: plain JSON values, times as RFC 3339."""

    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat().replace("+00:00", "Z")
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    def fields_of(item: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        return {k: plain(v) for k, v in vars(item).items() if k not in skip}

    return {
        "taken_at": plain(status.taken_at),
        "level": status.level,
        "streams": [
            {**fields_of(s, ("consumers",)), "consumers": [fields_of(c) for c in s.consumers]} for s in status.streams
        ],
        "dead_letters": {s.dead_letters_of: s.messages for s in status.streams if s.dead_letters_of is not None},
        "outbox": None if status.outbox is None else {"pending_rows": status.outbox[0], "oldest_age": status.outbox[1]},
    }
