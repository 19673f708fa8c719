from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventwire import ServerError
from eventwire.server import EmbeddedServer, find_binary


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose: it holds no port and no store.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    give_up_at = time.monotonic() + timeout
    while time.monotonic() < give_up_at:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_binary_comes_from_the_wheel() -> None:
    binary = find_binary()
    assert binary.name == "nats-server"
    assert Path(sys.executable).parent == binary.parent or "site-packages" not in str(binary)


def test_server_starts_accepts_connections_and_stops(tmp_path: Path) -> None:
    server = EmbeddedServer(store_dir=tmp_path / "store").start()
    assert server.running and server.port
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as conn:
        assert conn.recv(4096).startswith(b"INFO ")
    pid = server.pid
    assert pid is not None
    server.stop()
    assert not server.running
    assert wait_dead(pid)
    assert (tmp_path / "store").exists()  # a given store is kept


def test_temporary_store_is_removed_on_stop() -> None:
    server = EmbeddedServer().start()
    store = server.store_dir
    assert store.exists()
    server.stop()
    assert not store.exists()


def test_killed_server_restarts_on_the_same_port(tmp_path: Path) -> None:
    server = EmbeddedServer(store_dir=tmp_path).start()
    port = server.port
    server.kill()
    assert not server.running
    server.restart()
    assert server.running and server.port == port
    server.stop()


def test_port_in_use_is_a_server_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedServer(port=taken.getsockname()[1], startup_timeout=5)
        with pytest.raises(ServerError, match="did not start"):
            server.start()
        server.stop()


OWNER = """
import sys, time
from eventwire.server import EmbeddedServer
server = EmbeddedServer().start()
print(server.pid, flush=True)
if sys.argv[1] == "raise":
    raise RuntimeError("owner crashed")
time.sleep(60)
"""


@pytest.mark.parametrize("ending", ["raise", "sigint", "sigkill"])
def test_server_never_outlives_its_owner(ending: str) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, ending], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert owner.stdout is not None
        server_pid = int(owner.stdout.readline())
        if ending == "sigint":
            owner.send_signal(signal.SIGINT)  # Ctrl-C in a terminal
        elif ending == "sigkill":
            owner.kill()
        owner.wait(15)
        assert wait_dead(server_pid), f"nats-server {server_pid} outlived its owner ({ending})"
    finally:
        owner.kill()
