"""``/metrics``, ``/healthz`` and ``/readyz`` on one port, served from the App's own event loop.

``/healthz`` answers while the event loop runs (an answer at all is the proof); ``/readyz`` answers 200
when every readiness check finds nothing wrong, else 503 with the problems, as Kubernetes probes expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator, Sequence

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .._errors import ConfigError

logger = logging.getLogger("eventwire.health")

Readiness = Callable[[], list[str]]


class _InLoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The App handles SIGTERM and SIGINT; uvicorn must not take them over.
        yield


def health_app(checks: Sequence[Readiness]) -> Starlette:
    async def metrics(_: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        problems = [problem for check in checks for problem in check()]
        return JSONResponse({"ready": not problems, "problems": problems}, status_code=503 if problems else 200)

    return Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz), Route("/readyz", readyz)])


class HealthServer:
    """The three endpoints on ``host:port`` (port 0: a free one, see :attr:`port` once started)."""

    def __init__(self, checks: Sequence[Readiness], *, port: int, host: str = "0.0.0.0") -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"metrics port {port} is not between 0 and 65535")
        self._checks = list(checks)
        self._host = host
        self.port = port
        self._server: _InLoopServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        listening = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listening.bind((self._host, self.port))
        except OSError as exc:
            listening.close()
            raise ConfigError(f"metrics port {self.port} on {self._host}: {exc.strerror}") from None
        listening.listen(128)
        self.port = listening.getsockname()[1]
        config = uvicorn.Config(
            health_app(self._checks), log_level="warning", access_log=False, lifespan="off", loop="none"
        )
        self._server = _InLoopServer(config)
        # The socket already listens: a probe that comes before uvicorn is up waits in its backlog.
        self._task = asyncio.create_task(self._server.serve(sockets=[listening]), name="eventwire-health")
        logger.info("metrics and health on http://%s:%d (/metrics, /healthz, /readyz)", self._host, self.port)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None
