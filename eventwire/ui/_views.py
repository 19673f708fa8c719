"""What the console shows, as JSON: the live topology, streams and consumers with their history, a stream's
events decoded through the contracts, and the dead letters."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats.js.errors
from nats.aio.client import Client

from .. import dlq
from .._app import App
from .._errors import ServerError
from .._event_json import EventDecoder
from .._status import Status, read_status, status_json
from .._streams import Stream, subjects_overlap
from .._topology import build_topology
from .._topology_html import Edge, layered_svg

HISTORY_SECONDS = 3600.0
# A stream browse stops after this many reads, matching or not, so a filter that matches nothing answers fast.
BROWSE_SCAN_LIMIT = 2000
_NO_MESSAGE_FOUND = 10037


class Sampler:
    """``eventwire status`` every ``interval`` seconds; each consumer's pending and ack-pending kept an hour."""

    def __init__(self, nc: Client, interval: float) -> None:
        self.nc = nc
        self.interval = interval
        self.status: Status | None = None
        self.error: str | None = None
        self.history: dict[tuple[str, str], deque[tuple[float, int, int]]] = {}

    async def sample(self) -> Status:
        status = await read_status(self.nc)
        now = time.time()
        keep = max(2, int(HISTORY_SECONDS / self.interval) + 1)
        for stream in status.streams:
            for consumer in stream.consumers:
                points = self.history.setdefault((stream.name, consumer.name), deque(maxlen=keep))
                points.append((now, consumer.pending, consumer.ack_pending))
        self.status, self.error = status, None
        return status

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                self.error = f"cannot read the server's streams: {exc!r}"
            await asyncio.sleep(self.interval)

    async def current(self) -> Status:
        return self.status if self.status is not None else await self.sample()


def streams_view(status: Status, sampler: Sampler) -> dict[str, Any]:
    view = status_json(status)
    for stream in view["streams"]:
        for consumer in stream["consumers"]:
            points = sampler.history.get((stream["name"], consumer["name"]), ())
            consumer["history"] = [{"at": at, "pending": p, "ack_pending": a} for at, p, a in points]
    view["sample_interval"] = sampler.interval
    view["error"] = sampler.error
    return view


def _stream_of(subject: str, streams: Sequence[Stream]) -> str | None:
    return next((s.name for s in streams if any(subjects_overlap(subject, p) for p in s.subjects)), None)


@dataclass(frozen=True)
class Read:
    """One durable reading a stream: the service it belongs to (None: no listed App declares it)."""

    stream: str
    durable: str
    service: str | None
    pending: int | None  # None: not on the server (yet)
    ack_pending: int | None

    @property
    def reader(self) -> str:
        return self.service or f"{self.durable} (not listed)"

    @property
    def label(self) -> str:
        if self.pending is None:
            return f"{self.durable}: not on the server"
        return f"{self.durable}: {self.pending} pending, {self.ack_pending} unacked"


def topology_view(apps: Sequence[App], status: Status) -> dict[str, Any]:
    """Services, events and streams as a graph: service -subject-> event -> stream -durable (pending)-> service.

    The edges into services come from the server's consumers too: a durable no listed App declares is drawn
    as a node of its own, so nothing reading a stream is hidden.
    """
    topology = build_topology(apps)
    streams = [s for app in apps for s in app.streams]
    consumers = {(s.name, c.name): c for s in status.streams for c in s.consumers}
    publish: dict[tuple[str, str], list[str]] = {}
    stored: set[tuple[str, str]] = set()
    for flow in topology.events:
        for p in flow.publishers:
            publish.setdefault((p.service, flow.ce_type), []).append(p.subject)
            stream = _stream_of(p.subject, streams)
            if stream is not None:
                stored.add((flow.ce_type, stream))
    declared = {(d.stream, d.name): app.name for app in apps for spec in app.handlers for d in spec.durables}
    reads = []
    for (stream, durable), service in sorted(declared.items()):
        found = consumers.get((stream, durable))
        if found is None:
            reads.append(Read(stream, durable, service, None, None))
        else:
            reads.append(Read(stream, durable, service, found.pending, found.ack_pending))
    known = {s.name for s in streams}
    for (stream, durable), found in sorted(consumers.items()):
        if stream in known and (stream, durable) not in declared:
            reads.append(Read(stream, durable, None, found.pending, found.ack_pending))
    columns = [
        [(service, "service") for service, _ in publish],
        [(flow.ce_type, "unmatched" if flow.warnings else "event") for flow in topology.events],
        [(stream, "stream") for stream in sorted({r.stream for r in reads} | {s for _, s in stored})],
        [(r.reader, "service" if r.service else "unmatched") for r in reads],
    ]
    edges = [Edge(0, service, 1, ce_type, ", ".join(subjects)) for (service, ce_type), subjects in publish.items()]
    edges += [Edge(1, ce_type, 2, stream, "") for ce_type, stream in sorted(stored)]
    edges += [Edge(2, r.stream, 3, r.reader, r.label) for r in reads]
    return {
        "services": list(topology.services),
        "events": [flow.ce_type for flow in topology.events],
        "reads": [{**dataclasses.asdict(r), "on_server": r.pending is not None} for r in reads],
        "warnings": topology.warnings,
        "svg": layered_svg(columns, edges, "Live topology: services, events, streams and durables"),
    }


