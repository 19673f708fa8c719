"""The ``eventwire`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import signal
import socket
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .._app import URL_ENV, App
from .._connect_options import ENVIRONMENT, ConnectOptions, redact_url
from .._errors import EventwireError
from ._catalog import asyncapi, authz, topology
from ._connect import ConnectionFlags, fail, with_connection, with_logging
from ._consumer import app as consumer_cli
from ._db import DbOption, missing_tables, open_engine
from ._db import app as db_cli
from ._dlq import app as dlq_cli
from ._publish import publish_command
from ._schema import app as schema_cli
from ._status import status_command
from ._tail import tail_command
from ._targets import AppDir, load_app
from ._ui import ui_command

cli = typer.Typer(
    name="eventwire",
    help="Event-driven microservices on NATS JetStream.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"eventwire {importlib.metadata.version('eventwire')}")
        raise typer.Exit()


@cli.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Event-driven microservices on NATS JetStream."""


cli.add_typer(consumer_cli, name="consumer")
cli.add_typer(db_cli, name="db")
cli.add_typer(dlq_cli, name="dlq")
cli.add_typer(schema_cli, name="schema")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # only a listener makes it busy
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


@cli.command()
@with_logging()
def server(
    port: Annotated[int, typer.Option(help="Client port; 0 picks a free one.")] = 4222,
    store_dir: Annotated[Path | None, typer.Option(help="JetStream store; default: a temporary directory.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Run an embedded nats-server with JetStream in the foreground until Ctrl-C."""
    from ..server import EmbeddedServer

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if port and not _port_free(host, port):
        fail(f"port {port} on {host} is in use: stop what listens there, or choose another with --port (0: any)")
    embedded = EmbeddedServer(port=port or None, store_dir=store_dir, host=host)
    try:
        embedded.start()
    except EventwireError as exc:
        fail(str(exc).splitlines()[0])
    console.print(f"nats-server with JetStream on [bold]{embedded.url}[/bold], store {embedded.store_dir}")
    console.print(f"export {URL_ENV}={embedded.url}   # Ctrl-C stops it")
    while not stop.wait(0.5):
        if not embedded.running:
            console.print(f"[red]nats-server exited[/red]\n{embedded.log_tail()}")
            raise typer.Exit(1)
    embedded.stop()


@cli.command()
@with_connection(log_level="INFO")
def run(
    app: Annotated[str, typer.Argument(help="The App to run, as module:attribute or module:factory().")],
    connection: ConnectionFlags,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve /metrics, /healthz and /readyz on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option("--metrics-host", help="Address for --metrics-port.")] = "0.0.0.0",
    app_dir: AppDir = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Processes of this App sharing its durables, under a supervisor that restarts them; "
            "worker N serves metrics on --metrics-port + N.",
        ),
    ] = 1,
) -> None:
    """Run an App until SIGTERM or Ctrl-C, then shut it down gracefully (no server given: an embedded one)."""
    service = load_app(app, app_dir)
    if workers > 1:
        raise typer.Exit(_supervise(service, app, app_dir, workers, connection, metrics_port, metrics_host))
    if metrics_port is not None:
        service.enable_metrics(metrics_port, host=metrics_host)
    asyncio.run(service.run(connect=connection.resolve(base=service.connect_options)))


def _supervise(
    service: App,
    app: str,
    app_dir: Path | None,
    workers: int,
    connection: ConnectionFlags,
    metrics_port: int | None,
    metrics_host: str,
) -> int:
    from ..server import EmbeddedServer
    from ._workers import Supervisor, refuse_ordered_handlers, worker_command, worker_environment

    refuse_ordered_handlers(service)
    embedded = None
    if connection.resolve(base=service.connect_options) is None and service.url is None:
        # One server for all workers: each starting its own would split the App in N.
        embedded = EmbeddedServer()
        try:
            embedded.start()
        except EventwireError as exc:
            fail(str(exc).splitlines()[0])
        console.print(f"no server URL configured: the workers share an embedded nats-server on {embedded.url}")

    def command_for(number: int) -> list[str]:
        metrics = None if metrics_port is None else (metrics_port + number, metrics_host)
        return worker_command(app, None if app_dir is None else str(app_dir), metrics)

    environment = worker_environment(connection, None if embedded is None else embedded.url)
    try:
        return asyncio.run(Supervisor(command_for, environment, workers).run())
    finally:
        if embedded is not None:
            embedded.stop()


