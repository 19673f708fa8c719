"""The only place eventwire builds a NATS connection.

The first connect is bounded: refused credentials and TLS failures end it at
once, anything else is retried until ``first_connect_deadline``; then a
:class:`ConnectError` says why, naming the servers without credentials. Once
connected, the client reconnects forever and says so quietly: one WARNING
when the connection drops, a summary while it stays down, one INFO when it is
back. Permission denials go to whoever waits on the refused subject.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats.errors

from ._connect_options import ConnectOptions, redact_url
from ._errors import ConnectError
from ._nats_client import EventwireClient, parse_denial

logger = logging.getLogger("eventwire.connection")


class _QuietTLSClose(logging.Filter):
    """asyncio warns at every TLS connection nats-py closes; it means nothing to an operator."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_QuietTLSClose())

# How often a connection that stays down is reported (seconds).
DOWN_SUMMARY_INTERVAL = 30.0


def describe_failure(exc: BaseException) -> tuple[str, bool]:
    """A connect failure as a short reason, and whether trying again can help."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        text = (exc.verify_message or str(exc)).lower()
        if "hostname" in text or "ip address mismatch" in text:
            return "TLS: the server's certificate does not match its host name", False
        if "expired" in text:
            return "TLS: the server's certificate has expired", False
        if "issuer" in text or "self-signed" in text or "self signed" in text or "unknown ca" in text:
            return "TLS: the server's certificate is signed by an unknown authority", False
        return f"TLS: the server's certificate was not accepted ({exc.verify_message})", False
    if isinstance(exc, ssl.SSLError):
        text = f"{exc.reason} {exc}".lower()
        if "certificate_required" in text or "certificate required" in text:
            return "TLS: the server requires a client certificate", False
        if "unknown_ca" in text or "bad_certificate" in text or "certificate_unknown" in text:
            return "TLS: the server refused the client certificate", False
        if "wrong_version_number" in text or "record_layer" in text or "packet_length" in text:
            return "TLS: the server does not speak TLS on this port", False
        return f"TLS handshake failed ({exc.reason or type(exc).__name__})", False
    if isinstance(exc, nats.errors.UnexpectedEOF):
        return "the server closed the connection", True
    if isinstance(exc, nats.errors.StaleConnectionError):
        return "the server stopped answering pings", True
    if isinstance(exc, nats.errors.Error):
        text = str(exc).lower()
        if "authorization violation" in text:
            return "authorization violation: the server refused these credentials", False
        if "authentication expired" in text or "expired" in text:
            return "the credentials have expired", False
        if "authentication timeout" in text:
            return "authentication timed out", False
        if "tls" in text:
            return "TLS: the server and the client disagree on TLS", False
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused", True
    if isinstance(exc, socket.gaierror):
        return "name resolution failed: unknown host", True
    if isinstance(exc, TimeoutError):
        return "no answer from the server in time", True
    if isinstance(exc, OSError):
        return f"network error: {exc.strerror or type(exc).__name__}", True
    if type(exc).__module__.startswith("nkeys"):
        return "the nkey seed is not valid", False
    return f"{type(exc).__name__}", True


class ConnectionState:
    """What the connection's callbacks know: first-connect failures, outages, reconnects."""

    def __init__(self, options: ConnectOptions, nc: EventwireClient) -> None:
        self._options = options
        self._nc = nc
        self.connecting = True
        self.closing = False
        self.failures: list[BaseException] = []
        self.fatal = asyncio.Event()
        self.attempts = 0
        self.last_error: str | None = None
        self.down_since: float | None = None
        self.server = options.shown_servers[0]
        self._drop_reason: str | None = None
        self._summary: asyncio.Task[None] | None = None
        self.reconnect_listeners: list[Callable[[], None]] = []

    def _note_server(self) -> None:
        url = self._nc.connected_url
        if url is not None:
            self.server = redact_url(url.geturl())

    async def on_error(self, exc: Exception) -> None:
        denial = parse_denial(str(exc)) if isinstance(exc, nats.errors.Error) else None
        if denial is not None:
            if not self._nc.report_denial(denial):
                logger.warning("%s: nothing eventwire was doing needed it", denial)
            return
        if self.connecting:
            self.failures.append(exc)
            if not describe_failure(exc)[1]:
                self.fatal.set()
            return
        reason, network = describe_failure(exc)
        if self.down_since is not None or self._nc.is_reconnecting:
            self.attempts += 1
            self.last_error = reason
            return
        if network or isinstance(exc, nats.errors.UnexpectedEOF | nats.errors.StaleConnectionError):
            # The drop that follows says it once, with this as its cause.
            self._drop_reason = reason
            logger.debug("connection to %s: %s", self.server, reason)
            return
        logger.warning("NATS connection error: %s", self._options.scrub(reason))

    async def on_disconnected(self) -> None:
        if self.closing or self.connecting:
            return
        loop = asyncio.get_running_loop()
        self.down_since = loop.time()
        self.attempts = 0
        cause = f" ({self._drop_reason})" if self._drop_reason else ""
        self._drop_reason = None
        logger.warning("connection to %s lost%s; reconnecting", self.server, cause)
        if self._summary is None or self._summary.done():
            self._summary = asyncio.create_task(self._report_outage(), name="eventwire-connection-outage")

    async def _report_outage(self) -> None:
        loop = asyncio.get_running_loop()
        while self.down_since is not None and not self.closing:
            await asyncio.sleep(DOWN_SUMMARY_INTERVAL)
            if self.down_since is None or self.closing:
                return
            logger.warning(
                "still disconnected from NATS after %.0fs: %d attempts, last error: %s",
                loop.time() - self.down_since,
                self.attempts,
                self.last_error or "none",
            )

    async def on_reconnected(self) -> None:
        loop = asyncio.get_running_loop()
        down = loop.time() - self.down_since if self.down_since is not None else 0.0
        self.down_since = None
        if self._summary is not None:
            self._summary.cancel()
        self._note_server()
        logger.info("reconnected to %s after %.1fs", self.server, down)
        for listener in self.reconnect_listeners:
            listener()

    def close(self) -> None:
        self.closing = True
        self.down_since = None
        if self._summary is not None:
            self._summary.cancel()


