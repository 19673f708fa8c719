"""One event type's contract as a self-contained FileDescriptorSet: its id, its dynamic class, its check.

The schema registry stores each version of a type as the set of its file and that file's imports,
in a canonical form: no source locations, and no ``json_name`` where it is protoc's default. A
generated module and protoc's ``--descriptor_set_out`` differ in exactly these two, so the same
contract yields the same bytes and the same id whether it comes from a running service or from
``eventwire schema push`` of the ``.proto`` sources.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import cast

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor
from google.protobuf.message import Message

from .._errors import ContractError
from ._breaking import BreakingChange, Level, check
from ._proto_source import default_json_name
from ._versions import bundled_files

_ID_PREFIX = "urn:eventwire:schema:"


def _canonical_message(message: descriptor_pb2.DescriptorProto) -> None:
    for field in (*message.field, *message.extension):
        if field.json_name == default_json_name(field.name):
            field.ClearField("json_name")
    for nested in message.nested_type:
        _canonical_message(nested)


def canonical_file(file: FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    proto.ClearField("source_code_info")
    for message in proto.message_type:
        _canonical_message(message)
    for extension in proto.extension:
        if extension.json_name == default_json_name(extension.name):
            extension.ClearField("json_name")
    return proto


def _descriptor(event_class: type[Message]) -> Descriptor:
    return cast(Descriptor, event_class.DESCRIPTOR)


def descriptor_set_of(event_class: type[Message]) -> descriptor_pb2.FileDescriptorSet:
    """The file declaring ``event_class`` and everything it imports, imports first, so it loads in order."""
    ordered: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(file: FileDescriptor) -> None:
        if file.name in ordered:
            return
        for dependency in file.dependencies:
            add(dependency)
        ordered[file.name] = canonical_file(file)

    add(_descriptor(event_class).file)
    return descriptor_pb2.FileDescriptorSet(file=list(ordered.values()))


def _referenced(message: Descriptor) -> Iterator[Descriptor | EnumDescriptor]:
    for field in message.fields:
        if field.message_type is not None:
            yield field.message_type
        if field.enum_type is not None:
            yield field.enum_type
    for nested in message.nested_types:
        yield from _referenced(nested)


def contract_types(message: Descriptor) -> dict[str, Descriptor | EnumDescriptor]:
    """``message`` and every message and enum its fields reach, by full name: what its encoding depends on."""
    found: dict[str, Descriptor | EnumDescriptor] = {message.full_name: message}
    pending = [message]
    while pending:
        for reached in _referenced(pending.pop()):
            if reached.full_name in found:
                continue
            found[reached.full_name] = reached
            if isinstance(reached, Descriptor):
                pending.append(reached)
    return found


def schema_id(event_class: type[Message]) -> str:
    """The ``ce-dataschema`` of a version of ``event_class``: its full name and a hash of its contract.

    The hash covers the message and every type it reaches, so a change to a value type it embeds
    makes a new version of it too.
    """
    message = _descriptor(event_class)
    digest = hashlib.sha256()
    for _, described in sorted(contract_types(message).items()):
        if isinstance(described, Descriptor):
            proto = descriptor_pb2.DescriptorProto()
            described.CopyToProto(proto)
            _canonical_message(proto)
            serialized = proto.SerializeToString(deterministic=True)
        else:
            enum = descriptor_pb2.EnumDescriptorProto()
            described.CopyToProto(enum)
            serialized = enum.SerializeToString(deterministic=True)
        digest.update(len(serialized).to_bytes(4, "big") + serialized)
    return f"{_ID_PREFIX}{message.full_name}:{digest.hexdigest()[:16]}"


def parse_schema_id(text: str) -> tuple[str, str] | None:
    """``(type, digest)`` of a schema id, or None when ``text`` is not one."""
    if not text.startswith(_ID_PREFIX):
        return None
    event_type, _, digest = text.removeprefix(_ID_PREFIX).rpartition(":")
    if not event_type or len(digest) != 16 or any(c not in "0123456789abcdef" for c in digest):
        return None
    return event_type, digest


def load(files: descriptor_pb2.FileDescriptorSet) -> descriptor_pool.DescriptorPool:
    """A private pool holding ``files``: versions of one file name never meet in one pool."""
    pool = descriptor_pool.DescriptorPool()
    try:
        for file in files.file:
            pool.Add(file)
    except Exception as exc:
        raise ContractError(f"the descriptor set does not load: {exc}") from exc
    return pool


def message_class(files: descriptor_pb2.FileDescriptorSet, full_name: str) -> type[Message]:
    """A class for ``full_name`` built from ``files`` alone, as generated code would be."""
    try:
        descriptor = load(files).FindMessageTypeByName(full_name)
    except KeyError:
        raise ContractError(f"the descriptor set does not declare {full_name}") from None
    return message_factory.GetMessageClass(descriptor)


def event_types(files: descriptor_pb2.FileDescriptorSet) -> list[type[Message]]:
    """Classes of the events of ``files``: their top-level messages no field uses (value types are not events)."""
    pool = load(files)
    declared = [
        pool.FindMessageTypeByName(f"{file.package}.{m.name}" if file.package else m.name)
        for file in files.file
        if file.name not in bundled_files()
        for m in file.message_type
    ]
    used = {t for m in declared for t in contract_types(m) if t != m.full_name}
    return [message_factory.GetMessageClass(m) for m in declared if m.full_name not in used]


def _only(files: descriptor_pb2.FileDescriptorSet, names: set[str]) -> descriptor_pb2.FileDescriptorSet:
    """``files`` keeping only the top-level messages and enums in ``names`` (and no services or extensions)."""
    kept = descriptor_pb2.FileDescriptorSet()
    for file in files.file:
        copy = kept.file.add()
        copy.CopyFrom(file)
        prefix = f"{file.package}." if file.package else ""
        del copy.message_type[:]
        copy.message_type.extend(m for m in file.message_type if prefix + m.name in names)
        del copy.enum_type[:]
        copy.enum_type.extend(e for e in file.enum_type if prefix + e.name in names)
        del copy.service[:]
        del copy.extension[:]
    return kept


def _top_level(described: Descriptor | EnumDescriptor) -> str:
    while described.containing_type is not None:
        described = described.containing_type
    return described.full_name


def breaking_changes(
    old: descriptor_pb2.FileDescriptorSet,
    new: descriptor_pb2.FileDescriptorSet,
    full_name: str,
    level: Level,
) -> list[BreakingChange]:
    """What breaks readers of ``full_name`` from ``old`` to ``new``: the rules of ``schema check``
    applied to the type and the types it reaches, not to the rest of its files."""
    names: set[str] = set()
    for files in (old, new):
        pool = load(files)
        try:
            message = pool.FindMessageTypeByName(full_name)
        except KeyError:
            raise ContractError(f"the descriptor set does not declare {full_name}") from None
        names |= {_top_level(t) for t in contract_types(message).values()}
    return check(_only(old, names), _only(new, names), level)
