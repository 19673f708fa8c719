"""The ``eventwire`` command line."""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .._app import URL_ENV, App
from .._connect_options import redact_url
from .._errors import EventwireError
from ._catalog import asyncapi, authz, topology
from ._connect import ConnectionFlags, fail, with_connection, with_logging
from ._dlq import app as dlq_cli
from ._schema import app as schema_cli
from ._targets import load_app

cli = typer.Typer(
    name="eventwire",
    help="Event-driven microservices on NATS JetStream.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
cli.add_typer(dlq_cli, name="dlq")
cli.add_typer(schema_cli, name="schema")


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
) -> None:
    """Run an App until SIGTERM or Ctrl-C, then shut it down gracefully (no server given: an embedded one)."""
    service = load_app(app)
    if metrics_port is not None:
        service.enable_metrics(metrics_port, host=metrics_host)
    asyncio.run(service.run(connect=connection.resolve(base=service.connect_options)))


@cli.command()
@with_connection(log_level="ERROR")
def demo(
    connection: ConnectionFlags,
    orders: Annotated[int, typer.Option(min=1, help="How many orders to place.")] = 1000,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every order to be processed.")] = 120.0,
) -> None:
    """Run the shop demo: orders → inventory → notifications on JetStream (no server given: an embedded one)."""
    from ..demo import run_demo

    summary = asyncio.run(run_demo(connection.resolve(), orders, timeout=timeout))
    table = Table(title=f"eventwire demo on {redact_url(summary.server)}", show_header=False)
    table.add_row("orders published", f"{summary.published} ({summary.duplicates} duplicates)")
    for service, count in summary.handled.items():
        table.add_row(f"handled by {service}", str(count))
    for outcome, count in sorted(summary.outcomes.items()):
        table.add_row(f"  {outcome}", str(count))
    table.add_row("redeliveries", str(summary.redeliveries))
    table.add_row("time", f"{summary.seconds:.2f}s ({summary.orders / summary.seconds:,.0f} orders/s)")
    console.print(table)
    if not summary.complete:
        console.print("[red]not every order reached notifications before the timeout[/red]")
        raise typer.Exit(1)


@cli.command()
@with_connection(log_level="INFO")
def relay(
    db: Annotated[
        str, typer.Option("--db", envvar="EVENTWIRE_DB", help="SQLAlchemy async URL of the outbox database.")
    ],
    connection: ConnectionFlags,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per batch.")] = 500,
    poll_interval: Annotated[
        float, typer.Option(help="Seconds between polls (PostgreSQL also wakes on NOTIFY).")
    ] = 1.0,
) -> None:
    """Publish committed outbox rows until SIGTERM or Ctrl-C (then after the current batch)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from ..outbox import OutboxRelay

    try:
        engine = create_async_engine(db)
    except Exception as exc:  # SQLAlchemy says what is wrong with the URL, in many exception types
        fail(f"--db {redact_url(db)}: {type(exc).__name__}")
    service = App("outbox-relay", relays=[OutboxRelay(engine, batch_size=batch_size, poll_interval=poll_interval)])

    async def main() -> None:
        try:
            await service.run(connect=connection.resolve())
        finally:
            await engine.dispose()

    asyncio.run(main())


for catalog_command in (asyncapi, topology, authz):
    cli.command()(with_logging()(catalog_command))


def main() -> None:
    cli()
