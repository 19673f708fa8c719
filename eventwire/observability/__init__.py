"""Seeing a service: Prometheus metrics, health endpoints, OpenTelemetry traces and structured logs.

An App turns them on with ``App(metrics=True)`` or ``App(metrics_port=9464)`` (``eventwire run
--metrics-port``); traces follow whenever an OpenTelemetry SDK is configured; ``--log-format json``
(or :func:`configure_logging`) writes one JSON object per log line. docs/observability.md lists every
metric.
"""

from typing import TYPE_CHECKING, Any

from ._logs import JsonFormatter, LogFormat, configure_logging
from ._metrics import ServiceMetrics

if TYPE_CHECKING:
    from ._health import HealthServer


def __getattr__(name: str) -> Any:
    # uvicorn and Starlette load only for an App that serves its endpoints: every command starts faster.
    if name == "HealthServer":
        from ._health import HealthServer

        return HealthServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["HealthServer", "JsonFormatter", "LogFormat", "ServiceMetrics", "configure_logging"]
