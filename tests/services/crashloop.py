"""Supervisor for the kill-after-commit test: forks billing consumers until the work is done.

``python -m tests.services.crashloop NATS_URL KILLS`` (plus the billing service's environment).
Imports happen once, here; each child is forked and runs the billing App. The first KILLS children
SIGKILL themselves right after a commit, before its ack: every other one after its first commit, the
rest after their second, so acks and kills interleave. A killing child acks at most one event, so
the work cannot finish before the last kill. Later children run until the durable has nothing left
and exit 0. Prints the number of children killed. The supervisor opens no connection and runs no
thread, so forking it is safe.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import nats

from tests.services import billing
from tests.services.billing import STREAM, app


async def _consume_until_done(url: str) -> None:
    await app.start(url)
    nc = await nats.connect(url)
    try:
        while True:
            await asyncio.sleep(0.2)
            info = await nc.jetstream().consumer_info(STREAM.name, "billing")
            if info.num_pending == 0 and info.num_ack_pending == 0:
                break
    finally:
        await nc.close()
        await app.stop()


def main() -> None:
    url = sys.argv[1]
    kills = int(sys.argv[2])
    killed = 0
    for _ in range(kills + 100):
        billing.kill_at_commit = 1 + killed % 2 if killed < kills else None
        child = os.fork()
        if child == 0:
            asyncio.run(_consume_until_done(url))
            os._exit(0)
        _, status = os.waitpid(child, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            killed += 1
            continue
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            print(killed, flush=True)
            return
        raise SystemExit(f"consumer ended with status {status}")
    raise SystemExit("too many restarts")


if __name__ == "__main__":
    main()
