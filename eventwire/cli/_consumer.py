"""``eventwire consumer pause | resume | reset | unpin``: hold a handler back, replay it from a point, or move a
partition to another instance, keeping its durable.

Pausing and unpinning need nats-server 2.11 (``$JS.API.CONSUMER.PAUSE``, ``.UNPIN``), resetting 2.14
(``$JS.API.CONSUMER.RESET``); on an older server the command says so instead of sending a request nobody answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer
from nats.aio.client import Client

from .._errors import ServerError
from .._nats_client import dotted, server_version
from .._status import consumers_of, js_api, list_all
from ..transport import JetStreamTransport
from ._connect import ConnectionFlags, fail, with_connection
from ._dlq import parse_time

app = typer.Typer(
    help="Pause, resume, reset or unpin a durable (a handler, or one partition of it) without deleting it.",
    no_args_is_help=True,
)

T = TypeVar("T")
Durable = Annotated[str, typer.Argument(metavar="DURABLE", help="The durable's name, as `eventwire status` lists it.")]
StreamOption = Annotated[
    str | None, typer.Option("--stream", help="Its stream; needed only when two streams have a durable of that name.")
]
PAUSE_SINCE = (2, 11, 0)
RESET_SINCE = (2, 14, 0)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def require_version(nc: Client, needed: tuple[int, int, int], what: str) -> None:
    version = server_version(nc)
    if version < needed:
        fail(f"{what} needs nats-server {dotted(needed)} or later; this server is {dotted(version)}")


async def find_stream(nc: Client, durable: str, stream: str | None) -> str:
    """The stream holding ``durable``: ``stream`` when it does, else the only one that does."""
    if stream is not None:
        try:
            await js_api(nc, f"$JS.API.CONSUMER.INFO.{stream}.{durable}")
        except ServerError as exc:
            fail(f"{stream} / {durable}: {exc}")
        return stream
    streams = (await list_all(nc, "$JS.API.STREAM.LIST", "streams")).items
    holding = [
        info["config"]["name"]
        for info in streams
        if durable in {c["name"] for c in await consumers_of(nc, info["config"]["name"])}
    ]
    if not holding:
        fail(f"no stream has a durable {durable!r}")
    if len(holding) > 1:
        fail(f"durable {durable!r} exists on {', '.join(holding)}: choose one with --stream")
    return str(holding[0])


def _run(connection: ConnectionFlags, work: Callable[[Client], Awaitable[T]]) -> T:
    options = dataclasses.replace(connection.require(), name="eventwire-consumer")

    async def main() -> T:
        transport = await JetStreamTransport.connect(options)
        try:
            return await work(transport.nc)
        finally:
            await transport.close()

    return asyncio.run(main())


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@app.command()
@with_connection()
def pause(
    durable: Durable,
    connection: ConnectionFlags,
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601 time to resume at.")] = None,
    for_: Annotated[str | None, typer.Option("--for", help="How long: 30s, 15m, 2h, 1d.")] = None,
    stream: StreamOption = None,
) -> None:
    """Stop deliveries to a durable until a time; its handlers keep running and get nothing meanwhile."""
    if (until is None) == (for_ is None):
        fail("give one of --until TIME or --for DURATION", 2)
    if for_ is not None:
        length = _DURATION.match(for_.strip())
        if length is None:
            fail(f"--for {for_!r}: expected a duration like 30s, 15m, 2h, 1d", 2)
        resume_at = datetime.now(UTC) + timedelta(**{_UNITS[length[2]]: float(length[1])})
    else:
        resume_at = _parse_until(until)

    async def work(nc: Client) -> dict[str, Any]:
        require_version(nc, PAUSE_SINCE, "pausing a consumer")
        name = await find_stream(nc, durable, stream)
        return await js_api(nc, f"$JS.API.CONSUMER.PAUSE.{name}.{durable}", {"pause_until": _rfc3339(resume_at)})

    answer = _run(connection, work)
    typer.echo(f"{durable}: paused until {answer.get('pause_until', _rfc3339(resume_at))}")


def _parse_until(text: str | None) -> datetime:
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        fail(f"--until {text!r}: expected an ISO 8601 time, e.g. 2026-12-01T18:00:00Z", 2)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if moment <= datetime.now(UTC):
        fail(f"--until {text}: that time has passed", 2)
    return moment


@app.command()
@with_connection()
def resume(durable: Durable, connection: ConnectionFlags, stream: StreamOption = None) -> None:
    """Deliver to a paused durable again, now."""

    async def work(nc: Client) -> dict[str, Any]:
        require_version(nc, PAUSE_SINCE, "resuming a consumer")
        name = await find_stream(nc, durable, stream)
        return await js_api(nc, f"$JS.API.CONSUMER.PAUSE.{name}.{durable}", {})

    answer = _run(connection, work)
    typer.echo(f"{durable}: {'still paused' if answer.get('paused') else 'resumed'}")


@app.command()
@with_connection()
def unpin(durable: Durable, connection: ConnectionFlags, stream: StreamOption = None) -> None:
    """Take a partition durable's pin from the instance holding it: the next instance to pull gets it."""

    async def work(nc: Client) -> str | None:
        require_version(nc, PAUSE_SINCE, "unpinning a consumer")
        name = await find_stream(nc, durable, stream)
        info = await js_api(nc, f"$JS.API.CONSUMER.INFO.{name}.{durable}")
        config = info.get("config", {})
        groups = config.get("priority_groups") or []
        if config.get("priority_policy") != "pinned_client" or not groups:
            fail(f"{durable} on {name} is not a pinned durable (a partition of a partitioned handler)")
        held = next(
            (g.get("pinned_client_id") for g in info.get("priority_groups") or [] if g["group"] == groups[0]), None
        )
        await js_api(nc, f"$JS.API.CONSUMER.UNPIN.{name}.{durable}", {"group": groups[0]})
        return held

    held = _run(connection, work)
    if held is None:
        typer.echo(f"{durable}: no instance held it; the next one to pull takes it")
    else:
        typer.echo(f"{durable}: unpinned from {held}; the next instance to pull takes it")


