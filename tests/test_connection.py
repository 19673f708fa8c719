"""Connections on secured nats-servers: every credential kind, every failure a typed ConnectError, no secret shown."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nkeys
import pytest

from eventwire import App, ConfigError, ConnectError, ConnectOptions, Stream
from eventwire import _connection as connection
from eventwire._connect_options import redact_url, resolve_connect_options
from eventwire.server import EmbeddedServer
from eventwire.testing import running
from eventwire.transport import JetStreamTransport

from .conftest import unique
from .events import OrderCreated
from .secured import PASSWORD, TOKEN, Secured, creds_text, make_operator, new_keypair, seed_of, user_jwt


def _context(tmp: Path, name: str, settings: dict[str, str]) -> dict[str, str]:
    folder = tmp / "config" / "nats" / "context"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"description": "tests", **settings}))
    return {"XDG_CONFIG_HOME": str(tmp / "config")}


def _good(secured: Secured, kind: str) -> ConnectOptions:
    certs = secured.certs
    options: dict[str, Callable[[], ConnectOptions]] = {
        "tls": lambda: ConnectOptions.from_url(secured.url("tls", "tls"), tls_ca=str(certs.ca)),
        "mutual tls": lambda: ConnectOptions.from_url(
            secured.url("mtls"), tls_ca=str(certs.ca), tls_cert=str(certs.client_cert), tls_key=str(certs.client_key)
        ),
        "user and password": lambda: ConnectOptions.from_url(secured.url("password"), user="alice", password=PASSWORD),
        "user info in the URL": lambda: ConnectOptions.from_url(
            secured.url("password").replace("//", f"//alice:{PASSWORD}@")
        ),
        "token": lambda: ConnectOptions.from_url(secured.url("token"), token=TOKEN),
        "token in the URL": lambda: ConnectOptions.from_url(secured.url("token").replace("//", f"//{TOKEN}@")),
        "nkey seed file": lambda: ConnectOptions.from_url(secured.url("nkey"), nkey=str(secured.nkey_file)),
        "nkey seed": lambda: ConnectOptions.from_url(secured.url("nkey"), nkey=seed_of(secured.nkey)),
        "creds file": lambda: ConnectOptions.from_url(secured.url("operator"), creds_file=str(secured.operator.creds)),
    }
    return options[kind]()


KINDS = [
    "tls",
    "mutual tls",
    "user and password",
    "user info in the URL",
    "token",
    "token in the URL",
    "nkey seed file",
    "nkey seed",
    "creds file",
]


async def _round_trip(options: ConnectOptions) -> list[str]:
    """An App on these options provisions a stream, publishes an event and handles it."""
    name = unique("SEC")
    stream = Stream(name, (f"{name}.>",))
    seen: list[str] = []
    app = App(unique("sec"))

    @app.handler(OrderCreated, stream=stream)
    async def collect(event: OrderCreated) -> None:
        seen.append(event.order_id)

    transport = await JetStreamTransport.connect(options)
    async with running(app, transport) as probe:
        await probe.publish(OrderCreated(order_id="o-1"), subject=f"{name}.created")
    return seen


@pytest.mark.parametrize("kind", KINDS)
async def test_connects_with_each_credential_kind(secured: Secured, kind: str) -> None:
    assert await _round_trip(_good(secured, kind)) == ["o-1"]


async def test_connects_through_a_nats_cli_context(secured: Secured, tmp_path: Path) -> None:
    certs = secured.certs
    settings = {
        "url": secured.url("mtls", "tls"),
        "ca": str(certs.ca),
        "cert": str(certs.client_cert),
        "key": str(certs.client_key),
    }
    environ = _context(tmp_path, "prod", settings)
    options = resolve_connect_options(context="prod", environ=environ)
    assert options is not None
    assert await _round_trip(options) == ["o-1"]
    environ = _context(tmp_path, "creds", {"url": secured.url("operator"), "creds": str(secured.operator.creds)})
    by_environment = resolve_connect_options(environ={**environ, "EVENTWIRE_CONTEXT": "creds"})
    assert by_environment is not None
    assert await _round_trip(by_environment) == ["o-1"]


def _bad(secured: Secured, case: str, tmp: Path) -> tuple[Callable[[], ConnectOptions], str]:
    """Options that must fail, and the reason the ConnectError must give."""
    certs, other = secured.certs, secured.other_certs
    stranger = new_keypair(nkeys.PREFIX_BYTE_USER)
    expired_user = new_keypair(nkeys.PREFIX_BYTE_USER)
    expired = tmp / "expired.creds"
    expired.write_text(
        creds_text(
            user_jwt(secured.operator.account, expired_user, expires=int(time.time()) - 60), seed_of(expired_user)
        )
    )
    foreign = make_operator(tmp / "foreign")
    denied = "authorization violation"
    cases: dict[str, tuple[Callable[[], ConnectOptions], str]] = {
        "wrong password": (
            lambda: ConnectOptions.from_url(secured.url("password"), user="alice", password="not-it"),
            denied,
        ),
        "no credentials": (lambda: ConnectOptions.from_url(secured.url("password")), denied),
        "wrong token": (lambda: ConnectOptions.from_url(secured.url("token"), token="tok-wrong"), denied),
        "unknown nkey": (lambda: ConnectOptions.from_url(secured.url("nkey"), nkey=seed_of(stranger)), denied),
        "creds of another operator": (
            lambda: ConnectOptions.from_url(secured.url("operator"), creds_file=str(foreign.creds)),
            denied,
        ),
        "expired creds": (
            lambda: ConnectOptions.from_url(secured.url("operator"), creds_file=str(expired)),
            "the credentials have expired",
        ),
        "unknown certificate authority": (
            lambda: ConnectOptions.from_url(secured.url("tls", "tls"), tls_ca=str(other.ca)),
            "unknown authority",
        ),
        "no CA at all": (lambda: ConnectOptions.from_url(secured.url("tls", "tls")), "unknown authority"),
        "host name mismatch": (
            lambda: ConnectOptions.from_url(secured.url("tls"), tls_ca=str(certs.ca), tls_hostname="elsewhere.example"),
            "does not match its host name",
        ),
        "mutual TLS without a client certificate": (
            lambda: ConnectOptions.from_url(secured.url("mtls"), tls_ca=str(certs.ca)),
            "requires a client certificate",
        ),
        "a client certificate of another CA": (
            lambda: ConnectOptions.from_url(
                secured.url("mtls"),
                tls_ca=str(certs.ca),
                tls_cert=str(other.client_cert),
                tls_key=str(other.client_key),
            ),
            "refused the client certificate",
        ),
        "refused port": (lambda: ConnectOptions.from_url("nats://127.0.0.1:1"), "connection refused"),
        "unknown host": (lambda: ConnectOptions.from_url("nats://no-such-host.invalid:4222"), "name resolution"),
        "malformed URL": (lambda: ConnectOptions.from_url(f"nats//alice:{PASSWORD}@bad url"), "malformed server URL"),
        "missing creds file": (
            lambda: ConnectOptions.from_url(secured.url("operator"), creds_file=str(tmp / "none.creds")),
            "creds_file",
        ),
    }
    return cases[case]


FAILURES = [
    "wrong password",
    "no credentials",
    "wrong token",
    "unknown nkey",
    "creds of another operator",
    "expired creds",
    "unknown certificate authority",
    "no CA at all",
    "host name mismatch",
    "mutual TLS without a client certificate",
    "a client certificate of another CA",
    "refused port",
    "unknown host",
    "malformed URL",
    "missing creds file",
]


@pytest.mark.parametrize("case", FAILURES)
async def test_each_failure_is_a_connect_error_with_its_reason(secured: Secured, case: str, tmp_path: Path) -> None:
    build, reason = _bad(secured, case, tmp_path)
    deadline = 2.0
    started = time.monotonic()
    with pytest.raises(ConnectError) as caught:
        options = build()
        await JetStreamTransport.connect(dataclasses.replace(options, first_connect_deadline=deadline))
    elapsed = time.monotonic() - started
    print(f"{case}: {caught.value} ({elapsed:.2f}s)")
    assert reason in str(caught.value)
    assert elapsed < deadline + 1.0
    for secret in (PASSWORD, TOKEN, "not-it", "tok-wrong"):
        assert secret not in str(caught.value)
    if case not in ("refused port", "unknown host"):
        assert elapsed < deadline  # refused credentials and TLS end the first connect at once


def test_redact_url_hides_user_info_even_in_malformed_urls() -> None:
    assert redact_url("nats://alice:pw@host:4222") == "nats://***@host:4222"
    assert redact_url("tls://TOKEN@host:4222,nats://h2:4222") == "tls://***@host:4222,nats://h2:4222"
    assert redact_url("nats//alice:pw@host") == "***@host"
    assert redact_url("postgresql+asyncpg://u:p@db/x") == "postgresql+asyncpg://***@db/x"
    assert redact_url("nats://host:4222") == "nats://host:4222"


def test_options_keep_secrets_out_of_repr_and_errors(tmp_path: Path) -> None:
    seed = seed_of(new_keypair(nkeys.PREFIX_BYTE_USER))
    shown = [
        repr(ConnectOptions.from_url(f"nats://alice:{PASSWORD}@h:1,nats://{TOKEN}@h:2")),
        repr(ConnectOptions.from_url("nats://h:1", user="alice", password=PASSWORD)),
        repr(ConnectOptions.from_url("nats://h:1", nkey=seed)),
    ]
    failures: tuple[Callable[[], ConnectOptions], ...] = (
        # A mistyped character in the middle (the last one partly holds padding bits the checksum does not see).
        lambda: ConnectOptions.from_url("nats://h:1", nkey=seed[:20] + ("A" if seed[20] != "A" else "B") + seed[21:]),
        lambda: ConnectOptions.from_url(f"http://alice:{PASSWORD}@h:1"),
        lambda: ConnectOptions.from_url(f"nats://alice:{PASSWORD}@h:notaport"),
    )
    for bad in failures:
        with pytest.raises((ConfigError, ConnectError)) as caught:
            bad()
        shown.append(str(caught.value))
    for text in shown:
        assert PASSWORD not in text and TOKEN not in text and seed[21:] not in text, text
    assert "***@h:1" in shown[0]


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"password": "x"}, "password"),
        ({"user": "a", "token": "t"}, "one way"),
        ({"tls_cert": "c.pem"}, "tls_key"),
        ({"ping_interval": 0}, "ping_interval"),
        ({"first_connect_deadline": -1}, "first_connect_deadline"),
        ({"max_outstanding_pings": 0}, "max_outstanding_pings"),
    ],
)
def test_invalid_options_name_the_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ConnectOptions.from_url("nats://h:1", **settings)


def test_flags_beat_the_environment_which_beats_a_context(tmp_path: Path) -> None:
    environ = {
        **_context(tmp_path, "ops", {"url": "nats://from-context:1", "creds": "~/ops.creds", "ca": "/etc/ca.pem"}),
        "EVENTWIRE_CONTEXT": "ops",
        "EVENTWIRE_URL": "nats://from-env:1",
        "EVENTWIRE_TOKEN": "env-token",
    }
    from_env = resolve_connect_options(environ=environ)
    assert from_env is not None
    # The identity comes whole from the environment; TLS settings it lacks still come from the context.
    assert (from_env.servers, from_env.token, from_env.creds_file) == (("nats://from-env:1",), "env-token", None)
    assert from_env.tls_ca == "/etc/ca.pem"
    from_context = resolve_connect_options(
        environ={k: v for k, v in environ.items() if k not in ("EVENTWIRE_TOKEN", "EVENTWIRE_URL")}
    )
    assert from_context is not None
    assert (from_context.servers, from_context.token) == (("nats://from-context:1",), None)
    assert from_context.creds_file == str(Path("~/ops.creds").expanduser())
    flagged = resolve_connect_options(url="nats://flag:1", token="flag-token", environ=environ)
    assert flagged is not None
    assert (flagged.servers, flagged.token) == (("nats://flag:1",), "flag-token")
    assert resolve_connect_options(environ={}) is None
    with pytest.raises(ConfigError, match="no server"):
        resolve_connect_options(token="t", environ={})
    with pytest.raises(ConfigError, match="not found"):
        resolve_connect_options(context="missing", environ=environ)


async def test_a_lost_connection_is_reported_once_then_summarized(
    fresh_server: EmbeddedServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "DOWN_SUMMARY_INTERVAL", 1.0)
    caplog.set_level(logging.DEBUG, logger="eventwire")
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(fresh_server.url, reconnect_time_wait=0.1))
    try:
        fresh_server.kill()
        await asyncio.sleep(3.5)
        fresh_server.restart()
        for _ in range(100):
            if transport.connected:
                break
            await asyncio.sleep(0.05)
        assert transport.connected
    finally:
        await transport.close()
    records = [r for r in caplog.records if r.name == "eventwire.connection"]
    above_debug = [(r.levelname, r.getMessage()) for r in records if r.levelno > logging.DEBUG]
    print(*above_debug, sep="\n")
    lost = f"connection to {fresh_server.url} lost (the server closed the connection); reconnecting"
    assert above_debug[0] == ("WARNING", lost)
    summaries = [m for level, m in above_debug if "still disconnected" in m]
    assert 2 <= len(summaries) <= 4  # one a second while down, not one per attempt
    assert "connection refused" in summaries[-1]
    assert above_debug[-1][0] == "INFO" and "reconnected to nats://127.0.0.1" in above_debug[-1][1]
    assert len(above_debug) == 2 + len(summaries)
    assert not any(r.exc_info for r in caplog.records)
