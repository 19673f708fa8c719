"""Log lines as text (the default) or as one JSON object each, with a message's fields as keys."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from enum import StrEnum

from .._errors import ConfigError


class LogFormat(StrEnum):
    text = "text"
    json = "json"


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...}``: a log line about a message adds its fields
    (``service``, ``handler``, ``subject``, ``stream_sequence``, ``delivery_count``, ``ce_type``, ``ce_id``,
    ``outcome``) from the record's ``eventwire`` extra."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "eventwire", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", log_format: LogFormat | str = LogFormat.text) -> None:
    """Log to stderr at ``level``, as text or JSON lines (the CLI's ``--log-level`` and ``--log-format``)."""
    try:
        shape = LogFormat(log_format)
    except ValueError:
        raise ConfigError(f"log format {log_format!r} is neither 'text' nor 'json'") from None
    if level.upper() not in LEVELS:
        raise ConfigError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if shape is LogFormat.json else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
