"""The connection options every command that connects takes, and how its failures are shown: one line, exit 1."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import nats.errors
import typer

from .._connect_options import ENVIRONMENT, ConnectOptions, resolve_connect_options
from .._errors import ConfigError, EventwireError, SchemaRefused
from ..observability import LogFormat, configure_logging

if TYPE_CHECKING:
    from ..transport import JetStreamTransport

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
PANEL = "Connection"


@dataclass(frozen=True)
class ConnectionFlags:
    """What a command was given on its command line; :meth:`resolve` adds the environment and a context."""

    url: str | None = None
    context: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey: str | None = None
    creds_file: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_hostname: str | None = None
    inbox_prefix: str | None = None

    def resolve(self, base: ConnectOptions | None = None) -> ConnectOptions | None:
        given = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("url", "context")}
        return resolve_connect_options(url=self.url, context=self.context, base=base, **given)

    def require(self, base: ConnectOptions | None = None) -> ConnectOptions:
        """The options, or exit 2 when no server is configured anywhere."""
        options = self.resolve(base)
        if options is None:
            typer.echo(
                f"error: no server: pass --url or --context, or set {ENVIRONMENT['url']} or {ENVIRONMENT['context']}",
                err=True,
            )
            raise typer.Exit(2)
        return options


_FLAGS = {
    "url": ("--url", "NATS server URL(s), comma-separated; nats://, tls://, ws://, wss://."),
    "context": ("--context", "A NATS CLI context: ~/.config/nats/context/NAME.json."),
    "user": ("--user", "User name (with --password)."),
    "password": ("--password", "Password; prefer the environment variable, which ps does not show."),
    "token": ("--token", "Token; prefer the environment variable."),
    "nkey": ("--nkey", "nkey seed file (or the seed itself)."),
    "creds_file": ("--creds", "Credentials file: user JWT and seed."),
    "tls_ca": ("--tls-ca", "CA bundle (PEM) that signed the server certificate."),
    "tls_cert": ("--tls-cert", "Client certificate (PEM), with --tls-key."),
    "tls_key": ("--tls-key", "Client private key (PEM)."),
    "tls_hostname": ("--tls-hostname", "Host name the server certificate must carry."),
    "inbox_prefix": ("--inbox-prefix", "Reply subjects' prefix instead of _INBOX (see eventwire authz)."),
}


def run_connected(connection: ConnectionFlags, name: str, work: Callable[[JetStreamTransport], Awaitable[T]]) -> T:
    """Connect as client ``name``, run ``work`` on the connection, and close it: a connecting command's body."""
    from ..transport import JetStreamTransport

    options = dataclasses.replace(connection.require(), name=name)

    async def main() -> T:
        transport = await JetStreamTransport.connect(options)
        try:
            return await work(transport)
        finally:
            await transport.close()

    return asyncio.run(main())


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def with_connection(*, log_level: str = "WARNING") -> Callable[[F], F]:
    """Give a command the connection options (as ``connection: ConnectionFlags``) and the logging options.

    Failures that a user or operator causes (bad settings, an unreachable or refusing server, a missing
    permission) print one line without secrets and exit 1.
    """

    def decorate(func: F) -> F:
        return _with_logging(_with_connection(func), log_level)

    return decorate


def with_logging(*, log_level: str = "WARNING") -> Callable[[F], F]:
    """Give a command ``--log-level`` (default ``log_level``) and ``--log-format text|json``, applied
    before it runs."""

    def decorate(func: F) -> F:
        return _with_logging(func, log_level)

    return decorate


def _option(name: str, default: object, annotation: object) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _with_options(func: F, name: str | None, added: list[inspect.Parameter], call: Callable[..., Any]) -> F:
    """``func`` with its parameter ``name`` (if any) replaced by the keyword options ``added``;
    ``call(kwargs)`` runs it."""
    original = inspect.signature(func, eval_str=True)
    kept = [p for p in original.parameters.values() if p.name != name]

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        return call(kwargs)

    command.__signature__ = original.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in (*kept, *added)}
    return command  # type: ignore[return-value]


def _with_logging(func: F, default_level: str) -> F:
    level = typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.", rich_help_panel="Logging")
    shape = typer.Option("--log-format", help="text, or json: one object per line.", rich_help_panel="Logging")
    added = [
        _option("log_level", default_level, Annotated[str, level]),
        _option("log_format", LogFormat.text, Annotated[LogFormat, shape]),
    ]

    def call(kwargs: dict[str, Any]) -> Any:
        try:
            configure_logging(kwargs.pop("log_level"), kwargs.pop("log_format"))
        except ConfigError as exc:
            fail(str(exc))
        return func(**kwargs)

    return _with_options(func, None, added, call)


def _with_connection(func: F) -> F:
    added = []
    for name, (flag, text) in _FLAGS.items():
        option = typer.Option(flag, help=f"{text} Or ${ENVIRONMENT[name]}.", rich_help_panel=PANEL, show_default=False)
        added.append(_option(name, None, Annotated[str | None, option]))

    def call(kwargs: dict[str, Any]) -> Any:
        flags = ConnectionFlags(**{name: kwargs.pop(name) for name in _FLAGS})
        try:
            return func(connection=flags, **kwargs)
        except SchemaRefused as exc:
            for change in exc.findings:  # as `schema check` prints them, before the one-line reason
                typer.echo(change, err=True)
            fail(_scrubbed(flags, str(exc)))
        except EventwireError as exc:
            fail(_scrubbed(flags, str(exc)))
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            fail(_scrubbed(flags, f"{type(exc).__name__}: {exc}".rstrip(": ")))

    return _with_options(func, "connection", added, call)


def _scrubbed(flags: ConnectionFlags, text: str) -> str:
    try:
        options = flags.resolve()
    except EventwireError:
        options = None
    secrets = [flags.password, flags.token, flags.nkey]
    for secret in (*(options.secrets() if options is not None else ()), *(s for s in secrets if s)):
        text = text.replace(secret, "***")
    return text.splitlines()[0] if text else "failed"
