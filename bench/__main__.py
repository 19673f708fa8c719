"""``python -m bench``: run every contender, interleaved, and report ratios to the raw baselines."""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from eventwire.server import EmbeddedServer
from eventwire.testing import EmbeddedCluster

from . import consume, latency, outbox, publish, workers
from ._common import Series, busy_since, cpu_ticks, percentile, prefill

RESULTS = Path(__file__).parent / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--url", help="benchmark this server instead of an embedded one")
    parser.add_argument("--reps", type=int, default=3, help="repetitions; the median is reported")
    parser.add_argument("--consume-events", type=int, default=100_000)
    parser.add_argument("--pipelined-events", type=int, default=50_000)
    parser.add_argument("--single-events", type=int, default=3_000)
    parser.add_argument("--latency-rate", type=int, default=1_000, help="events per second")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--rss-events", type=int, default=1_000_000, help="0 skips the memory run")
    parser.add_argument("--outbox-events", type=int, default=20_000, help="0 skips the outbox relay run")
    parser.add_argument("--workers-events", type=int, default=200_000, help="0 skips the --workers runs")
    parser.add_argument(
        "--cluster-events", type=int, default=20_000, help="publish rows on a 3-node R3 cluster; 0 skips them"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition: a smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON results")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.consume_events, args.pipelined_events, args.single_events = 1, 2_000, 2_000, 200
        args.latency_seconds, args.rss_events, args.outbox_events = 1.0, 3_000, 300
        args.workers_events, args.cluster_events = 3_000, 300
    return args


async def run(args: argparse.Namespace, url: str, console: Console) -> dict[str, Any]:
    series: dict[str, Series] = {
        "publish.raw_single": Series("raw js.publish", "msg/s"),
        "publish.eventwire_single": Series("eventwire publish", "msg/s"),
        "publish.raw_single_headers": Series("raw js.publish + same headers", "msg/s"),
        "publish.raw_pipelined": Series("raw publish_async", "msg/s"),
        "publish.raw_pipelined_headers": Series("raw publish_async + same headers", "msg/s"),
        "publish.eventwire_pipelined": Series("eventwire publish_many", "msg/s"),
        "publish.eventwire_fast": Series("eventwire publish_many, fast-ingest batches", "msg/s"),
        "consume.raw_fetch": Series("raw pull fetch(100) + ack", "msg/s"),
        "consume.raw_push": Series("raw push + ack", "msg/s"),
        "consume.eventwire_app": Series("eventwire App handler", "msg/s"),
        "consume.eventwire_app_metrics": Series("eventwire App, metrics on", "msg/s"),
        "consume.eventwire_app_tracing_noop": Series("eventwire App, tracing on a no-op provider", "msg/s"),
        "consume.eventwire_app_tracing_sdk": Series("eventwire App, tracing: SDK, batch, discarding", "msg/s"),
        "consume.eventwire_app_observed": Series("eventwire App, metrics and SDK tracing", "msg/s"),
        "consume.eventwire_app_observed_sampled": Series("eventwire App, metrics and SDK tracing 1 in 10", "msg/s"),
        "consume.eventwire_app_confirmed": Series("eventwire App, confirmed acks", "msg/s"),
        "consume.eventwire_app_confirmed_16": Series("eventwire App, confirmed acks, concurrency 16", "msg/s"),
    }
    with_faststream = consume.faststream_available()
    if with_faststream:
        series["consume.faststream_pull"] = Series("FastStream PullSub(100)", "msg/s")
    for rep in range(args.reps):
        console.print(f"[bold]repetition {rep + 1}/{args.reps}[/bold]")
        pairs = [
            ("publish.raw_single", functools.partial(publish.raw_single), args.single_events),
            (
                "publish.raw_single_headers",
                functools.partial(publish.raw_single, with_headers=True),
                args.single_events,
            ),
            ("publish.eventwire_single", functools.partial(publish.eventwire_single), args.single_events),
            ("publish.raw_pipelined", functools.partial(publish.raw_pipelined), args.pipelined_events),
            (
                "publish.raw_pipelined_headers",
                functools.partial(publish.raw_pipelined, with_headers=True),
                args.pipelined_events,
            ),
            ("publish.eventwire_pipelined", functools.partial(publish.eventwire_pipelined), args.pipelined_events),
            (
                "publish.eventwire_fast",
                functools.partial(publish.eventwire_pipelined, fast_path=True),
                args.pipelined_events,
            ),
        ]
        for key, publisher, count in pairs:
            series[key].values.append(await publisher(url, count))
            console.print(f"  {series[key].name}: {series[key].values[-1]:,.0f} msg/s")
        await prefill(url, args.consume_events)
        consumers: list[tuple[str, Callable[[str, int, str], Awaitable[float]]]] = [
            ("consume.raw_fetch", consume.raw_fetch),
            ("consume.eventwire_app", consume.eventwire_app),
            ("consume.eventwire_app_metrics", functools.partial(consume.eventwire_app, metrics=True)),
            ("consume.eventwire_app_tracing_noop", functools.partial(consume.eventwire_app_observed, mode="noop")),
            ("consume.eventwire_app_tracing_sdk", functools.partial(consume.eventwire_app_observed, mode="sdk")),
            ("consume.eventwire_app_observed", functools.partial(consume.eventwire_app_observed, mode="sdk+metrics")),
            (
                "consume.eventwire_app_observed_sampled",
                functools.partial(consume.eventwire_app_observed, mode="sdk10+metrics"),
            ),
            ("consume.eventwire_app_confirmed", functools.partial(consume.eventwire_app, confirm_acks=True)),
            (
                "consume.eventwire_app_confirmed_16",
                functools.partial(consume.eventwire_app, confirm_acks=True, concurrency=16),
            ),
            ("consume.raw_push", consume.raw_push),
        ]
        if with_faststream:
            consumers.append(("consume.faststream_pull", consume.faststream_pull))
        for key, contender in consumers:
            rate = await contender(url, args.consume_events, f"{key.split('.')[1]}-{rep}")
            series[key].values.append(rate)
            console.print(f"  {series[key].name}: {rate:,.0f} msg/s")
    raw_samples = await latency.raw_pull_latency(url, args.latency_rate, args.latency_seconds)
    eventwire_samples = await latency.eventwire_latency(url, args.latency_rate, args.latency_seconds)
    latencies = {
        name: {"p50_us": percentile(samples, 0.5) * 1e6, "p99_us": percentile(samples, 0.99) * 1e6}
        for name, samples in (("raw_pull", raw_samples), ("eventwire", eventwire_samples))
    }
    if args.workers_events:
        series["workers.one"] = Series("eventwire run, one worker process", "msg/s")
        series["workers.two"] = Series("eventwire run --workers 2", "msg/s")
        for _ in range(args.reps):
            for key, count in (("workers.one", 1), ("workers.two", 2)):
                series[key].values.append(await workers.app_rate(url, args.workers_events, count))
                console.print(f"  {series[key].name}: {series[key].values[-1]:,.0f} msg/s")
    relay: dict[str, float | None] = {}
    if args.outbox_events:
        for kind in ("sqlite", "postgresql"):
            for fast_path in (False, True):
                label = f"{kind}, fast-ingest batches" if fast_path else kind
                relay[label] = await outbox.relay_rate(url, kind, args.outbox_events, fast_path=fast_path)
                shown = "no database" if relay[label] is None else f"{relay[label]:,.0f} events/s"
                console.print(f"  outbox relay on {label}: {shown}")
    if args.cluster_events:
        await cluster_rows(series, args, console)
    rss = None
    if args.rss_events:
        console.print(f"draining {args.rss_events:,} events for peak RSS")
        await prefill(url, args.rss_events)
        measured = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bench.rss", url, str(args.rss_events)],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent.parent,
        )
        rss = json.loads(measured.stdout.strip().splitlines()[-1])
    result = report(series, latencies, rss, args)
    result["outbox_relay_events_per_s"] = relay
    if workers.busy_cores:
        result["workers_busy_cores"] = workers.busy_cores
    if cluster_busy:
        result["cluster_busy_cores"] = cluster_busy
    for label, relayed in relay.items():
        if "fast-ingest" in label and relayed is not None:
            goal = {"what": f"outbox relay on {label} (events/s)", "value": relayed, "target": 20_000.0}
            result["targets"].append({**goal, "met": relayed >= 20_000})
    return result


