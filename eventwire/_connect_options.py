"""How to reach NATS: servers, credentials, TLS and timeouts, from code, the environment or a NATS CLI context.

Secrets (URL user info, passwords, tokens, nkey seeds, creds files) stay out of
``repr``, error messages and logs: every URL shown goes through
:func:`redact_url`, and text from libraries through :meth:`ConnectOptions.scrub`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ._errors import MALFORMED_URL, ConfigError, ConnectError

# The environment variables every entry point reads (code without options, and each CLI command).
ENVIRONMENT = {
    "url": "EVENTWIRE_URL",
    "context": "EVENTWIRE_CONTEXT",
    "user": "EVENTWIRE_USER",
    "password": "EVENTWIRE_PASSWORD",
    "token": "EVENTWIRE_TOKEN",
    "nkey": "EVENTWIRE_NKEY",
    "creds_file": "EVENTWIRE_CREDS",
    "tls_ca": "EVENTWIRE_TLS_CA",
    "tls_cert": "EVENTWIRE_TLS_CERT",
    "tls_key": "EVENTWIRE_TLS_KEY",
    "tls_hostname": "EVENTWIRE_TLS_HOSTNAME",
    "inbox_prefix": "EVENTWIRE_INBOX_PREFIX",
}
CREDENTIALS = (
    "user",
    "password",
    "token",
    "nkey",
    "creds_file",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "tls_hostname",
    "inbox_prefix",
)
# Who the client is: taken from the first source that names one, never mixed across sources; a user's
# password may come from a later one (a --user flag with the password in the environment, out of ps).
IDENTITY = ("user", "token", "nkey", "creds_file")
SCHEMES = ("nats", "tls", "ws", "wss")
_SEED = re.compile(r"^S[A-Z][A-Z2-7]{56}$")
_CONTEXT_NAME = re.compile(r"^[A-Za-z0-9_.@-]+$")
_INBOX_PREFIX = re.compile(r"^[^\s.*>]+(\.[^\s.*>]+)*$")


def redact_url(url: str) -> str:
    """``url`` with its user info (user, password or token) replaced by ``***``; lists stay lists.

    Errs towards hiding: everything before the last ``@`` of the address goes, even in a malformed URL.
    """
    if "," in url:
        return ",".join(redact_url(part) for part in url.split(","))
    text = url.strip()
    prefix = text[: text.index("://") + 3] if "://" in text else ""
    rest = text[len(prefix) :]
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return prefix + rest


class ServerURL(NamedTuple):
    scheme: str
    host: str
    port: int | None
    username: str | None
    password: str | None


def parse_server_url(url: str) -> ServerURL:
    """Split a NATS server URL (``host:port`` means ``nats://host:port``); ConnectError when malformed."""
    from urllib.parse import urlsplit

    text = url.strip()
    shown = redact_url(text)

    def malformed(why: str) -> ConnectError:
        return ConnectError(MALFORMED_URL, (shown,), why)

    if not text or any(c.isspace() for c in text):
        raise malformed("empty or holds spaces")
    if "://" not in text:
        if "/" in text:
            raise malformed("expected scheme://host:port")
        text = f"nats://{text}"
    parts = urlsplit(text)
    if parts.scheme not in SCHEMES:
        raise malformed(f"scheme must be one of {', '.join(SCHEMES)}")
    try:
        port = parts.port
    except ValueError:
        raise malformed("the port is not a number between 0 and 65535") from None
    if not parts.hostname:
        raise malformed("no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise malformed("a server URL has no path, query or fragment")
    return ServerURL(parts.scheme, parts.hostname, port, parts.username, parts.password)


def split_servers(url: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in url.split(",") if part.strip())


@dataclass(frozen=True)
class ConnectOptions:
    """How to reach a NATS cluster; validated when built, secrets kept out of ``repr``.

    ``nkey`` is a seed file path or the seed itself (``SU…``), held in memory.
    ``inbox_prefix`` replaces ``_INBOX`` in the subjects replies come back on, so a
    service can be granted its own (``eventwire authz`` prints them).
    ``creds_file`` holds a user JWT and its seed. ``tls_ca``, ``tls_cert`` and
    ``tls_key`` are PEM files; ``tls`` an SSL context built in code instead.

    The first connect gives up after ``first_connect_deadline`` seconds (at once
    on refused credentials or TLS); after that the client reconnects forever.
    A server that stops answering is noticed after ``max_outstanding_pings``
    unanswered pings ``ping_interval`` seconds apart, and another node is tried.
    """

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    name: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    nkey: str | None = field(default=None, repr=False)
    creds_file: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_hostname: str | None = None
    tls: ssl.SSLContext | None = field(default=None, compare=False)
    inbox_prefix: str | None = None
    connect_timeout: float = 2.0
    first_connect_deadline: float = 10.0
    reconnect_time_wait: float = 0.5
    max_reconnect_attempts: int = -1
    ping_interval: float = 3.0
    max_outstanding_pings: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.servers, str):
            object.__setattr__(self, "servers", split_servers(self.servers))
        if not self.servers:
            raise ConfigError("ConnectOptions.servers: name at least one server URL")
        for url in self.servers:
            parse_server_url(url)
        for name in ("connect_timeout", "first_connect_deadline", "reconnect_time_wait", "ping_interval"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ConnectOptions.{name} must be positive")
        if self.max_outstanding_pings < 1:
            raise ConfigError("ConnectOptions.max_outstanding_pings must be at least 1")
        if self.max_reconnect_attempts == 0 or self.max_reconnect_attempts < -1:
            raise ConfigError("ConnectOptions.max_reconnect_attempts must be positive, or -1 for forever")
        if self.password is not None and self.user is None:
            raise ConfigError("ConnectOptions.password needs ConnectOptions.user")
        kinds = [k for k in ("user", "token", "nkey", "creds_file") if getattr(self, k) is not None]
        if len(kinds) > 1:
            raise ConfigError(f"ConnectOptions: choose one way to authenticate, not {' and '.join(kinds)}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("ConnectOptions.tls_cert and tls_key go together (client certificate and its key)")
        if self.tls is not None and (self.tls_ca or self.tls_cert):
            raise ConfigError("ConnectOptions.tls is an SSL context built in code: leave tls_ca and tls_cert unset")
        if self.inbox_prefix is not None and not _INBOX_PREFIX.match(self.inbox_prefix):
            raise ConfigError(
                f"ConnectOptions.inbox_prefix {self.inbox_prefix!r}: subject tokens, no wildcards (e.g. _INBOX_orders)"
            )
        if self.nkey is not None and self.nkey_is_seed() and not _valid_seed(self.nkey):
            raise ConfigError("ConnectOptions.nkey: looks like an nkey seed but is not a valid one")

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ConnectOptions:
        """Options for a comma-separated list of server URLs."""
        return cls(servers=split_servers(url), **kwargs)

    def nkey_is_seed(self) -> bool:
        """Whether ``nkey`` holds the seed itself rather than a path to a seed file."""
        return self.nkey is not None and bool(_SEED.match(self.nkey.strip()))

    @property
    def shown_servers(self) -> tuple[str, ...]:
        return tuple(redact_url(url) for url in self.servers)

    @property
    def uses_tls(self) -> bool:
        return (
            self.tls is not None
            or self.tls_ca is not None
            or self.tls_cert is not None
            or any(parse_server_url(url).scheme in ("tls", "wss") for url in self.servers)
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context to connect with: ``tls``, one built from the PEM files, or None for nats-py's default."""
        if self.tls is not None:
            return self.tls
        if self.tls_ca is None and self.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca)
        if self.tls_cert is not None:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context

    def secrets(self) -> tuple[str, ...]:
        """Every secret these options carry or point to, for scrubbing text that came from elsewhere."""
        found = [self.password, self.token]
        for url in self.servers:
            parts = parse_server_url(url)
            found += [parts.username, parts.password]
        if self.nkey is not None:
            found.append(self.nkey.strip() if self.nkey_is_seed() else _read_quietly(self.nkey))
        if self.creds_file is not None:
            found += _creds_parts(_read_quietly(self.creds_file))
        return tuple(s.strip() for s in found if s and len(s.strip()) >= 3)

    def scrub(self, text: str) -> str:
        """``text`` with every secret of these options replaced by ``***``."""
        for secret in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        auth = next(
            (label for name, label in _AUTH_LABELS if getattr(self, name) is not None),
            "url user info" if any(parse_server_url(u).username for u in self.servers) else "none",
        )
        return (
            f"ConnectOptions(servers={self.shown_servers!r}, name={self.name!r}, auth={auth!r}, "
            f"tls={self.uses_tls}, first_connect_deadline={self.first_connect_deadline}, "
            f"ping_interval={self.ping_interval}, max_outstanding_pings={self.max_outstanding_pings})"
        )


_AUTH_LABELS = (("creds_file", "creds file"), ("nkey", "nkey"), ("token", "token"), ("user", "user/password"))


def _valid_seed(seed: str) -> bool:
    """Whether ``seed`` decodes as an nkey seed with a matching checksum (nkeys itself skips that check)."""
    import base64
    import binascii

    import nkeys

    text = seed.strip()
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
        nkeys.from_seed(bytearray(text.encode()))
    except (binascii.Error, nkeys.NkeysError):
        return False
    return bytes(raw[-2:]) == bytes(nkeys.crc16_checksum(raw[:-2]))


def _read_quietly(path: str) -> str | None:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _creds_parts(text: str | None) -> list[str | None]:
    """The JWT and the seed inside a creds file."""
    if not text:
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith(("---", "*"))]


def context_path(name: str, environ: Mapping[str, str] | None = None) -> Path:
    """Where the NATS CLI keeps context ``name``: ``$XDG_CONFIG_HOME/nats/context/NAME.json``."""
    env = os.environ if environ is None else environ
    if not _CONTEXT_NAME.match(name) or name in (".", ".."):
        raise ConfigError(f"NATS context name {name!r} may hold only letters, digits, '.', '_', '@' and '-'")
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path(env.get("HOME", "~")) / ".config"
    return (base / "nats" / "context" / f"{name}.json").expanduser()


def read_context(name: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings of a NATS CLI context, as this module's field names (url, user, creds_file, …)."""
    import json

    path = context_path(name, environ)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"NATS context {name!r} not found: no {path}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"NATS context {name!r}: cannot read {path}: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"NATS context {name!r}: {path} is not a JSON object")
    fields = {
        "url": "url",
        "user": "user",
        "password": "password",
        "token": "token",
        "nkey": "nkey",
        "creds": "creds_file",
        "ca": "tls_ca",
        "cert": "tls_cert",
        "key": "tls_key",
    }
    settings: dict[str, str] = {}
    for theirs, ours in fields.items():
        value = data.get(theirs)
        if isinstance(value, str) and value.strip():
            settings[ours] = str(Path(value).expanduser()) if ours in _PATHS else value.strip()
    return settings


_PATHS = {"nkey", "creds_file", "tls_ca", "tls_cert", "tls_key"}


def resolve_connect_options(
    *,
    url: str | None = None,
    context: str | None = None,
    environ: Mapping[str, str] | None = None,
    base: ConnectOptions | None = None,
    **given: str | None,
) -> ConnectOptions | None:
    """Options from explicit values (CLI flags), else ``EVENTWIRE_*`` variables, else a NATS CLI context.

    ``given`` holds :data:`CREDENTIALS` by name. The identity (user/password, token, nkey or creds)
    comes whole from the first of those sources that names one; each TLS setting from the first that
    has it. Returns None when no server is configured anywhere (then an App starts an embedded
    server); ``base`` supplies the other settings.
    """
    unknown = set(given) - set(CREDENTIALS)
    if unknown:
        raise TypeError(f"unknown connection settings: {', '.join(sorted(unknown))}")
    env = os.environ if environ is None else environ
    context = context or env.get(ENVIRONMENT["context"]) or None
    from_context = read_context(context, env) if context else {}
    sources: list[dict[str, str]] = [
        {name: value for name, value in {"url": url, **given}.items() if value is not None},
        {name: env[variable] for name, variable in ENVIRONMENT.items() if env.get(variable)},
        from_context,
    ]
    identity = next((source for source in sources if any(name in source for name in IDENTITY)), {})
    settings: dict[str, Any] = {name: identity[name] for name in IDENTITY if name in identity}
    for name in ("url", *CREDENTIALS):
        if name == "password" and "user" not in settings:
            continue
        if name not in IDENTITY:
            value = next((source[name] for source in sources if name in source), None)
            if value is not None:
                settings[name] = value
    for name in _PATHS & settings.keys():
        if not _SEED.match(settings[name]):
            settings[name] = str(Path(settings[name]).expanduser())
    server_url = settings.pop("url", None)
    if server_url is None:
        if base is not None:
            return dataclasses.replace(base, **settings) if settings else base
        if settings:
            names = ", ".join(sorted(settings))
            raise ConfigError(f"connection settings ({names}) given but no server: pass --url or --context")
        return None
    options = base or ConnectOptions()
    return dataclasses.replace(options, servers=split_servers(server_url), **settings)
