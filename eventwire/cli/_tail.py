"""``eventwire tail``: events on a subject as they arrive, decoded, through a consumer that leaves nothing behind.

An ordered push consumer (nats-py's): ephemeral, in memory, no acks, recreated by the client from the
next sequence after a gap. It has an inactivity threshold, so even a killed ``tail`` leaves no consumer
for long; on a clean exit it is deleted at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
from datetime import UTC
from typing import Annotated, Any

import nats.errors
import nats.js.errors
import typer
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from .._event_json import EventDecoder
from ..transport import JetStreamTransport
from ._connect import ConnectionFlags, fail, with_connection
from ._dlq import parse_time
from ._targets import AppDir, import_modules

_INACTIVE = 5.0  # seconds after which the server removes a consumer nobody listens to


async def start_for_last(js: JetStreamContext, stream: str, subject: str, count: int) -> int:
    """The stream sequence from which ``subject`` has exactly its last ``count`` messages (or all of them).

    JetStream has no "last N of a filter" policy; a consumer's ``num_pending`` counts the matching
    messages from its start, so the start is found by bisection, one short-lived consumer per step.
    """
    info = await js.stream_info(stream)
    low, high = max(1, info.state.first_seq), info.state.last_seq
    if high < low:
        return low

    async def matching_from(sequence: int) -> int:
        config = api.ConsumerConfig(
            filter_subject=subject,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=sequence,
            ack_policy=api.AckPolicy.NONE,
            inactive_threshold=_INACTIVE,
            mem_storage=True,
            num_replicas=1,
        )
        created = await js.add_consumer(stream, config)
        try:
            return created.num_pending or 0
        finally:
            with contextlib.suppress(nats.errors.Error):
                await js.delete_consumer(stream, created.name)

    if await matching_from(low) <= count:
        return low
    while low < high:  # the largest start with at least `count` matching messages from it
        middle = (low + high + 1) // 2
        if await matching_from(middle) >= count:
            low = middle
        else:
            high = middle - 1
    return low


async def line_of(msg: Msg, decoder: EventDecoder) -> dict[str, Any]:
    event = await decoder.read(msg.headers or {}, msg.data)
    meta = msg.metadata
    return {
        "time": meta.timestamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "subject": msg.subject,
        "stream_sequence": meta.sequence.stream,
        "ce_type": event.ce_type,
        "ce_id": event.ce_id,
        "key": event.key,
        "payload": event.payload if event.payload is not None else event.raw.hex(),
        **({"note": event.note} if event.note is not None else {}),
    }


def _text(line: dict[str, Any]) -> str:
    payload = line["payload"]
    shown = json.dumps(payload, ensure_ascii=False, separators=(",", ":")) if "note" not in line else payload
    note = f"  ({line['note']})" if "note" in line else ""
    return (
        f"{line['time']} {line['subject']} #{line['stream_sequence']} {line['ce_type'] or '-'} "
        f"id={line['ce_id'] or '-'} key={line['key'] or '-'} {shown}{note}"
    )


def tail(
    subject: Annotated[str, typer.Argument(help="Subject to follow; wildcards allowed (orders.>).")],
    connection: ConnectionFlags,
    last: Annotated[int | None, typer.Option("--last", min=1, help="Begin with the last N events.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Begin at a time: ISO 8601, or 30m, 2h, 7d ago.")] = None,
    imports: Annotated[
        list[str] | None,
        typer.Option("--import", help="Module(s) defining the event classes; without: the schema registry's."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per event.")] = False,
    app_dir: AppDir = None,
) -> None:
    """Print events on SUBJECT as they arrive (after --last N or --since, if given), until Ctrl-C.

    Nothing is acked and no durable is created: tail never changes what a service receives. Payloads
    decode with the contract the schema registry holds for their ce-dataschema, or the classes of --import.
    """
    if last is not None and since is not None:
        fail("--last and --since: choose one", 2)
    start_time = parse_time(since)
    import_modules(imports or [], app_dir)
    options = dataclasses.replace(connection.require(), name="eventwire-tail")

    async def main() -> None:
        transport = await JetStreamTransport.connect(options)
        js = transport.nc.jetstream()
        try:
            try:
                stream = await js.find_stream_name_by_subject(subject)
            except nats.js.errors.NotFoundError:
                fail(f"no stream captures {subject}")
            config = api.ConsumerConfig(inactive_threshold=_INACTIVE)
            if last is not None:
                config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
                config.opt_start_seq = await start_for_last(js, stream, subject, last)
            elif start_time is not None:
                config.deliver_policy = api.DeliverPolicy.BY_START_TIME
                config.opt_start_time = start_time
            else:
                config.deliver_policy = api.DeliverPolicy.NEW
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)

            decoder = EventDecoder(transport)

            async def show(msg: Msg) -> None:
                line = await line_of(msg, decoder)
                typer.echo(json.dumps(line, ensure_ascii=False) if as_json else _text(line))

            subscription = await js.subscribe(
                subject, stream=stream, cb=show, ordered_consumer=True, config=config, idle_heartbeat=2.0
            )
            try:
                await stop.wait()
            finally:
                await subscription.unsubscribe()
                with contextlib.suppress(nats.errors.Error):
                    # nats-py keeps the name current when it recreates the consumer after a gap.
                    await js.delete_consumer(stream, subscription._consumer)
        finally:
            await transport.close()

    asyncio.run(main())


tail_command = with_connection()(tail)