# Busy cores of the machine during each cluster row (whole runs, set-up included).
cluster_busy: dict[str, list[float]] = {}


async def cluster_rows(series: dict[str, Series], args: argparse.Namespace, console: Console) -> None:
    """The publish rows again on three nodes, R3 streams, ``sync_interval: always`` (docs/clusters.md)."""
    rows = [
        ("cluster.raw_pipelined_headers", "R3 cluster: raw publish_async + same headers", publish.raw_pipelined),
        ("cluster.eventwire_pipelined", "R3 cluster: eventwire publish_many", publish.eventwire_pipelined),
        (
            "cluster.eventwire_fast",
            "R3 cluster: eventwire publish_many, fast-ingest batches",
            publish.eventwire_pipelined,
        ),
    ]
    options = {
        "cluster.raw_pipelined_headers": {"with_headers": True},
        "cluster.eventwire_pipelined": {},
        "cluster.eventwire_fast": {"fast_path": True},
    }
    with tempfile.TemporaryDirectory() as folder:
        cluster = await EmbeddedCluster(store_dir=Path(folder)).start_async()
        try:
            for _ in range(args.reps):
                for key, name, contender in rows:
                    series.setdefault(key, Series(name, "msg/s"))
                    ticks = cpu_ticks()
                    rate = await contender(cluster.url, args.cluster_events, replicas=3, **options[key])
                    cluster_busy.setdefault(key, []).append(busy_since(ticks))
                    series[key].values.append(rate)
                    console.print(f"  {name}: {rate:,.0f} msg/s")
        finally:
            await asyncio.to_thread(cluster.stop)


