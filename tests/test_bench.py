"""The benchmark keeps working: a smoke run at tiny sizes. No timing is asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def test_bench_quick_run_writes_results(tmp_path: Path) -> None:
    pytest.importorskip("faststream", reason="the bench extra is not installed: pip install -e '.[bench]'")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = tmp_path.glob("*-quick.json")
    data = json.loads(path.read_text())
    assert set(data["throughput"]) >= {
        "publish.raw_single",
        "publish.eventwire_single",
        "publish.raw_pipelined",
        "publish.eventwire_pipelined",
        "consume.raw_fetch",
        "consume.raw_push",
        "consume.eventwire_app",
        "consume.eventwire_app_metrics",
        "consume.eventwire_app_observed",
        "consume.eventwire_app_observed_sampled",
        "consume.faststream_pull",
        "publish.eventwire_fast",
        "workers.one",
        "workers.two",
        "cluster.raw_pipelined_headers",
        "cluster.eventwire_pipelined",
        "cluster.eventwire_fast",
    }
    assert all(entry["median"] > 0 for entry in data["throughput"].values())
    assert set(data["latency"]) == {"raw_pull", "eventwire"}
    assert data["rss"]["events"] == 3_000
    assert {t["what"] for t in data["targets"]} >= {
        "pipelined publish / raw publish_async",
        "fast-ingest publish_many / raw publish_async with the same headers",
        "App with --workers 2 / one worker (median of paired runs)",
        "outbox relay on sqlite, fast-ingest batches (events/s)",
    }
