"""Output for people and for pipes: rich tables on a terminal, nothing cut short anywhere else."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console


def table_console() -> Console:
    """A console for tables: a terminal's width on a terminal; piped, wide enough that no id or name is cut."""
    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(width=100_000, highlight=False, color_system=None)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