def paired(series: dict[str, Series], mine: str, baseline: str) -> float:
    """The median of the ratios of runs made side by side: for baselines that vary a lot from run to run."""
    return statistics.median(a / b for a, b in zip(series[mine].values, series[baseline].values, strict=True))


def ratio(series: dict[str, Series], mine: str, baseline: str) -> float:
    return series[mine].median / series[baseline].median


def report(
    series: dict[str, Series],
    latencies: dict[str, dict[str, float]],
    rss: dict[str, float] | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    targets: list[dict[str, Any]] = [
        {
            "what": "pipelined publish / raw publish_async",
            "value": ratio(series, "publish.eventwire_pipelined", "publish.raw_pipelined"),
            "target": 0.9,
        },
        {
            "what": "single publish / raw js.publish",
            "value": ratio(series, "publish.eventwire_single", "publish.raw_single"),
            "target": 0.95,
        },
        {
            "what": "App / raw pull fetch(100)+ack",
            "value": ratio(series, "consume.eventwire_app", "consume.raw_fetch"),
            "target": 2.0,
        },
        {
            "what": "App / raw push+ack (median of paired runs)",
            "value": paired(series, "consume.eventwire_app", "consume.raw_push"),
            "target": 0.8,
        },
        {
            "what": "fast-ingest publish_many / raw publish_async with the same headers",
            "value": ratio(series, "publish.eventwire_fast", "publish.raw_pipelined_headers"),
            "target": 1.5,
        },
        {
            "what": "App with metrics and SDK tracing / plain App",
            "value": ratio(series, "consume.eventwire_app_observed", "consume.eventwire_app"),
            "target": 0.9,
        },
    ]
    # Not targets: how much of the gap is eventwire's client work rather than the server storing headers.
    informational = [
        {
            "what": "pipelined publish / raw publish_async with the same headers",
            "value": ratio(series, "publish.eventwire_pipelined", "publish.raw_pipelined_headers"),
        },
        {
            "what": "single publish / raw js.publish with the same headers",
            "value": ratio(series, "publish.eventwire_single", "publish.raw_single_headers"),
        },
        *(
            {"what": f"{series[key].name} / plain App", "value": ratio(series, key, "consume.eventwire_app")}
            for key in (
                "consume.eventwire_app_metrics",
                "consume.eventwire_app_tracing_noop",
                "consume.eventwire_app_tracing_sdk",
                "consume.eventwire_app_observed_sampled",
            )
        ),
    ]
    if "consume.faststream_pull" in series:
        targets.append(
            {
                "what": "App / FastStream PullSub",
                "value": ratio(series, "consume.eventwire_app", "consume.faststream_pull"),
                "target": 5.0,
            }
        )
    if "workers.two" in series:
        targets.append(
            {
                "what": "App with --workers 2 / one worker (median of paired runs)",
                "value": paired(series, "workers.two", "workers.one"),
                "target": 1.4,
            }
        )
    if "cluster.eventwire_fast" in series:
        targets.append(
            {
                "what": "R3 cluster: fast-ingest publish_many / raw publish_async with the same headers",
                "value": ratio(series, "cluster.eventwire_fast", "cluster.raw_pipelined_headers"),
                "target": 1.5,
            }
        )
        informational.append(
            {
                "what": "R3 cluster: pipelined publish_many / raw publish_async with the same headers",
                "value": ratio(series, "cluster.eventwire_pipelined", "cluster.raw_pipelined_headers"),
            }
        )
    added = latencies["eventwire"]["p50_us"] - latencies["raw_pull"]["p50_us"]
    targets.append({"what": "added p50 latency over raw pull (µs)", "value": added, "target": 30.0, "at_most": True})
    if rss is not None:
        targets.append(
            {
                "what": f"peak RSS draining {rss['events']:,} events (MB)",
                "value": rss["peak_rss_mb"],
                "target": 200.0,
                "at_most": True,
            }
        )
    for target in targets:
        at_most = target.get("at_most", False)
        target["met"] = target["value"] <= target["target"] if at_most else target["value"] >= target["target"]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "throughput": {key: {"name": s.name, "median": s.median, "values": s.values} for key, s in series.items()},
        "latency": latencies,
        "rss": rss,
        "targets": targets,
        "informational": informational,
    }


