"""No secret in any output: every command and a running App at DEBUG, with each credential kind, through a reconnect.

The secrets are the passwords, tokens, nkey seeds, user JWTs and creds seeds of tests/secured.py, plus a database
password; everything the processes print is collected and searched for each of them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from .conftest import POSTGRES, eventually
from .secured import PASSWORD, TOKEN, Secured, seed_of

ROOT = Path(__file__).parent.parent
DB_PASSWORD = "db-Rt73nQx"
APP = "eventwire.demo:inventory_service()"


@dataclass(frozen=True)
class Kind:
    server: str
    environment: dict[str, str]
    arguments: tuple[str, ...]
    secrets: tuple[str, ...]


def kinds(secured: Secured) -> dict[str, Kind]:
    seed = seed_of(secured.nkey)
    creds = (secured.operator.user_jwt, secured.operator.user_seed)
    url = secured.url
    return {
        "password in the URL": Kind(
            "password", {}, ("--url", url("password").replace("//", f"//alice:{PASSWORD}@")), (PASSWORD,)
        ),
        "password in the environment": Kind(
            "password",
            {"EVENTWIRE_USER": "alice", "EVENTWIRE_PASSWORD": PASSWORD},
            ("--url", url("password")),
            (PASSWORD,),
        ),
        "token in the URL": Kind("token", {}, ("--url", url("token").replace("//", f"//{TOKEN}@")), (TOKEN,)),
        "token as a flag": Kind("token", {}, ("--url", url("token"), "--token", TOKEN), (TOKEN,)),
        "nkey seed in the environment": Kind("nkey", {"EVENTWIRE_NKEY": seed}, ("--url", url("nkey")), (seed,)),
        "nkey seed file": Kind("nkey", {}, ("--url", url("nkey"), "--nkey", str(secured.nkey_file)), (seed,)),
        "creds file": Kind(
            "operator", {"EVENTWIRE_CREDS": str(secured.operator.creds)}, ("--url", url("operator")), creds
        ),
    }


class Process:
    """A command whose stdout and stderr go to one file, read while it runs."""

    def __init__(self, log: Path, *args: str, env: dict[str, str]) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "eventwire", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 60) -> str:
        self.process.wait(timeout)
        return self.text()


def _secret_free_environment(kind: Kind) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWIRE_")}
    return {**clean, "COLUMNS": "200", **kind.environment}


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "name",
    [
        "password in the URL",
        "password in the environment",
        "token in the URL",
        "token as a flag",
        "nkey seed in the environment",
        "nkey seed file",
        "creds file",
    ],
)
async def test_no_secret_reaches_any_output(secured: Secured, name: str, tmp_path: Path) -> None:
    kind = kinds(secured)[name]
    server = secured.servers[kind.server]
    env = _secret_free_environment(kind)
    db = make_url(POSTGRES).set(password=DB_PASSWORD).render_as_string(hide_password=False)
    outputs: dict[str, str] = {}

    # The App and the relay both live through the server's restart; then every other command at once.
    app = Process(tmp_path / "run.log", "run", APP, *kind.arguments, "--log-level", "DEBUG", env=env)
    relay = Process(tmp_path / "relay.log", "relay", "--db", db, *kind.arguments, "--log-level", "DEBUG", env=env)
    relay_started = time.monotonic()
    try:
        await eventually(lambda: "inventory started" in app.text(), timeout=30)
        server.kill()
        await asyncio.sleep(1.5)
        server.restart()  # from this thread: the server dies with the thread that started it
        await eventually(lambda: "reconnected to" in app.text(), timeout=30)
        await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - relay_started)))
    finally:
        for process in (app, relay):
            process.process.send_signal(signal.SIGTERM)
        outputs["run, through a reconnect"] = await asyncio.to_thread(app.wait)
        outputs["relay"] = await asyncio.to_thread(relay.wait)

    commands = {
        "demo": ["demo", "--orders", "20", "--log-level", "DEBUG", *kind.arguments],
        "dlq list": ["dlq", "list", *kind.arguments],
        "dlq show": ["dlq", "show", "DLQ-inventory:1", *kind.arguments],
        "dlq replay": ["dlq", "replay", "--service", "nobody", *kind.arguments],
        "dlq purge": ["dlq", "purge", "--service", "nobody", "--yes", *kind.arguments],
        # asyncapi lists the servers in the document it writes; it takes the URL only.
        "asyncapi": ["asyncapi", APP, *kind.arguments[:2]],
    }

    async def run(label: str, command: list[str]) -> tuple[str, float]:
        started = time.monotonic()
        log = tmp_path / f"{label.replace(' ', '-')}.log"
        text = await asyncio.to_thread(Process(log, *command, env=env).wait)
        return text, time.monotonic() - started

    ran = await asyncio.gather(*(run(label, command) for label, command in commands.items()))
    outputs.update({label: text for label, (text, _) in zip(commands, ran, strict=True)})
    assert all(seconds < 60 for _, seconds in ran), ran
    assert "reconnected to" in outputs["run, through a reconnect"]
    assert "eventwire demo on" in outputs["demo"]
    assert '"servers"' in outputs["asyncapi"]
    lines = sum(len(text.splitlines()) for text in outputs.values())
    secrets = (*kind.secrets, DB_PASSWORD)
    found = [(label, secret[:6]) for label, text in outputs.items() for secret in secrets if secret in text]
    print(f"{name}: {len(outputs)} commands, {lines} lines of output, {len(secrets)} secrets, found {len(found)}")
    assert found == []
    assert "Traceback" not in "".join(outputs.values())