async def browse(
    nc: Client,
    decoder: EventDecoder,
    stream: str,
    *,
    from_sequence: int | None = None,
    from_time: datetime | None = None,
    subject: str | None = None,
    ce_type: str | None = None,
    limit: int = 25,
) -> dict[str, Any]:
    """Up to ``limit`` events of ``stream`` from a sequence or a time, filtered by subject and type, decoded."""
    request: dict[str, Any] = {"next_by_subj": subject or ">"}
    if from_time is not None:
        request["start_time"] = from_time.astimezone(UTC).isoformat().replace("+00:00", "Z")
    else:
        request["seq"] = max(1, from_sequence or 1)
    events: list[dict[str, Any]] = []
    scanned = 0
    next_sequence = None
    while len(events) < limit and scanned < BROWSE_SCAN_LIMIT:
        stored = await _next_message(nc, stream, request)
        if stored is None:
            break
        scanned += 1
        event = await _event_of(stored, decoder)
        next_sequence = event["sequence"] + 1
        request = {"next_by_subj": subject or ">", "seq": next_sequence}
        if ce_type is None or event["ce_type"] == ce_type:
            events.append(event)
    return {"stream": stream, "events": events, "next_sequence": next_sequence, "scanned": scanned}


async def _next_message(nc: Client, stream: str, request: dict[str, Any]) -> dict[str, Any] | None:
    reply = await nc.request(f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps(request).encode(), timeout=5)
    answer: dict[str, Any] = json.loads(reply.data)
    error = answer.get("error")
    if error and error.get("err_code") == _NO_MESSAGE_FOUND:
        return None
    if error:
        raise ServerError(f"stream {stream}: {error.get('description', error)} (error {error.get('err_code', '?')})")
    message: dict[str, Any] = answer["message"]
    return message


async def _event_of(stored: dict[str, Any], decoder: EventDecoder) -> dict[str, Any]:
    headers = _headers(base64.b64decode(stored.get("hdrs") or ""))
    event = await decoder.read(headers, base64.b64decode(stored.get("data") or ""))
    return {
        "sequence": int(stored["seq"]),
        "subject": stored["subject"],
        "time": stored.get("time"),
        "ce_type": event.ce_type,
        "ce_id": event.ce_id,
        "key": event.key,
        "headers": headers,
        "payload": event.payload,
        "hex": None if event.payload is not None else event.raw.hex(),
        "note": event.note,
    }


def _headers(raw: bytes) -> dict[str, str]:
    """NATS/1.0 header block as a dict (the first value of a repeated name)."""
    headers: dict[str, str] = {}
    for line in raw.decode(errors="replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip() and name.strip() not in headers:
            headers[name.strip()] = value.strip()
    return headers


async def letter_view(letter: dlq.DeadLetter, decoder: EventDecoder) -> dict[str, Any]:
    headers = letter.headers
    payload, note = await decoder.decode(
        letter.ce_type, headers.get("ce-dataschema"), headers.get("ce-datacontenttype"), letter.payload
    )
    return {
        "id": f"{letter.stream}:{letter.sequence}",
        "stream": letter.stream,
        "sequence": letter.sequence,
        "service": letter.service,
        "handler": letter.handler,
        "reason": letter.reason,
        "error_type": letter.error_type,
        "error": letter.error,
        "delivery_count": letter.delivery_count,
        "time": letter.time.isoformat().replace("+00:00", "Z") if letter.time else None,
        "subject": letter.subject,
        "original_stream": letter.original_stream,
        "ce_type": letter.ce_type,
        "ce_id": letter.ce_id,
        "payload": payload,
        "hex": None if payload is not None else letter.payload.hex(),
        "note": note,
    }


async def dead_letters_view(nc: Client, decoder: EventDecoder, service: str | None, limit: int = 200) -> dict[str, Any]:
    js = nc.jetstream()
    streams = await dlq.dead_letter_streams(js)
    letters = []
    async for letter in dlq.read(js, dlq.DeadLetterFilter(service=service)):
        letters.append(await letter_view(letter, decoder))
        if len(letters) >= limit:
            break
    services = sorted(name.removeprefix(dlq.STREAM_PREFIX) for name in streams)
    return {"services": services, "letters": letters, "limit": limit}


async def dead_letter(nc: Client, stream: str, sequence: int) -> dlq.DeadLetter | None:
    if not stream.startswith(dlq.STREAM_PREFIX):
        return None
    try:
        stored = await nc.jetstream().get_msg(stream, sequence)
    except nats.js.errors.NotFoundError:
        return None
    return dlq.DeadLetter.from_stored(stream, sequence, dict(stored.headers or {}), stored.data or b"")
