"""``eventwire ui``: the web console, served until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import socket
from typing import Annotated

import typer

from ._connect import ConnectionFlags, fail, with_connection
from ._targets import AppDir, import_modules, load_app

TOKEN_ENV = "EVENTWIRE_UI_TOKEN"


def ui(
    connection: ConnectionFlags,
    apps: Annotated[
        list[str] | None,
        typer.Argument(metavar="[APP]...", help="The Apps to draw, each as module:attribute or module:factory()."),
    ] = None,
    imports: Annotated[
        list[str] | None, typer.Option("--import", help="Module(s) defining event classes, to decode payloads.")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; any but a loopback one needs the token for everything.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free one).")] = 8090,
    sample_interval: Annotated[
        float, typer.Option(min=0.2, help="Seconds between samples of the consumers' figures.")
    ] = 10.0,
    app_dir: AppDir = None,
) -> None:
    """Serve a web console: the live topology, streams and consumers with an hour of lag, decoded events, and
    dead letters with replay and purge.

    The token (printed once, in the console's link) is needed to replay or purge, and for everything when
    listening on an address other than a loopback one. Set EVENTWIRE_UI_TOKEN to choose it.
    """
    import os

    import uvicorn

    from .._event_json import EventDecoder
    from ..transport import JetStreamTransport
    from ..ui._server import Console, ConsoleSettings, console_app
    from ..ui._views import Sampler

    # Loading an App imports its contracts, so its events decode without --import.
    loaded = [load_app(target, app_dir) for target in apps or []]
    import_modules(imports or [], app_dir)
    token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    options = dataclasses.replace(connection.require(), name="eventwire-ui")
    listening = _listen(host, port)
    settings = ConsoleSettings(host, listening.getsockname()[1], token)

    async def main() -> None:
        transport = await JetStreamTransport.connect(options)
        try:
            sampler = Sampler(transport.nc, sample_interval)
            console = Console(loaded, transport.nc, transport, sampler, EventDecoder(transport))
            await console.sampler.current()
            config = uvicorn.Config(console_app(console, settings), log_level="warning", access_log=False)
            server = uvicorn.Server(config)
            shown = f"[{host}]" if ":" in host else host
            typer.echo(f"eventwire console on http://{shown}:{settings.port}/?token={token}")
            await server.serve(sockets=[listening])
        finally:
            await transport.close()

    asyncio.run(main())


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    return listening


ui_command = with_connection(log_level="WARNING")(ui)
