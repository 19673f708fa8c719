"""``eventwire status``: streams, consumers, dead letters and the outbox, with a health verdict as the exit code."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from .._connect_options import redact_url
from .._errors import ConfigError
from .._status import Status, Threshold, Thresholds, read_status, status_json
from ..transport import JetStreamTransport
from ._connect import ConnectionFlags, fail, with_connection
from ._db import first_line, missing_tables, open_engine
from ._output import print_json, table_console

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

_STYLE = {"ok": "green", "warning": "yellow", "critical": "bold red"}
_DEFAULTS = Thresholds()


def _threshold_option(name: str, what: str) -> object:
    default = getattr(_DEFAULTS, name.replace("-", "_"))
    return typer.Option(
        f"--{name}",
        help=f"WARNING:CRITICAL {what} (default {default.warning:g}:{default.critical:g}).",
        rich_help_panel="Health thresholds",
        show_default=False,
    )


def _thresholds(given: dict[str, str | None]) -> Thresholds:
    chosen = {name: Threshold.parse(name.replace("_", "-"), text) for name, text in given.items() if text is not None}
    return dataclasses.replace(_DEFAULTS, **chosen)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


def render(status: Status, console: Console) -> None:
    streams = Table(title="streams", title_justify="left")
    for column in ("stream", "subjects", "messages", "bytes", "first", "last", "replicas", "leader", "health"):
        streams.add_column(column, justify="right" if column in ("messages", "bytes", "first", "last") else "left")
    for s in status.streams:
        health = s.level if not s.problems else f"{s.level}: {'; '.join(s.problems)}"
        streams.add_row(
            s.name,
            " ".join(s.subjects),
            f"{s.messages:,}",
            f"{s.bytes:,}",
            str(s.first_seq),
            str(s.last_seq),
            str(s.replicas),
            s.leader or "-",
            f"[{_STYLE[s.level]}]{health}[/]",
        )
    console.print(streams)
    consumers = Table(title="consumers", title_justify="left")
    columns = ("stream", "consumer", "pending", "ack pending", "redelivered", "waiting pulls")
    for column in (*columns, "last delivery", "last ack", "paused", "pinned", "health"):
        consumers.add_column(column, justify="right" if column in columns[2:] else "left")
    for s in status.streams:
        for c in s.consumers:
            health = c.level if not c.problems else f"{c.level}: {'; '.join(c.problems)}"
            consumers.add_row(
                c.stream,
                c.name,
                f"{c.pending:,}",
                f"{c.ack_pending:,}",
                f"{c.redelivered:,}",
                str(c.waiting_pulls),
                _age(c.last_delivery_seconds),
                _age(c.last_ack_seconds),
                f"until {c.paused_until:%Y-%m-%d %H:%M:%S}Z" if c.paused_until else "-",
                ", ".join(c.pinned) or "-",
                f"[{_STYLE[c.level]}]{health}[/]",
            )
    console.print(consumers)
    letters = [(s.dead_letters_of, s.messages) for s in status.streams if s.dead_letters_of is not None]
    if letters:
        console.print("dead letters: " + ", ".join(f"{service} {count:,}" for service, count in letters))
    if status.outbox is not None:
        rows, oldest = status.outbox
        console.print(f"outbox: {rows:,} row(s) waiting" + (f", the oldest {_age(oldest)} old" if oldest else ""))
    console.print(f"[{_STYLE[status.level]}]{status.level}[/]")


async def outbox_backlog(engine: AsyncEngine) -> tuple[int, float | None]:
    """Rows waiting and the oldest one's age; a database without the tables, or failing, is one line."""
    from sqlalchemy.exc import DBAPIError

    from ..outbox import OutboxRelay
    from ..outbox import metadata as outbox_metadata

    missing = await missing_tables(engine, tuple(outbox_metadata.tables))
    if missing:
        fail(f"--db {redact_url(str(engine.url))} has no outbox tables ({', '.join(missing)})")
    try:
        return await OutboxRelay(engine).backlog()
    except DBAPIError as exc:
        fail(f"--db {redact_url(str(engine.url))}: {first_line(exc)}")


def status(
    connection: ConnectionFlags,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of tables.")] = False,
    watch: Annotated[
        float | None, typer.Option("--watch", min=0.5, help="Refresh every SECONDS until Ctrl-C.", metavar="SECONDS")
    ] = None,
    db: Annotated[
        str | None, typer.Option("--db", envvar="EVENTWIRE_DB", help="Outbox database, for its backlog.")
    ] = None,
    pending: Annotated[str | None, _threshold_option("pending", "messages not delivered yet")] = None,
    ack_pending: Annotated[str | None, _threshold_option("ack-pending", "deliveries not acked")] = None,
    redelivered: Annotated[str | None, _threshold_option("redelivered", "messages being redelivered")] = None,
    last_delivery: Annotated[
        str | None, _threshold_option("last-delivery", "seconds without a delivery while messages wait")
    ] = None,
    last_ack: Annotated[
        str | None, _threshold_option("last-ack", "seconds without an ack while acks are outstanding")
    ] = None,
) -> None:
    """Streams, consumers, dead letters and the outbox backlog, each consumer with a health verdict.

    Exit code: 0 healthy, 1 a warning, 2 something critical (the worst of all), as monitors expect.
    """
    try:
        thresholds = _thresholds(
            {
                "pending": pending,
                "ack_pending": ack_pending,
                "redelivered": redelivered,
                "last_delivery": last_delivery,
                "last_ack": last_ack,
            }
        )
    except ConfigError as exc:
        fail(str(exc), 2)
    options = dataclasses.replace(connection.require(), name="eventwire-status")
    engine = open_engine(db) if db is not None else None
    console = table_console()

    async def snapshot(transport: JetStreamTransport) -> Status:
        found = await read_status(transport.nc, thresholds)
        if engine is not None:
            found = dataclasses.replace(found, outbox=await outbox_backlog(engine))
        return found

    def show(found: Status) -> None:
        if as_json:
            print_json(status_json(found))
        else:
            if watch is not None and console.is_terminal:
                console.clear()
            render(found, console)

    async def main() -> int:
        transport = await JetStreamTransport.connect(options)
        try:
            found = await snapshot(transport)
            show(found)
            if watch is None:
                return found.exit_code
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(watch):
                        await stop.wait()
                if not stop.is_set():
                    found = await snapshot(transport)
                    show(found)
            return found.exit_code
        finally:
            await transport.close()
            if engine is not None:
                await engine.dispose()

    code = asyncio.run(main())
    raise typer.Exit(code)


status_command = with_connection()(status)