@cli.command()
@with_connection(log_level="ERROR")
def demo(
    connection: ConnectionFlags,
    orders: Annotated[int, typer.Option(min=1, help="How many orders to place through the HTTP API.")] = 300,
    chaos: Annotated[bool, typer.Option(help="SIGKILL a random service every few seconds and restart it.")] = False,
    data: Annotated[
        Path | None, typer.Option(help="Where the services' databases and logs go (default: a temporary folder).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every order to settle.")] = 180.0,
    database: Annotated[
        str | None,
        typer.Option(
            help="A PostgreSQL URL (postgresql+asyncpg://) for the services' tables instead of SQLite: each "
            "service in schema shop_<service>, emptied first.",
            envvar="SHOP_DATABASE",
        ),
    ] = None,
) -> None:
    """Run the shop: five services as processes, orders through its HTTP API, and a check of every invariant."""
    import tempfile

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..demo._shop_run import run_shop_demo

    if database is not None and not database.startswith("postgresql+asyncpg://"):
        fail(f"--database {redact_url(database)}: give a PostgreSQL URL (postgresql+asyncpg://user@host/db)")
    options = connection.resolve()
    url = ",".join(options.servers) if options is not None else None
    if options is not None:
        asyncio.run(_reachable(options))  # a wrong URL or password: one line now, not five failing services
    # The services get the connection as the environment (secrets stay out of the process list).
    given = {ENVIRONMENT[f.name]: getattr(connection, f.name) for f in dataclasses.fields(connection)}
    environment = {name: value for name, value in given.items() if value is not None and name != ENVIRONMENT["url"]}
    with contextlib.ExitStack() as stack:
        folder = data or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="eventwire-shop-")))
        folder.mkdir(parents=True, exist_ok=True)
        progress = stack.enter_context(
            Progress(TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     console=console, transient=True)
        )  # fmt: skip
        placed = progress.add_task("placed", total=orders)
        settled = progress.add_task("settled", total=orders)

        def on_progress(placed_count: int, settled_count: int) -> None:
            progress.update(placed, completed=placed_count)
            if settled_count >= 0:
                progress.update(settled, completed=settled_count)

        try:
            summary = asyncio.run(
                run_shop_demo(
                    url,
                    orders,
                    data=folder,
                    chaos=chaos,
                    timeout=timeout,
                    on_progress=on_progress,
                    environment=environment,
                    database=database,
                )
            )
        except RuntimeError as exc:
            fail(f"the shop did not run: {exc} (logs in {folder})")
    shown = "embedded" if url is None else ", ".join(options.shown_servers if options else ())
    stored = "SQLite" if database is None else f"PostgreSQL {redact_url(database)}"
    table = Table(title=f"eventwire demo on {shown}, {stored}{' with chaos' if chaos else ''}", show_header=False)
    table.add_row(
        "orders", f"{summary.orders} placed, {summary.confirmed} confirmed, {sum(summary.cancelled.values())} cancelled"
    )
    for reason, count in sorted(summary.cancelled.items()):
        table.add_row(f"  cancelled: {reason}", str(count))
    table.add_row("refunds of late captures", str(summary.refunded))
    if chaos:
        kills = ", ".join(f"{name} {count}" for name, count in sorted(summary.kills.items()))
        table.add_row("services killed (SIGKILL)", f"{sum(summary.kills.values())}: {kills}")
    table.add_row("time", f"{summary.seconds:.1f}s")
    for invariant, held, figures in summary.checks:
        table.add_row(f"{'✓' if held else '✗'} {invariant}", figures)
    console.print(table)
    if not summary.held:
        console.print("[red]an invariant did not hold[/red]")
        raise typer.Exit(1)


async def _reachable(options: ConnectOptions) -> None:
    from ..transport import JetStreamTransport

    transport = await JetStreamTransport.connect(options)
    await transport.close()


@cli.command()
@with_connection(log_level="INFO")
def relay(
    db: DbOption,
    connection: ConnectionFlags,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per batch.")] = 500,
    poll_interval: Annotated[
        float, typer.Option(help="Seconds between polls (PostgreSQL also wakes on NOTIFY).")
    ] = 1.0,
) -> None:
    """Publish committed outbox rows until SIGTERM or Ctrl-C (then after the current batch)."""
    from ..outbox import OutboxRelay
    from ..outbox import metadata as outbox_metadata

    engine = open_engine(db)
    service = App("outbox-relay", relays=[OutboxRelay(engine, batch_size=batch_size, poll_interval=poll_interval)])

    async def main() -> None:
        try:
            missing = await missing_tables(engine, tuple(outbox_metadata.tables))
            if missing:
                tables = ", ".join(missing)
                fail(f"--db {redact_url(db)} lacks the outbox tables ({tables}): run `eventwire db init --db URL`")
            await service.run(connect=connection.resolve())
        finally:
            await engine.dispose()

    asyncio.run(main())


cli.command("status")(status_command)
cli.command("tail")(tail_command)
cli.command("publish")(publish_command)
cli.command("ui")(ui_command)
for catalog_command in (asyncapi, topology, authz):
    cli.command()(with_logging()(catalog_command))


def main() -> None:
    cli()