@app.command()
@with_connection()
def reset(
    durable: Durable,
    connection: ConnectionFlags,
    to_sequence: Annotated[
        int | None, typer.Option("--to-sequence", min=1, help="Deliver again from this stream sequence.")
    ] = None,
    to_time: Annotated[
        str | None, typer.Option("--to-time", help="Deliver again from this time: ISO 8601, or 30m, 2h, 7d ago.")
    ] = None,
    stream: StreamOption = None,
) -> None:
    """Move a durable back (or forward) to a stream sequence or a time: the handler gets those events again.

    Every event from there is redelivered to this durable only; other durables are not affected.
    """
    if (to_sequence is None) == (to_time is None):
        fail("give one of --to-sequence N or --to-time TIME", 2)
    start_time = parse_time(to_time)

    async def work(nc: Client) -> tuple[str, int]:
        require_version(nc, RESET_SINCE, "resetting a consumer")
        name = await find_stream(nc, durable, stream)
        if to_sequence is not None:
            sequence = to_sequence
        else:
            assert start_time is not None  # one of the two was given: checked above
            sequence = await _first_at(nc, name, start_time)
        answer = await js_api(nc, f"$JS.API.CONSUMER.RESET.{name}.{durable}", {"seq": sequence})
        return name, int(answer.get("reset_seq", sequence))

    name, sequence = _run(connection, work)
    typer.echo(f"{durable} on {name}: reset, delivering again from stream sequence {sequence}")


async def _first_at(nc: Client, stream: str, moment: datetime) -> int:
    """The sequence of the first message stored at or after ``moment`` (one past the last when there is none)."""
    try:
        found = await js_api(nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"start_time": _rfc3339(moment)})
    except ServerError as exc:
        if "no message found" not in str(exc).lower():
            raise
        info = await nc.jetstream().stream_info(stream)
        return info.state.last_seq + 1
    return int(found["message"]["seq"])
