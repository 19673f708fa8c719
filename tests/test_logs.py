"""Structured logs: ``--log-format json`` writes one object per line, and every line about a message has its fields."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from eventwire.observability import JsonFormatter

ROOT = Path(__file__).parent.parent
MESSAGE_FIELDS = {"service", "handler", "subject", "stream_sequence", "delivery_count", "ce_type", "ce_id", "outcome"}


def test_every_line_of_the_demo_is_a_json_object_and_message_lines_carry_their_fields(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eventwire", "demo", "--orders", "60", "--data", str(tmp_path),
         "--log-level", "INFO", "--log-format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200,
        check=True,
    )  # fmt: skip
    # The demo's own lines, and each service's (its processes run with --log-format json into the data folder).
    texts = [result.stderr, *(log.read_text() for log in sorted(tmp_path.glob("*.log")))]
    lines = [json.loads(line) for text in texts for line in text.splitlines()]
    about_messages = [line for line in lines if line["logger"] == "eventwire.consumer" and "outcome" in line]
    print(json.dumps(about_messages[0], indent=2))
    assert len(lines) > 5 and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    for line in about_messages:
        assert line.keys() >= MESSAGE_FIELDS, line
    # The shop's warehouse times out on one order in 25: those retries are logged, each with its event.
    retries = [line for line in about_messages if line["outcome"] == "retry"]
    assert retries
    for line in retries:
        assert line["service"] == "inventory" and line["handler"] == "reserve_or_release"
        assert line["ce_type"] == "shop.inventory.v1.StockReservationRequested"
        assert line["subject"] == "fulfilment.stock.reserve-requested"


def test_a_traceback_stays_inside_its_json_line() -> None:
    record = logging.LogRecord("eventwire.consumer", logging.ERROR, __file__, 1, "term: %s", ("boom",), None)
    failure = KeyError("sku-42")
    record.exc_info = (KeyError, failure, None)
    line = JsonFormatter().format(record)
    parsed = json.loads(line)
    assert "\n" not in line
    assert parsed["message"] == "term: boom" and "KeyError: 'sku-42'" in parsed["exception"]


def test_every_command_takes_the_logging_options() -> None:
    import typer.main

    from eventwire.cli import cli

    def leaves(command: Any, path: str) -> list[tuple[str, Any]]:
        if hasattr(command, "commands"):  # a group
            return [leaf for name, sub in command.commands.items() for leaf in leaves(sub, f"{path} {name}")]
        return [(path, command)]

    commands = leaves(typer.main.get_command(cli), "eventwire")
    lacking = [
        path
        for path, command in commands
        if not {"--log-level", "--log-format"} <= {opt for param in command.params for opt in param.opts}
    ]
    assert len(commands) >= 15 and lacking == []


def test_a_log_level_that_does_not_exist_is_one_line_and_exit_1() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eventwire", "schema", "lint", "eventwire/demo/proto", "--log-level", "LOUD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == "error: log level 'LOUD' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL\n"
