"""``/metrics``, ``/healthz`` and ``/readyz`` on one port, served from the App's own event loop.

``/healthz`` answers 200 while the event loop runs and no liveness check finds a reason to restart the
process (a handler stopped for good), else 503; ``/readyz`` answers 200 when every readiness check finds
nothing wrong, else 503 with the problems, as Kubernetes probes expect.
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

Check = Callable[[], list[str]]


class _InLoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The App handles SIGTERM and SIGINT; uvicorn must not take them over.
        yield


def health_app(readiness: Sequence[Check], liveness: Sequence[Check] = ()) -> Starlette:
    async def metrics(_: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        problems = [problem for check in liveness for problem in check()]
        if problems:
            return PlainTextResponse("".join(f"{problem}\n" for problem in problems), status_code=503)
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        problems = [problem for check in readiness for problem in check()]
        return JSONResponse({"ready": not problems, "problems": problems}, status_code=503 if problems else 200)

    return Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz), Route("/readyz", readyz)])


def serve_in_loop(asgi: Starlette, host: str, port: int, *, what: str) -> tuple[_InLoopServer, asyncio.Task[None], int]:
    """Serve ``asgi`` on ``host:port`` from this event loop; the server, its task and the port it listens on.

    The socket listens before this returns: a request that comes before uvicorn is up waits in its backlog.
    """
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        raise ConfigError(f"{what} {port} on {host}: {exc.strerror}") from None
    listening.listen(128)
    config = uvicorn.Config(
        asgi,
        log_level="warning",
        log_config=None,  # uvicorn's own would replace the process's logging set-up (--log-format json)
        access_log=False,
        lifespan="off",
        loop="none",
    )
    server = _InLoopServer(config)
    task = asyncio.create_task(server.serve(sockets=[listening]), name=f"eventwire-http-{port}")
    return server, task, listening.getsockname()[1]


class HealthServer:
    """The three endpoints on ``host:port`` (port 0: a free one, see :attr:`port` once started)."""

    def __init__(
        self, readiness: Sequence[Check], liveness: Sequence[Check] = (), *, port: int, host: str = "0.0.0.0"
    ) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"metrics port {port} is not between 0 and 65535")
        self._readiness = list(readiness)
        self._liveness = list(liveness)
        self._host = host
        self.port = port
        self._server: _InLoopServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._server, self._task, self.port = serve_in_loop(
            health_app(self._readiness, self._liveness), self._host, self.port, what="metrics port"
        )
        logger.info("metrics and health on http://%s:%d (/metrics, /healthz, /readyz)", self._host, self.port)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            (result,) = await asyncio.gather(self._task, return_exceptions=True)
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                logger.warning("metrics and health server on port %d had failed: %r", self.port, result)
            self._server = self._task = None