def print_tables(result: dict[str, Any], console: Console) -> None:
    table = Table(title="throughput (median)")
    table.add_column("contender")
    table.add_column("msg/s", justify="right")
    for entry in result["throughput"].values():
        table.add_row(entry["name"], f"{entry['median']:,.0f}")
    console.print(table)
    lat = Table(title="publish → handler latency")
    for column in ("path", "p50 µs", "p99 µs"):
        lat.add_column(column)
    for name, values in result["latency"].items():
        lat.add_row(name, f"{values['p50_us']:.0f}", f"{values['p99_us']:.0f}")
    console.print(lat)
    for kind, rate in result.get("outbox_relay_events_per_s", {}).items():
        console.print(f"outbox → stream on {kind}: " + ("no database" if rate is None else f"{rate:,.0f} events/s"))
    goals = Table(title="targets")
    for column in ("measure", "value", "target", "met"):
        goals.add_column(column)
    for target in result["targets"]:
        bound = "≤" if target.get("at_most") else "≥"
        goals.add_row(
            target["what"],
            f"{target['value']:.2f}",
            f"{bound} {target['target']}",
            "yes" if target["met"] else "[red]no[/red]",
        )
    console.print(goals)
    for entry in result["informational"]:
        console.print(f"{entry['what']}: {entry['value']:.2f}")


def main() -> None:
    args = parse_args()
    console = Console()
    # INFO logging is on, as in a service; records go to memory, not the terminal.
    logging.basicConfig(level=logging.INFO, stream=io.StringIO())
    server = None
    url = args.url
    if url is None:
        server = EmbeddedServer().start()
        url = server.url
    try:
        result = asyncio.run(run(args, url, console))
    finally:
        if server is not None:
            server.stop()
    print_tables(result, console)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{result['date'].replace(':', '')}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"results: {path}")


if __name__ == "__main__":
    main()
