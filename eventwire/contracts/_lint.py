"""``eventwire schema lint``: the contract rules of DESIGN §3, checked on ``.proto`` sources."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from google.protobuf import descriptor_pb2

from .._errors import ContractError
from ._codegen import run_protoc
from ._naming import check_event_name, check_package

Severity = Literal["error", "warning"]

_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_PASCAL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_MESSAGE_TYPE = 4  # FileDescriptorProto.message_type
_FIELD = 2  # DescriptorProto.field
_TIMESTAMP = ".google.protobuf.Timestamp"


@dataclass(frozen=True, order=True)
class Finding:
    file: str
    line: int
    column: int
    rule: str
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column} {self.rule} {self.severity}: {self.message}"


def descriptor_set(source_dir: Path, *, with_imports: bool = False) -> descriptor_pb2.FileDescriptorSet:
    """Compile the ``.proto`` files under ``source_dir`` into a FileDescriptorSet with source locations.

    ``with_imports`` adds the imported well-known types, so the set resolves on its own.
    """
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "set.pb"
        options = [f"--descriptor_set_out={out}", "--include_source_info"]
        run_protoc(source_dir, *options, *(["--include_imports"] if with_imports else []))
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _locations(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], tuple[int, int]]:
    return {tuple(loc.path): (loc.span[0] + 1, loc.span[1] + 1) for loc in file.source_code_info.location}


def _referenced(files: list[descriptor_pb2.FileDescriptorProto]) -> set[str]:
    """Full names of messages used as field types: value types, not events."""
    used: set[str] = set()

    def visit(message: descriptor_pb2.DescriptorProto) -> None:
        for field in message.field:
            if field.type_name:
                used.add(field.type_name.lstrip("."))
        for nested in message.nested_type:
            visit(nested)

    for file in files:
        for message in file.message_type:
            visit(message)
    return used


def lint(source_dir: Path) -> list[Finding]:
    """Check every message of the ``.proto`` files under ``source_dir``; findings sorted by place."""
    files = list(descriptor_set(source_dir).file)
    value_types = _referenced(files)
    return sorted(finding for file in files for finding in _lint_file(file, value_types))


def _lint_file(file: descriptor_pb2.FileDescriptorProto, value_types: set[str]) -> Iterator[Finding]:
    where = _locations(file)

    def at(path: tuple[int, ...], rule: str, severity: Severity, message: str) -> Finding:
        line, column = where.get(path, (1, 1))
        return Finding(file.name, line, column, rule, severity, message)

    try:
        check_package(file.package, file.name)
    except ContractError as exc:
        yield at((2,), "EW001-package-version", "error", str(exc).split(": ", 1)[-1])
    for index, message in enumerate(file.message_type):
        path = (_MESSAGE_TYPE, index)
        full_name = f"{file.package}.{message.name}" if file.package else message.name
        if not _PASCAL.match(message.name):
            yield at(path, "EW002-message-pascal-case", "error", f"message {message.name} is not PascalCase")
        elif full_name not in value_types:
            try:
                check_event_name(message.name, full_name)
            except ContractError as exc:
                rule = "EW003-event-suffix" if message.name.endswith("Event") else "EW004-event-past-tense"
                yield at(path, rule, "error", str(exc).split(": ", 1)[-1])
        for field_index, field in enumerate(message.field):
            field_path = (*path, _FIELD, field_index)
            if not _SNAKE.match(field.name):
                yield at(
                    field_path,
                    "EW005-field-snake-case",
                    "error",
                    f"{message.name}.{field.name} is not lower_snake_case",
                )
            if field.type_name == _TIMESTAMP:
                yield at(
                    field_path,
                    "EW006-timestamp-type",
                    "warning",
                    f"{message.name}.{field.name}: use int64 Unix milliseconds (e.g. {field.name}_ms), "
                    "which every language decodes without well-known types",
                )
