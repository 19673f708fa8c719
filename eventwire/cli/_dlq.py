"""``eventwire dlq``: list, show, replay and purge dead letters."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

import typer
from nats.js.client import JetStreamContext
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from .. import dlq
from .._event_json import EventDecoder
from ..transport import JetStreamTransport
from ._connect import ConnectionFlags, run_connected, with_connection
from ._output import print_json, table_console
from ._targets import AppDir, import_modules

app = typer.Typer(help="Dead letters: list, show, replay, purge.", no_args_is_help=True)
console = Console()
T = TypeVar("T")

Service = Annotated[str | None, typer.Option("--service", help="Only this service's dead letters.")]
Handler = Annotated[str | None, typer.Option("--handler", help="Only this handler's dead letters.")]
EventType = Annotated[str | None, typer.Option("--type", help="Only this ce-type, e.g. shop.orders.v1.OrderCreated.")]
Since = Annotated[str | None, typer.Option("--since", help="Dead-lettered at or after: ISO 8601, or 30m, 2h, 7d ago.")]
Until = Annotated[str | None, typer.Option("--until", help="Dead-lettered at or before: ISO 8601, or 30m, 2h ago.")]

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    relative = _RELATIVE.match(text.strip())
    if relative:
        return datetime.now(UTC) - timedelta(**{_UNITS[relative.group(2)]: float(relative.group(1))})
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is neither ISO 8601 nor like 30m, 2h, 7d") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_id(text: str) -> tuple[str, int]:
    stream, _, sequence = text.rpartition(":")
    if not stream or not sequence.isdigit():
        raise typer.BadParameter(f"{text!r}: expected STREAM:SEQUENCE as listed, e.g. DLQ-inventory:12")
    return stream, int(sequence)


def _filter(
    service: str | None, handler: str | None, event_type: str | None, since: str | None, until: str | None
) -> dlq.DeadLetterFilter:
    return dlq.DeadLetterFilter(service, handler, event_type, parse_time(since), parse_time(until))


def _run(connection: ConnectionFlags, work: Callable[[JetStreamContext, JetStreamTransport], Awaitable[T]]) -> T:
    return run_connected(connection, "eventwire-dlq", lambda transport: work(transport.nc.jetstream(), transport))


async def _render(letter: dlq.DeadLetter, decoder: EventDecoder) -> str:
    """The payload as JSON when its contract is known (imported or registered), else its bytes in hex."""
    headers = letter.headers
    payload, note = await decoder.decode(
        letter.ce_type, headers.get("ce-dataschema"), headers.get("ce-datacontenttype"), letter.payload
    )
    return (
        json.dumps(payload, indent=2, ensure_ascii=False)
        if payload is not None
        else f"<{note}>\n{letter.payload.hex()}"
    )


@app.command("list")
@with_connection()
def list_(
    connection: ConnectionFlags,
    service: Service = None,
    handler: Handler = None,
    event_type: EventType = None,
    since: Since = None,
    until: Until = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array instead of a table.")] = False,
) -> None:
    """List dead letters, oldest first."""
    matching = _filter(service, handler, event_type, since, until)

    async def work(js: JetStreamContext, _: JetStreamTransport) -> list[dlq.DeadLetter]:
        return [letter async for letter in dlq.read(js, matching)]

    letters = _run(connection, work)
    if as_json:
        print_json([_as_json(letter) for letter in letters])
        return
    table = Table(title=f"{len(letters)} dead letter(s)")
    for column in ("id", "time", "service", "handler", "type", "reason", "deliveries", "error"):
        table.add_column(column)
    for letter in letters:
        table.add_row(
            f"{letter.stream}:{letter.sequence}",
            letter.time.strftime("%Y-%m-%d %H:%M:%S") if letter.time else "-",
            letter.service,
            letter.handler,
            letter.ce_type or "-",
            letter.reason,
            str(letter.delivery_count),
            letter.error or "",
        )
    table_console().print(table)


def _as_json(letter: dlq.DeadLetter) -> dict[str, object]:
    return {
        "id": f"{letter.stream}:{letter.sequence}",
        "time": letter.time.isoformat().replace("+00:00", "Z") if letter.time else None,
        "service": letter.service,
        "handler": letter.handler,
        "subject": letter.subject,
        "original_stream": letter.original_stream,
        "original_sequence": letter.original_sequence,
        "type": letter.ce_type,
        "ce_id": letter.ce_id,
        "reason": letter.reason,
        "deliveries": letter.delivery_count,
        "error_type": letter.error_type,
        "error": letter.error,
    }


@app.command()
@with_connection()
def show(
    letter_id: Annotated[str, typer.Argument(metavar="ID", help="STREAM:SEQUENCE, as `dlq list` prints it.")],
    connection: ConnectionFlags,
    imports: Annotated[
        list[str] | None,
        typer.Option("--import", help="Module(s) defining the event classes; without: the schema registry's."),
    ] = None,
    app_dir: AppDir = None,
) -> None:
    """Show one dead letter: where it failed, why, its headers and its payload."""
    stream, sequence = parse_id(letter_id)
    import_modules(imports or [], app_dir)

    async def work(js: JetStreamContext, transport: JetStreamTransport) -> tuple[dlq.DeadLetter, str] | None:
        async for letter in dlq.read(js, dlq.DeadLetterFilter(sequences=frozenset({sequence}))):
            if letter.stream == stream:
                return letter, await _render(letter, EventDecoder(transport))
        return None

    found = _run(connection, work)
    if found is None:
        console.print(f"[red]no dead letter {letter_id}[/red]")
        raise typer.Exit(1)
    letter, rendered = found
    console.print(f"[bold]{letter.stream}:{letter.sequence}[/bold] {letter.reason}")
    console.print(
        f"from {letter.original_stream}:{letter.original_sequence} on {letter.subject}, "
        f"handler {letter.service}/{letter.handler}, after {letter.delivery_count} deliveries"
    )
    if letter.error:
        console.print(f"error: {letter.error_type or ''} {letter.error}")
    for name, value in sorted(letter.original_headers().items()):
        console.print(f"  {name}: {value}", markup=False)
    console.print(rendered, markup=False)
    if letter.traceback:
        console.print(letter.traceback, markup=False)


@app.command()
@with_connection()
def replay(
    connection: ConnectionFlags,
    service: Service = None,
    handler: Handler = None,
    event_type: EventType = None,
    since: Since = None,
    until: Until = None,
    ids: Annotated[list[str] | None, typer.Option("--id", help="Only these STREAM:SEQUENCE (repeatable).")] = None,
    keep: Annotated[bool, typer.Option(help="Keep the dead letters after replaying them.")] = False,
) -> None:
    """Publish dead letters again to their original subjects (same ce-id, new dedup id)."""
    chosen = [parse_id(i) for i in ids or []]
    matching = _filter(service, handler, event_type, since, until)
    if chosen:
        matching = dataclasses.replace(matching, sequences=frozenset(seq for _, seq in chosen))

    async def work(js: JetStreamContext, transport: JetStreamTransport) -> int:
        letters = [
            letter
            async for letter in dlq.read(js, matching)
            if not chosen or (letter.stream, letter.sequence) in chosen
        ]
        targets: dict[tuple[str, str], list[dlq.DeadLetter]] = {}
        for letter in letters:
            targets.setdefault((letter.original_stream, letter.subject), []).append(letter)
        for (stream, subject), group in sorted(targets.items()):
            reached = await dlq.recipients(js, stream, subject)
            handlers = ", ".join(sorted({f"{letter.service}/{letter.handler}" for letter in group}))
            console.print(
                f"{len(group)} event(s) to {subject} (dead-lettered by {handlers}) reach every durable on it: "
                + (", ".join(reached) or "none"),
                markup=False,
            )
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("replaying", total=len(letters))
            for letter in letters:
                await dlq.replay(js, transport, letter, keep=keep)
                progress.advance(task)
        return len(letters)

    count = _run(connection, work)
    console.print(f"replayed {count} dead letter(s)")


@app.command()
@with_connection()
def purge(
    connection: ConnectionFlags,
    service: Service = None,
    handler: Handler = None,
    event_type: EventType = None,
    since: Since = None,
    until: Until = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete dead letters for good."""
    matching = _filter(service, handler, event_type, since, until)
    if not yes:
        typer.confirm("Delete the matching dead letters for good?", abort=True)

    async def work(js: JetStreamContext, _: JetStreamTransport) -> int:
        return await dlq.purge(js, matching)

    console.print(f"purged {_run(connection, work)} dead letter(s)")
