"""App consumption across processes: ``eventwire run --workers N`` draining a prefilled stream.

The durable is created the way the App declares it and paused before the workers start, so their start-up
is not timed: the clock runs from resuming it until the ack floor reaches the last event.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

import nats

from ._common import STREAM, busy_since, connect_transport, cpu_ticks, prefill
from .workers_app import app

ROOT = Path(__file__).parent.parent
# Busy cores of the whole machine during each run, [(workers, cores)]: the profile of a ratio that falls short.
busy_cores: list[tuple[int, float]] = []


async def app_rate(url: str, count: int, workers: int) -> float:
    await prefill(url, count)
    durable = app.handlers[0].durable
    transport = await connect_transport(url)
    nc = await nats.connect(url.split(","))
    js = nc.jetstream()
    try:
        await transport.ensure_durable(durable)
        await js.pause_consumer(STREAM, durable.name, "2999-01-01T00:00:00Z")
        supervisor = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "eventwire",
            "run",
            "bench.workers_app:app",
            "--workers",
            str(workers),
            "--url",
            url,
            "--log-level",
            "ERROR",
            cwd=ROOT,
        )
        try:
            for _ in range(600):  # every worker started and pulling
                if (await js.consumer_info(STREAM, durable.name)).num_waiting >= workers:
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"{workers} workers did not start pulling")
            await js.resume_consumer(STREAM, durable.name)
            started, ticks = time.perf_counter(), cpu_ticks()
            while True:  # polled, not awaited: the workers are other processes
                if (await js.consumer_info(STREAM, durable.name)).ack_floor.stream_seq >= count:
                    took = time.perf_counter() - started
                    busy_cores.append((workers, busy_since(ticks)))
                    return count / took
                await asyncio.sleep(0.05)
        finally:
            with contextlib.suppress(ProcessLookupError):
                supervisor.send_signal(signal.SIGTERM)
            await asyncio.wait_for(supervisor.wait(), 60)
    finally:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(STREAM, durable.name)
        await nc.close()
        await transport.close()
