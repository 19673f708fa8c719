"""Two versions of the contracts, resolved and matched element by element for ``schema check``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Protocol

from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from .._errors import ContractError
from ._codegen import well_known_types_dir

EXPLICIT, IMPLICIT = "optional with explicit presence", "optional with implicit presence"
_VARINT, _LENGTH_DELIMITED = 0, 2  # wire types


class Range(Protocol):
    """A reserved or extension range of a message or an enum."""

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...


# -- one version of the contracts ------------------------------------------------------------------


@cache
def bundled_files() -> frozenset[str]:
    """The well-known types grpcio-tools ships: imports of the contracts, not part of them."""
    include = well_known_types_dir()
    return frozenset(p.relative_to(include).as_posix() for p in include.rglob("*.proto"))


class Contracts:
    """One version, resolved in a private pool (types, presence, features) and indexed by full name."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        pool = descriptor_pool.DescriptorPool()
        try:
            for declared in files.file:
                pool.Add(declared)
            self.files = {f.name: pool.FindFileByName(f.name) for f in files.file if f.name not in bundled_files()}
        except Exception as exc:
            raise ContractError(f"the contracts do not resolve ({exc}); write the lock file again") from exc
        self.syntax = {f.name: f.syntax or "proto2" for f in files.file}
        self.edition = {f.name: f.edition for f in files.file}
        self.file_protos = {f.name: f for f in files.file}
        self.messages: dict[str, Descriptor] = {}
        self.enums: dict[str, EnumDescriptor] = {}
        self.extensions: dict[tuple[str, int], FieldDescriptor] = {}
        self.services: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}
        # kind -> full name -> the file declaring it, for the "no delete" rules
        self.declared: dict[str, dict[str, FileDescriptor]] = {
            k: {} for k in ("message", "enum", "service", "extension")
        }
        self._protos: dict[str, descriptor_pb2.DescriptorProto] = {}
        self._enum_protos: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        for file in self.files.values():
            for service in file.services_by_name.values():
                self.services[service.full_name] = descriptor_pb2.ServiceDescriptorProto()
                service.CopyToProto(self.services[service.full_name])
                self.declared["service"][service.full_name] = file
            self._add_enums(file, file.enum_types_by_name.values())
            self._add_extensions(file, file.extensions_by_name.values())
            for message in file.message_types_by_name.values():
                self._add_message(file, message)

    def _add_message(self, file: FileDescriptor, message: Descriptor) -> None:
        self.messages[message.full_name] = message
        self.declared["message"][message.full_name] = file
        self._add_enums(file, message.enum_types)
        self._add_extensions(file, message.extensions)
        for nested in message.nested_types:
            self._add_message(file, nested)

    def _add_enums(self, file: FileDescriptor, enums: Iterable[EnumDescriptor]) -> None:
        for enum in enums:
            self.enums[enum.full_name] = enum
            self.declared["enum"][enum.full_name] = file

    def _add_extensions(self, file: FileDescriptor, extensions: Iterable[FieldDescriptor]) -> None:
        for extension in extensions:
            self.extensions[(owner(extension).full_name, extension.number)] = extension
            self.declared["extension"][extension.full_name] = file

    def proto(self, message: Descriptor) -> descriptor_pb2.DescriptorProto:
        """The message as declared: reserved ranges and names, extension ranges, proto3 ``optional``."""
        found = self._protos.get(message.full_name)
        if found is None:
            found = self._protos[message.full_name] = descriptor_pb2.DescriptorProto()
            message.CopyToProto(found)
        return found

    def enum_proto(self, enum: EnumDescriptor) -> descriptor_pb2.EnumDescriptorProto:
        """The enum as declared: its reserved ranges and names."""
        found = self._enum_protos.get(enum.full_name)
        if found is None:
            found = self._enum_protos[enum.full_name] = descriptor_pb2.EnumDescriptorProto()
            enum.CopyToProto(found)
        return found

    def declared_field(self, field: FieldDescriptor) -> descriptor_pb2.FieldDescriptorProto:
        """The field as declared: its options as written (the runtime strips resolved features from them)."""
        if field.is_extension:
            scope = field.extension_scope
            declared = (
                self.proto(scope).extension if scope is not None else self.file_protos[file_name(field)].extension
            )
            return next(x for x in declared if x.name == field.name)
        return next(f for f in self.proto(owner(field)).field if f.number == field.number)

    def oneof(self, field: FieldDescriptor) -> str | None:
        """The field's oneof, unless it is the synthetic one of a proto3 ``optional`` field."""
        oneof = field.containing_oneof
        if oneof is None or field.is_extension:
            return None
        return None if self.declared_field(field).proto3_optional else oneof.name


