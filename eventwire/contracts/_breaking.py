"""``eventwire schema lock`` and ``check``: breaking changes between two versions of the contracts.

Levels, strictest last: ``WIRE`` (binary compatibility) and ``WIRE_JSON`` (also the JSON mapping:
names matter). Rule ids follow buf's breaking-change rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from google.protobuf import descriptor_pb2

Level = Literal["WIRE", "WIRE_JSON"]
LEVELS: tuple[Level, ...] = ("WIRE", "WIRE_JSON")

_Field = descriptor_pb2.FieldDescriptorProto


@dataclass(frozen=True, order=True)
class BreakingChange:
    file: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.rule} {self.message}"


def write_lock(descriptors: descriptor_pb2.FileDescriptorSet, path: Path) -> None:
    """Store the contracts as a serialized FileDescriptorSet (source info stripped: only the shape matters)."""
    lock = descriptor_pb2.FileDescriptorSet()
    lock.CopyFrom(descriptors)
    for file in lock.file:
        file.ClearField("source_code_info")
    path.write_bytes(lock.SerializeToString(deterministic=True))


def read_lock(path: Path) -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())


def _messages(files: descriptor_pb2.FileDescriptorSet) -> dict[str, tuple[str, descriptor_pb2.DescriptorProto]]:
    found: dict[str, tuple[str, descriptor_pb2.DescriptorProto]] = {}

    def visit(file: str, prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}" if prefix else message.name
        found[name] = (file, message)
        for nested in message.nested_type:
            visit(file, name, nested)

    for file in files.file:
        for message in file.message_type:
            visit(file.name, file.package, message)
    return found


def _enums(files: descriptor_pb2.FileDescriptorSet) -> dict[str, tuple[str, descriptor_pb2.EnumDescriptorProto]]:
    found: dict[str, tuple[str, descriptor_pb2.EnumDescriptorProto]] = {}
    for file in files.file:
        for enum in file.enum_type:
            found[f"{file.package}.{enum.name}" if file.package else enum.name] = (file.name, enum)
    for name, (file_name, message) in _messages(files).items():
        for enum in message.enum_type:
            found[f"{name}.{enum.name}"] = (file_name, enum)
    return found


def _reserved_number(message: descriptor_pb2.DescriptorProto, number: int) -> bool:
    return any(r.start <= number < r.end for r in message.reserved_range)


def _oneof(message: descriptor_pb2.DescriptorProto, field: _Field) -> str | None:
    if not field.HasField("oneof_index") or field.proto3_optional:
        return None
    return message.oneof_decl[field.oneof_index].name


def check(
    old: descriptor_pb2.FileDescriptorSet, new: descriptor_pb2.FileDescriptorSet, level: Level = "WIRE_JSON"
) -> list[BreakingChange]:
    """The breaking changes from ``old`` to ``new`` at ``level``, sorted."""
    json = level == "WIRE_JSON"
    changes: list[BreakingChange] = []
    old_messages, new_messages = _messages(old), _messages(new)
    for name, (file, before) in old_messages.items():
        if name not in new_messages:
            changes.append(BreakingChange(file, "MESSAGE_NO_DELETE", f"message {name} was deleted"))
            continue
        _, after = new_messages[name]
        now = {f.number: f for f in after.field}
        for field in before.field:
            current = now.get(field.number)
            where = f"{name}.{field.name} (field {field.number})"
            if current is None:
                if not _reserved_number(after, field.number):
                    changes.append(
                        BreakingChange(
                            file,
                            "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED",
                            f"{where} was deleted without reserving its number",
                        )
                    )
                if json and field.name not in after.reserved_name:
                    changes.append(
                        BreakingChange(
                            file,
                            "FIELD_NO_DELETE_UNLESS_NAME_RESERVED",
                            f"{where} was deleted without reserving its name",
                        )
                    )
                continue
            if (current.type, current.type_name) != (field.type, field.type_name):
                changes.append(BreakingChange(file, "FIELD_SAME_TYPE", f"{where} changed type"))
            if current.label != field.label:
                changes.append(BreakingChange(file, "FIELD_SAME_CARDINALITY", f"{where} changed cardinality"))
            if _oneof(after, current) != _oneof(before, field):
                changes.append(BreakingChange(file, "FIELD_SAME_ONEOF", f"{where} moved into or out of a oneof"))
            if json and current.name != field.name:
                changes.append(BreakingChange(file, "FIELD_SAME_NAME", f"{where} was renamed to {current.name}"))
            if json and current.json_name != field.json_name:
                changes.append(BreakingChange(file, "FIELD_SAME_JSON_NAME", f"{where} changed its JSON name"))
    old_enums, new_enums = _enums(old), _enums(new)
    for name, (file, before_enum) in old_enums.items():
        if name not in new_enums:
            changes.append(BreakingChange(file, "ENUM_NO_DELETE", f"enum {name} was deleted"))
            continue
        _, after_enum = new_enums[name]
        numbers = {v.number for v in after_enum.value}
        reserved = {n for r in after_enum.reserved_range for n in range(r.start, r.end + 1)}
        changes.extend(
            BreakingChange(
                file,
                "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED",
                f"{name}.{value.name} ({value.number}) was deleted without reserving it",
            )
            for value in before_enum.value
            if value.number not in numbers and value.number not in reserved
        )
    old_packages = {f.name: f.package for f in old.file}
    changes.extend(
        BreakingChange(
            new_file.name,
            "FILE_SAME_PACKAGE",
            f"package changed from {old_packages[new_file.name]} to {new_file.package}",
        )
        for new_file in new.file
        if new_file.name in old_packages and old_packages[new_file.name] != new_file.package
    )
    return sorted(changes)
