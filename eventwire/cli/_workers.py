"""``eventwire run --workers N``: N processes of one App sharing its durables, under a supervisor.

The supervisor restarts a worker that dies (with backoff), passes one SIGTERM on
to every worker when it gets SIGTERM or Ctrl-C, and exits 0 when all of them
shut down cleanly. Workers run in their own process group, so a Ctrl-C in the
terminal reaches them once, through the supervisor (a second signal would make
them exit at once), and they get SIGTERM should the supervisor die.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from .._app import App
from .._backoff import Backoff
from .._connect_options import ENVIRONMENT
from ..observability._logs import JsonFormatter
from ._connect import ConnectionFlags, fail

logger = logging.getLogger("eventwire.workers")

RESTART_BACKOFF = Backoff(initial=0.5, multiplier=2.0, maximum=30.0, jitter=0.2)
# A worker that ran this long before dying starts its restart backoff afresh.
STEADY_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1
WORKER_ENV = "EVENTWIRE_WORKER"


def refuse_ordered_handlers(service: App) -> None:
    """Exit 2 when a handler orders its events on one shared durable: several workers would break that order.

    A partitioned handler is fine: each of its partitions is pinned to one worker at a time.
    """
    for spec in service.handlers:
        if spec.ordered_by is not None and not spec.partitions:
            fail(
                f"handler {spec.name} has ordered_by={spec.ordered_by!r}: workers sharing its durable would handle "
                "one key's events in parallel; run it with --workers 1, or partition its stream "
                "(Stream(partitions=N) with ordered_by='key')",
                code=2,
            )


@dataclass
class _Worker:
    number: int
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    failures: int = 0


class Supervisor:
    def __init__(self, command_for: Callable[[int], Sequence[str]], environment: dict[str, str], count: int) -> None:
        self._command_for = command_for
        self._environment = environment
        self._workers = [_Worker(number) for number in range(count)]
        self._stopping = asyncio.Event()
        self._signals = 0
        self._unclean: list[str] = []

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            await asyncio.gather(*(self._keep(worker) for worker in self._workers))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        if self._unclean:
            logger.error("workers did not shut down cleanly: %s", "; ".join(self._unclean))
            return 1
        logger.info("all %d workers shut down cleanly", len(self._workers))
        return 0

    def _on_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info("stopping %d workers gracefully (a second signal kills them)", len(self._workers))
            self._stopping.set()
            self._send(signal.SIGTERM)
        else:
            self._send(signal.SIGKILL)

    def _send(self, sig: signal.Signals) -> None:
        for worker in self._workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(sig)

    async def _keep(self, worker: _Worker) -> None:
        """Run one worker until the supervisor stops; restart it, with backoff, when it dies."""
        while not self._stopping.is_set():
            worker.process = await asyncio.create_subprocess_exec(
                *self._command_for(worker.number),
                env={**self._environment, WORKER_ENV: str(worker.number)},
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            worker.started_at = time.monotonic()
            logger.info("worker %d started (pid %d)", worker.number, worker.process.pid)
            code = await worker.process.wait()
            if self._stopping.is_set():
                if code != 0:
                    self._unclean.append(f"worker {worker.number} {_how(code)}")
                return
            if code == 0:
                logger.info(
                    "worker %d (pid %d) exited on its own; not restarting it", worker.number, worker.process.pid
                )
                return
            worker.failures = 1 if time.monotonic() - worker.started_at > STEADY_SECONDS else worker.failures + 1
            delay = RESTART_BACKOFF.delay(worker.failures)
            logger.warning(
                "worker %d (pid %d) %s; restarting it in %.1fs",
                worker.number,
                worker.process.pid,
                _how(code),
                delay,
            )
            try:
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            except TimeoutError:
                pass


def _how(code: int) -> str:
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the supervisor dies (Linux; elsewhere the worker outlives it)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def worker_command(app: str, app_dir: str | None, metrics: tuple[int, str] | None) -> list[str]:
    """``eventwire run`` for one worker: the same App, logging as the supervisor logs, its own metrics port."""
    root = logging.getLogger()
    json_logs = any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
    command = [sys.executable, "-m", "eventwire", "run", app, "--log-level", logging.getLevelName(root.level)]
    command += ["--log-format", "json" if json_logs else "text"]
    if app_dir is not None:
        command += ["--app-dir", app_dir]
    if metrics is not None:
        command += ["--metrics-port", str(metrics[0]), "--metrics-host", metrics[1]]
    return command


def worker_environment(connection: ConnectionFlags, url: str | None) -> dict[str, str]:
    """The supervisor's environment plus its connection flags, so secrets stay out of the workers' command lines."""
    environment = dict(os.environ)
    for flag in fields(connection):
        value = getattr(connection, flag.name)
        if value is not None:
            environment[ENVIRONMENT[flag.name]] = str(value)
    if url is not None:
        environment[ENVIRONMENT["url"]] = url
    return environment