@dataclass(frozen=True)
class VersionPair:
    """Both versions, and the elements present in both, matched as buf matches them."""

    old: Contracts
    new: Contracts

    def files(self) -> Iterator[tuple[FileDescriptor, FileDescriptor]]:
        yield from ((f, self.new.files[n]) for n, f in self.old.files.items() if n in self.new.files)

    def messages(self) -> Iterator[tuple[Descriptor, Descriptor]]:
        yield from ((m, self.new.messages[n]) for n, m in self.old.messages.items() if n in self.new.messages)

    def enums(self) -> Iterator[tuple[EnumDescriptor, EnumDescriptor]]:
        yield from ((e, self.new.enums[n]) for n, e in self.old.enums.items() if n in self.new.enums)

    def fields(self) -> Iterator[tuple[FieldDescriptor, FieldDescriptor]]:
        """Fields by number within messages matched by full name, and extensions by extendee and number."""
        for before, after in self.messages():
            for field in before.fields:
                if field.number in after.fields_by_number:
                    yield field, after.fields_by_number[field.number]
        yield from ((x, self.new.extensions[k]) for k, x in self.old.extensions.items() if k in self.new.extensions)

    def methods(
        self,
    ) -> Iterator[tuple[str, descriptor_pb2.MethodDescriptorProto, descriptor_pb2.MethodDescriptorProto]]:
        for name, before in self.old.services.items():
            if name in self.new.services:
                now = {m.name: m for m in self.new.services[name].method}
                yield from ((f"{name}.{m.name}", m, now[m.name]) for m in before.method if m.name in now)


# -- helpers ---------------------------------------------------------------------------------------


def owner(field: FieldDescriptor) -> Descriptor:
    assert field.containing_type is not None  # every field and extension has one
    return field.containing_type


def message_type(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None
    return field.message_type


def enum_type(field: FieldDescriptor) -> EnumDescriptor:
    assert field.enum_type is not None
    return field.enum_type


def file_name(field: FieldDescriptor) -> str:
    name: str = field.file.name  # type: ignore[attr-defined]  # the stubs lack FieldDescriptor.file
    return name


def features(element: Descriptor | EnumDescriptor | FieldDescriptor) -> descriptor_pb2.FeatureSet:
    """The resolved editions features; protobuf exposes them only privately (pinned below 8)."""
    features: descriptor_pb2.FeatureSet = element._GetFeatures()  # type: ignore[union-attr]
    return features


def nested_name(full_name: str, file: FileDescriptor) -> str:
    return full_name.removeprefix(file.package + ".") if file.package else full_name


def is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and message_type(field).GetOptions().map_entry


def cardinality(field: FieldDescriptor) -> str:
    if field.is_repeated:
        return "map" if is_map(field) else "repeated"
    if field.is_required:
        return "required"
    return EXPLICIT if field.has_presence else IMPLICIT


def in_map_entries(before: FieldDescriptor, after: FieldDescriptor) -> bool:
    """Map entry messages are generated; their fields' presence is an artefact of the syntax."""
    return all(not f.is_extension and owner(f).GetOptions().map_entry for f in (before, after))


def uncovered(ranges: Iterable[tuple[int, int]], by: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The inclusive ``ranges`` with a number outside every inclusive range of ``by``."""
    spans = sorted(by)
    missing = []
    for start, end in ranges:
        position = start
        for low, high in spans:
            if low <= position <= high:
                position = high + 1
        if position <= end:
            missing.append((start, end))
    return missing


def message_ranges(ranges: Iterable[Range]) -> list[tuple[int, int]]:
    return [(r.start, r.end - 1) for r in ranges]  # exclusive end in messages, inclusive in enums


def _unknown_fields(message: Message) -> list[tuple[int, int, object]]:
    """(number, wire type, data) of each field ``message`` parsed but does not declare."""
    unknown = UnknownFieldSet(message)
    return [(f.field_number, f.wire_type, f.data) for f in (unknown[i] for i in range(len(unknown)))]


def language_feature(contracts: Contracts, field: FieldDescriptor, extension: int, feature: int) -> int | None:
    """A feature of the ``pb.cpp`` (1000) or ``pb.java`` (1001) FeatureSet extension set on ``field`` or around it.

    The Python runtime ships no module for these extensions, so they stay unknown fields of the
    declared options: the innermost explicit setting wins.
    """
    scopes: list[descriptor_pb2.FieldOptions | descriptor_pb2.MessageOptions | descriptor_pb2.FileOptions]
    scopes = [contracts.declared_field(field).options]
    message = None if field.is_extension else field.containing_type
    while message is not None:
        scopes.append(contracts.proto(message).options)
        message = message.containing_type
    scopes.append(contracts.file_protos[file_name(field)].options)
    for options in scopes:
        for number, wire_type, data in _unknown_fields(options.features):
            if number == extension and wire_type == _LENGTH_DELIMITED and isinstance(data, bytes):
                # Parsed as an Empty message, the extension's fields all stay unknown: read them as such.
                values = _unknown_fields(empty_pb2.Empty.FromString(data))
                found = [v for n, w, v in values if n == feature and w == _VARINT and isinstance(v, int)]
                if found:
                    return found[-1]
    return None
