"""The console's ASGI app: the page, its assets and a JSON API, behind the console's token.

Reading needs the token unless the console listens on a loopback address; changing anything (replay,
purge) always needs it. A browser holds it in an HttpOnly, SameSite=Strict cookie that the page's link
(``/?token=…``) sets, and a state-changing request must also carry ``X-Eventwire-Console`` (which no
cross-site form or image can send) and, when the browser names one, its own origin. On loopback, requests
must name the console's own host: a page on another site cannot reach it by rebinding its DNS name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from nats.aio.client import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import dlq
from .._app import App
from .._errors import EventwireError
from .._event_json import EventDecoder
from ..transport import Transport
from ._views import Sampler, browse, dead_letter, dead_letters_view, streams_view, topology_view

COOKIE = "eventwire_console"
CSRF_HEADER = "X-Eventwire-Console"
STATIC = resources.files("eventwire.ui") / "static"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ConsoleSettings:
    host: str
    port: int
    token: str

    @property
    def open_reads(self) -> bool:
        return is_loopback(self.host)


class Console:
    """What the routes share: the Apps, the server connection, the sampler."""

    def __init__(
        self, apps: Sequence[App], nc: Client, transport: Transport, sampler: Sampler, decoder: EventDecoder
    ) -> None:
        self.apps = apps
        self.nc = nc
        self.transport = transport
        self.sampler = sampler
        self.decoder = decoder


def _authenticated(request: Request, token: str) -> bool:
    given = request.cookies.get(COOKIE) or ""
    bearer = request.headers.get("authorization", "")
    if bearer.lower().startswith("bearer "):
        given = bearer[7:].strip()
    return bool(given) and secrets.compare_digest(given.encode(), token.encode())


def _refusal(request: Request, settings: ConsoleSettings, *, write: bool) -> Response | None:
    if settings.open_reads:
        host = (request.headers.get("host") or "").lower()
        allowed = {f"{name}:{settings.port}" for name in ("127.0.0.1", "localhost", "[::1]", settings.host)}
        if host not in allowed:
            return JSONResponse({"error": f"host {host!r} is not this console's"}, status_code=403)
    if (write or not settings.open_reads) and not _authenticated(request, settings.token):
        what = "changing anything" if write else "this console"
        return JSONResponse(
            {"error": f"{what} needs the console's token: open the link printed when it started"}, status_code=401
        )
    if write and COOKIE in request.cookies and not request.headers.get("authorization"):
        origin = request.headers.get("origin")
        if request.headers.get(CSRF_HEADER) != "1" or (
            origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host')}"
        ):
            return JSONResponse({"error": "cross-site request refused"}, status_code=403)
    return None


Handler = Callable[[Request], Awaitable[Response]]


def console_app(console: Console, settings: ConsoleSettings) -> Starlette:
    def guarded(handler: Handler, *, write: bool = False) -> Handler:
        async def endpoint(request: Request) -> Response:
            refused = _refusal(request, settings, write=write)
            if refused is not None:
                return refused
            try:
                return await handler(request)
            except (EventwireError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)

        return endpoint

    async def index(request: Request) -> Response:
        given = request.query_params.get("token")
        if given is not None:
            # The link's token becomes a cookie, and leaves the address bar (and the browser's history).
            response: Response = RedirectResponse("/", status_code=303)
            if secrets.compare_digest(given.encode(), settings.token.encode()):
                response.set_cookie(COOKIE, settings.token, httponly=True, samesite="strict")
            return response
        refused = _refusal(request, settings, write=False)
        if refused is not None and not settings.open_reads:
            return Response(
                "This console needs its token: open the link it printed when it started.", 401, media_type="text/plain"
            )
        if refused is not None:
            return refused
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-store"})

    async def session(request: Request) -> Response:
        return JSONResponse({"can_change": _authenticated(request, settings.token)})

    async def topology(request: Request) -> Response:
        return JSONResponse(topology_view(console.apps, await console.sampler.current()))

    async def streams(request: Request) -> Response:
        return JSONResponse(streams_view(await console.sampler.current(), console.sampler))

    async def events(request: Request) -> Response:
        query = request.query_params
        from_time = query.get("from_time")
        view = await browse(
            console.nc,
            console.decoder,
            request.path_params["stream"],
            from_sequence=int(query["from_sequence"]) if query.get("from_sequence") else None,
            from_time=datetime.fromisoformat(from_time.replace("Z", "+00:00")) if from_time else None,
            subject=query.get("subject") or None,
            ce_type=query.get("type") or None,
            limit=min(int(query.get("limit") or 25), 200),
        )
        return JSONResponse(view)

    async def dead_letters(request: Request) -> Response:
        return JSONResponse(
            await dead_letters_view(console.nc, console.decoder, request.query_params.get("service") or None)
        )

    async def letter_or_404(request: Request) -> dlq.DeadLetter | Response:
        letter = await dead_letter(console.nc, request.path_params["stream"], int(request.path_params["sequence"]))
        if letter is None:
            return JSONResponse({"error": "no such dead letter (replayed or purged already?)"}, status_code=404)
        return letter

    async def recipients(request: Request) -> Response:
        letter = await letter_or_404(request)
        if isinstance(letter, Response):
            return letter
        durables = await dlq.recipients(console.nc.jetstream(), letter.original_stream, letter.subject)
        return JSONResponse({"subject": letter.subject, "stream": letter.original_stream, "durables": durables})

    async def replay(request: Request) -> Response:
        letter = await letter_or_404(request)
        if isinstance(letter, Response):
            return letter
        js = console.nc.jetstream()
        durables = await dlq.recipients(js, letter.original_stream, letter.subject)
        ack = await dlq.replay(js, console.transport, letter)
        return JSONResponse({"replayed": f"{letter.stream}:{letter.sequence}", "stream": ack.stream,
                             "sequence": ack.sequence, "durables": durables})  # fmt: skip

    async def purge(request: Request) -> Response:
        letter = await letter_or_404(request)
        if isinstance(letter, Response):
            return letter
        await console.nc.jetstream().delete_msg(letter.stream, letter.sequence)
        return JSONResponse({"purged": f"{letter.stream}:{letter.sequence}"})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(console.sampler.run(), name="eventwire-console-sampler")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    letter_path = "/api/dead-letters/{stream}/{sequence:int}"
    routes: list[Any] = [
        Route("/", index),
        Route("/api/session", guarded(session)),
        Route("/api/topology", guarded(topology)),
        Route("/api/streams", guarded(streams)),
        Route("/api/streams/{stream}/events", guarded(events)),
        Route("/api/dead-letters", guarded(dead_letters)),
        Route(f"{letter_path}/recipients", guarded(recipients)),
        Route(f"{letter_path}/replay", guarded(replay, write=True), methods=["POST"]),
        Route(f"{letter_path}/purge", guarded(purge, write=True), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
