"""Seeing a service: Prometheus metrics, health endpoints, OpenTelemetry traces and structured logs.

An App turns them on with ``App(metrics=True)`` or ``App(metrics_port=9464)`` (``eventwire run
--metrics-port``); traces follow whenever an OpenTelemetry SDK is configured; ``--log-format json``
(or :func:`configure_logging`) writes one JSON object per log line. docs/observability.md lists every
metric.
"""

from ._health import HealthServer
from ._logs import JsonFormatter, LogFormat, configure_logging
from ._metrics import ServiceMetrics

__all__ = ["HealthServer", "JsonFormatter", "LogFormat", "ServiceMetrics", "configure_logging"]
