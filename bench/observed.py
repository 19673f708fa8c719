"""One consume run with observability on, in a process of its own (a tracer provider, once set, stays set).

``python -m bench.observed URL COUNT DURABLE MODE`` prints the rate in msg/s. MODE is ``noop`` (the
OpenTelemetry API's no-op provider), ``sdk`` (the SDK with a batch processor into an exporter that
discards), ``sdk+metrics`` (that, and Prometheus metrics on) or ``sdk10+metrics`` (the same with one trace
in ten sampled, the parent-based ratio sampler a busy service would run).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from . import consume

MODES = ("noop", "sdk", "sdk+metrics", "sdk10+metrics")


class Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def install(mode: str) -> None:
    if mode == "noop":
        trace.set_tracer_provider(trace.NoOpTracerProvider())
        return
    sampler = ParentBased(TraceIdRatioBased(0.1)) if mode.startswith("sdk10") else None
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    trace.set_tracer_provider(provider)


def main(argv: list[str]) -> None:
    url, count, durable, mode = argv[0], int(argv[1]), argv[2], argv[3]
    if mode not in MODES:
        raise SystemExit(f"mode must be one of {', '.join(MODES)}")
    install(mode)
    rate = asyncio.run(consume.eventwire_app(url, count, durable, metrics=mode.endswith("+metrics")))
    print(f"{rate:.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
