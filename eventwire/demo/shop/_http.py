"""A service's HTTP API, served from its App's event loop beside the handlers."""

from __future__ import annotations

import asyncio
import logging

from starlette.applications import Starlette

from ...observability._health import serve_in_loop
from ...transport import Transport

logger = logging.getLogger("eventwire.demo")


class HttpApi:
    """Runs as one of the App's relays: up once the App has started, down when it stops."""

    def __init__(self, asgi: Starlette, *, host: str, port: int) -> None:
        self._asgi = asgi
        self._host = host
        self.port = port
        self._server: asyncio.Task[None] | None = None

    def start(self, transport: Transport) -> None:
        self._uvicorn, self._server, self.port = serve_in_loop(self._asgi, self._host, self.port, what="HTTP port")
        logger.info("HTTP API on http://%s:%d", self._host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._uvicorn.should_exit = True
            await asyncio.gather(self._server, return_exceptions=True)
            self._server = None
