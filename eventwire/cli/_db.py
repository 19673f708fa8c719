"""``eventwire db init`` and the database checks ``relay`` makes before it starts."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer

from .._connect_options import redact_url
from ._connect import fail, with_logging

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

app = typer.Typer(help="The outbox and inbox tables.", no_args_is_help=True)

DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="EVENTWIRE_DB",
        help="SQLAlchemy async URL: sqlite+aiosqlite:///service.db or postgresql+asyncpg://user@host/db.",
    ),
]

# The async drivers eventwire is tested with, by the dialect a URL names without one.
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
EXAMPLE = "sqlite+aiosqlite:///service.db or postgresql+asyncpg://user@host/db"


def open_engine(url: str) -> AsyncEngine:
    """An engine for ``url``, or one line saying what is wrong with it (and the URL without its password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    from sqlalchemy.ext.asyncio import create_async_engine

    shown = redact_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        fail(f"--db {shown}: not a database URL; expected {EXAMPLE}")
    dialect, _, driver = parsed.drivername.partition("+")
    suggested = _ASYNC_DRIVERS.get(dialect)
    if suggested is None:
        fail(f"--db {shown}: eventwire's tables work on SQLite and PostgreSQL; expected {EXAMPLE}")
    if driver not in ("aiosqlite", "asyncpg", "psycopg"):
        fail(f"--db {shown}: {parsed.drivername}:// is not an async driver; use {suggested}://")
    try:
        return create_async_engine(parsed)
    except ImportError as exc:
        fail(f"--db {shown}: the driver is not installed ({exc})")


async def missing_tables(engine: AsyncEngine, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` the database lacks; a database that cannot be reached is one line and exit 1."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import DBAPIError

    try:
        async with engine.connect() as conn:
            present = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    except (DBAPIError, OSError) as exc:
        fail(f"--db {redact_url(str(engine.url))}: cannot connect: {first_line(exc)}")
    return [name for name in names if name not in present]


def first_line(exc: BaseException) -> str:
    """What a database error says, in one line, without SQLAlchemy's wrapping."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    kind = type(cause).__name__
    if not text:
        return kind
    return text[0] if kind == "Error" else f"{kind}: {text[0]}"  # the DB-API's generic class says nothing


@app.command()
@with_logging()
def init(db: DbOption) -> None:
    """Create the outbox, inbox and saga tables where they are missing (running it again changes nothing)."""
    from ..inbox import create_tables as create_inbox_tables
    from ..inbox import metadata as inbox_metadata
    from ..outbox import create_tables as create_outbox_tables
    from ..outbox import metadata as outbox_metadata
    from ..saga import create_tables as create_saga_tables
    from ..saga import metadata as saga_metadata

    engine = open_engine(db)
    tables = (*outbox_metadata.tables, *inbox_metadata.tables, *saga_metadata.tables)

    async def main() -> list[str]:
        try:
            missing = await missing_tables(engine, tables)
            await create_outbox_tables(engine)
            await create_inbox_tables(engine)
            await create_saga_tables(engine)
            return missing
        finally:
            await engine.dispose()

    created = asyncio.run(main())
    shown = redact_url(db)
    if created:
        typer.echo(f"created {', '.join(created)} in {shown}")
    else:
        typer.echo(f"{shown} already has {', '.join(tables)}")