def _check_files(options: ConnectOptions) -> None:
    files = [("creds_file", options.creds_file), ("tls_ca", options.tls_ca), ("tls_cert", options.tls_cert)]
    files.append(("tls_key", options.tls_key))
    if options.nkey is not None and not options.nkey_is_seed():
        files.append(("nkey", options.nkey))
    for name, path in files:
        if path is not None and not Path(path).is_file():
            # A value that is neither a seed nor a file may be a mistyped seed: never echo it.
            shown = "the value given" if name == "nkey" and "/" not in path else path
            raise ConnectError(f"{name}: {shown} is not a readable file", options.shown_servers)


def _client_settings(options: ConnectOptions, state: ConnectionState) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "servers": list(options.servers),
        "name": options.name,
        "user": options.user,
        "password": options.password,
        "token": options.token,
        "user_credentials": options.creds_file,
        "tls_hostname": options.tls_hostname,
        "inbox_prefix": options.inbox_prefix,
        "connect_timeout": options.connect_timeout,
        "reconnect_time_wait": options.reconnect_time_wait,
        "max_reconnect_attempts": options.max_reconnect_attempts,
        "ping_interval": options.ping_interval,
        "max_outstanding_pings": options.max_outstanding_pings,
        "error_cb": state.on_error,
        "disconnected_cb": state.on_disconnected,
        "reconnected_cb": state.on_reconnected,
        # Publisher subjects are checked once by eventwire; acks go to subjects the server chose.
        "skip_subject_validation": True,
    }
    if options.nkey is not None:
        seed = options.nkey if options.nkey_is_seed() else Path(options.nkey).read_text(encoding="utf-8")
        settings["nkeys_seed_str"] = seed.strip()
    try:
        settings["tls"] = options.ssl_context()
    except (OSError, ssl.SSLError) as exc:
        raise ConnectError(f"TLS files cannot be loaded ({type(exc).__name__})", options.shown_servers) from None
    return {k: v for k, v in settings.items() if v is not None}


async def connect(options: ConnectOptions) -> tuple[EventwireClient, ConnectionState]:
    """Connect within ``options.first_connect_deadline``, or raise :class:`ConnectError` saying why."""
    _check_files(options)
    nc = EventwireClient()
    state = ConnectionState(options, nc)
    attempt = asyncio.ensure_future(nc.connect(**_client_settings(options, state)))
    gave_up = asyncio.ensure_future(state.fatal.wait())
    try:
        await asyncio.wait({attempt, gave_up}, timeout=options.first_connect_deadline, return_when="FIRST_COMPLETED")
    finally:
        gave_up.cancel()
        if not attempt.done():
            attempt.cancel()
            with contextlib.suppress(BaseException):
                await attempt
    problem = None if attempt.cancelled() else attempt.exception()
    if attempt.cancelled() or problem is not None:
        with contextlib.suppress(Exception):
            await nc.close()
        raise _first_connect_error(options, state, problem)
    state.connecting = False
    state._note_server()
    return nc, state


def _first_connect_error(
    options: ConnectOptions, state: ConnectionState, problem: BaseException | None
) -> ConnectError:
    failures = [*state.failures, *([problem] if problem is not None else [])]
    deciding = next((f for f in failures if not describe_failure(f)[1]), failures[-1] if failures else None)
    tries = f"{len(failures)} attempt(s)"
    if deciding is None:
        return ConnectError(
            f"no answer within {options.first_connect_deadline:g}s", options.shown_servers, "first_connect_deadline"
        )
    reason, retryable = describe_failure(deciding)
    detail = f"gave up after {options.first_connect_deadline:g}s, {tries}" if retryable else None
    expired_at = _creds_expiry(options.creds_file) if options.creds_file else None
    if reason.startswith("authorization violation") and expired_at is not None and expired_at < time.time():
        # The server answers an expired JWT with a plain authorization violation.
        reason = "the credentials have expired"
        moment = datetime.fromtimestamp(expired_at, UTC)
        detail = f"the user JWT in {options.creds_file} expired at {moment:%Y-%m-%d %H:%M:%S} UTC"
    return ConnectError(options.scrub(reason), options.shown_servers, detail)


def _creds_expiry(path: str) -> float | None:
    """The ``exp`` claim of the user JWT in a creds file, if it has one."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        jwt = lines[next(i for i, line in enumerate(lines) if "BEGIN NATS USER JWT" in line) + 1].strip()
        body = jwt.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (OSError, StopIteration, IndexError, ValueError, binascii.Error):
        return None
    expires = claims.get("exp") if isinstance(claims, dict) else None
    return float(expires) if isinstance(expires, int | float) else None
