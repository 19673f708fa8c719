"""``eventwire schema check``: breaking changes between two versions of the contracts.

The levels and rule ids are buf's (configuration v2), so a team moving from ``buf breaking``
keeps its vocabulary, and a differential test holds the verdicts to the buf binary's:

- ``FILE``: generated code stays source-compatible, file by file (the strictest);
- ``PACKAGE``: the same per package, so a type may move between the files of its package;
- ``WIRE_JSON``: old and new readers agree on the binary and the JSON encoding;
- ``WIRE``: they agree on the binary encoding (renames are fine, deletions must reserve).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor

from .._errors import ContractError
from ._versions import (
    EXPLICIT,
    IMPLICIT,
    Contracts,
    Range,
    VersionPair,
    cardinality,
    enum_type,
    features,
    file_name,
    in_map_entries,
    language_feature,
    message_ranges,
    message_type,
    nested_name,
    owner,
    uncovered,
)

Level = Literal["FILE", "PACKAGE", "WIRE_JSON", "WIRE"]
LEVELS: tuple[Level, ...] = ("FILE", "PACKAGE", "WIRE_JSON", "WIRE")

_F = FieldDescriptor
_WIRE_GROUPS = {
    **dict.fromkeys((_F.TYPE_INT32, _F.TYPE_INT64, _F.TYPE_UINT32, _F.TYPE_UINT64, _F.TYPE_BOOL), 1),
    **dict.fromkeys((_F.TYPE_SINT32, _F.TYPE_SINT64), 2),
    _F.TYPE_STRING: 3,
    _F.TYPE_BYTES: 4,
    **dict.fromkeys((_F.TYPE_FIXED32, _F.TYPE_SFIXED32), 5),
    **dict.fromkeys((_F.TYPE_FIXED64, _F.TYPE_SFIXED64), 6),
    _F.TYPE_DOUBLE: 7,
    _F.TYPE_FLOAT: 8,
    _F.TYPE_GROUP: 9,
    _F.TYPE_MESSAGE: 10,
    _F.TYPE_ENUM: 11,
}
# Wire-compatible and written alike in JSON (64-bit integers are JSON strings, 32-bit ones numbers).
_WIRE_JSON_GROUPS = {
    **dict.fromkeys((_F.TYPE_INT32, _F.TYPE_UINT32), 1),
    **dict.fromkeys((_F.TYPE_INT64, _F.TYPE_UINT64), 2),
    **dict.fromkeys((_F.TYPE_FIXED32, _F.TYPE_SFIXED32), 3),
    **dict.fromkeys((_F.TYPE_FIXED64, _F.TYPE_SFIXED64), 4),
    _F.TYPE_BOOL: 5,
    _F.TYPE_SINT32: 6,
    _F.TYPE_SINT64: 7,
    _F.TYPE_STRING: 8,
    _F.TYPE_BYTES: 9,
    _F.TYPE_DOUBLE: 10,
    _F.TYPE_FLOAT: 11,
    _F.TYPE_GROUP: 12,
    _F.TYPE_MESSAGE: 13,
    _F.TYPE_ENUM: 14,
}
_TYPE_NAMES = {value: name.removeprefix("TYPE_").lower() for name, value in vars(_F).items() if name[:5] == "TYPE_"}
_INT64_TYPES = frozenset((_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_UINT64, _F.TYPE_FIXED64, _F.TYPE_SFIXED64))
# cardinality -> (wire group, wire+JSON group): repeated and map share a wire format, not a JSON one
_CARDINALITY_GROUPS = {EXPLICIT: (1, 1), IMPLICIT: (1, 1), "required": (2, 2), "repeated": (3, 3), "map": (3, 4)}
_FILE_OPTIONS = (
    "cc_enable_arenas",
    "cc_generic_services",
    "csharp_namespace",
    "go_package",
    "java_generic_services",
    "java_multiple_files",
    "java_outer_classname",
    "java_package",
    "objc_class_prefix",
    "optimize_for",
    "php_class_prefix",
    "php_metadata_namespace",
    "php_namespace",
    "py_generic_services",
    "ruby_package",
    "swift_prefix",
)
# FeatureSet extensions pb.cpp and pb.java, and the features read from them (google/protobuf/*_features.proto)
_CPP_FEATURES, _CPP_STRING_TYPE = 1000, 2
_CPP_STRING_TYPES = {1: "VIEW", 2: "CORD", 3: "STRING"}
_JAVA_FEATURES, _JAVA_UTF8_VALIDATION, _JAVA_VERIFY = 1001, 2, 2


@dataclass(frozen=True, order=True)
class BreakingChange:
    file: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.rule} {self.message}"


def _where(field: FieldDescriptor) -> str:
    if field.is_extension:
        return f"extension {field.full_name} ({field.number})"
    return f"field {owner(field).full_name}.{field.name} ({field.number})"


def _type_label(field: FieldDescriptor) -> str:
    if field.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
        return message_type(field).full_name
    if field.type == _F.TYPE_ENUM:
        return enum_type(field).full_name
    return _TYPE_NAMES[field.type]


def _default(field: FieldDescriptor) -> object:
    value = field.default_value
    return value.encode() if isinstance(value, str) else value


def _defaults_equal(before: FieldDescriptor, after: FieldDescriptor) -> bool:
    old, new = _default(before), _default(after)
    if isinstance(old, bytes) or isinstance(new, bytes):
        return old == new
    assert isinstance(old, int | float) and isinstance(new, int | float)
    if math.isnan(old) or math.isnan(new):
        return math.isnan(old) and math.isnan(new)
    if _F.TYPE_FLOAT in (before.type, after.type) and before.type != after.type:

        def single(value: float) -> float:
            return float(struct.unpack("<f", struct.pack("<f", value))[0])

        return single(old) == single(new)
    return old == new  # Python compares int and float exactly


# -- the rules: each yields the changes it finds ---------------------------------------------------

_Changes = Iterator[tuple[str, str]]  # (file, what changed)
_Rule = Callable[[VersionPair], _Changes]
_FieldCheck = Callable[[VersionPair, FieldDescriptor, FieldDescriptor], str | None]  # what changed, if anything


def _no_delete_in_file(kind: str) -> _Rule:
    def rule(pair: VersionPair) -> _Changes:
        for before, after in pair.files():
            old = {nested_name(n, before) for n, f in pair.old.declared[kind].items() if f.name == before.name}
            new = {nested_name(n, after) for n, f in pair.new.declared[kind].items() if f.name == after.name}
            for gone in sorted(old - new):
                yield (after.name, f"{kind} {gone} was deleted from the file")

    return rule


def _no_delete_in_package(kind: str) -> _Rule:
    def rule(pair: VersionPair) -> _Changes:
        # As buf does: services are compared in every package still present, messages, enums and
        # extensions only in packages still declaring one (deleting the last extension of a package
        # is left to FILE's EXTENSION_NO_DELETE).
        declaring = pair.new.files.values() if kind == "service" else pair.new.declared[kind].values()
        packages = {f.package for f in declaring}
        for name, file in pair.old.declared[kind].items():
            if file.package in packages and name not in pair.new.declared[kind]:
                yield (file.name, f"{kind} {name} was deleted from package {file.package}")

    return rule


def _file_no_delete(pair: VersionPair) -> _Changes:
    yield from ((n, "the file was deleted") for n in pair.old.files if n not in pair.new.files)


def _package_no_delete(pair: VersionPair) -> _Changes:
    packages = {f.package for f in pair.new.files.values()}
    for name, file in pair.old.files.items():
        if file.package not in packages:
            yield (name, f"package {file.package or '(none)'} was deleted")


def _file_same(attribute: str) -> _Rule:
    def rule(pair: VersionPair) -> _Changes:
        for before, after in pair.files():
            old, new = _file_value(pair.old, before, attribute), _file_value(pair.new, after, attribute)
            if old != new:
                yield (after.name, f"{attribute} changed from {old!r} to {new!r}")

    return rule


def _file_value(contracts: Contracts, file: FileDescriptor, attribute: str) -> object:
    if attribute == "package":
        return file.package
    if attribute == "syntax":
        return contracts.syntax[file.name]
    return getattr(file.GetOptions(), attribute)


def _field_no_delete(number_reserved: bool, name_reserved: bool) -> _Rule:
    def rule(pair: VersionPair) -> _Changes:
        for before, after in pair.messages():
            declared = pair.new.proto(after)
            reserved = message_ranges(declared.reserved_range)
            for field in before.fields:
                if field.number in after.fields_by_number:
                    continue
                if number_reserved and not uncovered([(field.number, field.number)], reserved):
                    continue
                if name_reserved and field.name in declared.reserved_name:
                    continue
                needed = " without reserving its number" if number_reserved else ""
                needed = " without reserving its name" if name_reserved else needed
                yield (after.file.name, f"{_where(field)} was deleted{needed}")

    return rule


def _enum_value_no_delete(number_reserved: bool, name_reserved: bool) -> _Rule:
    def rule(pair: VersionPair) -> _Changes:
        for before, after in pair.enums():
            now = {v.number for v in after.values}
            declared = pair.new.enum_proto(after)
            reserved = [(r.start, r.end) for r in declared.reserved_range]
            for number in sorted({v.number for v in before.values} - now):
                names = [v.name for v in before.values if v.number == number]
                if number_reserved and not uncovered([(number, number)], reserved):
                    continue
                if name_reserved and all(n in declared.reserved_name for n in names):
                    continue
                needed = " without reserving its number" if number_reserved else ""
                needed = " without reserving its name" if name_reserved else needed
                what = f"value {'/'.join(names)} ({number}) of enum {after.full_name} was deleted{needed}"
                yield (after.file.name, what)

    return rule


def _enum_value_same_name(pair: VersionPair) -> _Changes:
    for before, after in pair.enums():
        for number in sorted({v.number for v in before.values} & {v.number for v in after.values}):
            old = sorted(v.name for v in before.values if v.number == number)
            new = sorted(v.name for v in after.values if v.number == number)
            if not set(old) <= set(new):
                what = f"value {number} of enum {after.full_name} was renamed from {'/'.join(old)} to {'/'.join(new)}"
                yield (after.file.name, what)


def _enum_same_type(pair: VersionPair) -> _Changes:
    for before, after in pair.enums():
        if before.is_closed != after.is_closed:
            state = "closed" if after.is_closed else "open"
            yield (after.file.name, f"enum {after.full_name} became {state}")


def _same_json_format(kind: str) -> _Rule:
    def rule(pair: VersionPair) -> _Changes:
        allow = descriptor_pb2.FeatureSet.ALLOW
        elements = pair.messages() if kind == "message" else pair.enums()
        for before, after in elements:
            if features(before).json_format == allow and features(after).json_format != allow:
                yield after.file.name, f"{kind} {after.full_name} no longer supports JSON"

    return rule


def _field_rule(check: _FieldCheck) -> _Rule:
    def rule(pair: VersionPair) -> _Changes:
        for before, after in pair.fields():
            what = check(pair, before, after)
            if what is not None:
                yield file_name(after), f"{_where(after)} {what}"

    return rule


def _same_type(pair: VersionPair, before: FieldDescriptor, after: FieldDescriptor) -> str | None:
    if before.type != after.type or (
        before.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP, _F.TYPE_ENUM) and _type_label(before) != _type_label(after)
    ):
        return f"changed type from {_type_label(before)} to {_type_label(after)}"
    return None


def _compatible_type(groups: dict[int, int], string_to_bytes: bool) -> _FieldCheck:
    def check(pair: VersionPair, before: FieldDescriptor, after: FieldDescriptor) -> str | None:
        changed = f"changed type from {_type_label(before)} to {_type_label(after)}"
        if groups[before.type] != groups[after.type]:
            allowed = string_to_bytes and (before.type, after.type) == (_F.TYPE_STRING, _F.TYPE_BYTES)
            return None if allowed else changed
        if after.type == _F.TYPE_ENUM and _type_label(before) != _type_label(after):
            # Another enum is compatible when it has the same short name and keeps every old value.
            old_values = {(v.name, v.number) for v in enum_type(before).values}
            new_values = {(v.name, v.number) for v in enum_type(after).values}
            same = enum_type(before).name == enum_type(after).name and old_values <= new_values
            return None if same else changed
        if after.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP) and _type_label(before) != _type_label(after):
            return changed
        return None

    return check


def _cardinality_check(group: int | None) -> _FieldCheck:
    def check(pair: VersionPair, before: FieldDescriptor, after: FieldDescriptor) -> str | None:
        if in_map_entries(before, after):
            return None
        old, new = cardinality(before), cardinality(after)
        differs = old != new if group is None else _CARDINALITY_GROUPS[old][group] != _CARDINALITY_GROUPS[new][group]
        return f"changed cardinality from {old} to {new}" if differs else None

    return check


def _same_name(pair: VersionPair, before: FieldDescriptor, after: FieldDescriptor) -> str | None:
    old, new = (before.full_name, after.full_name) if before.is_extension else (before.name, after.name)
    return f"was renamed from {old} to {new}" if old != new else None


def _same_json_name(pair: VersionPair, before: FieldDescriptor, after: FieldDescriptor) -> str | None:
    if before.is_extension or before.json_name == after.json_name:
        return None
    return f"changed its JSON name from {before.json_name} to {after.json_name}"


def _same_oneof(pair: VersionPair, before: FieldDescriptor, after: FieldDescriptor) -> str | None:
    old, new = pair.old.oneof(before), pair.new.oneof(after)
    if old == new:
        return None
    if old is not None and new is not None:
        return f"moved from oneof {old} to oneof {new}"
    return "moved into a oneof" if new is not None else "moved out of a oneof"


def _same_default(pair: VersionPair, before: FieldDescriptor, after: FieldDescriptor) -> str | None:
    if before.is_repeated or after.is_repeated or before.message_type is not None or after.message_type is not None:
        return None
    old, new = _default(before), _default(after)
    if not old and not new:
        return None
    return None if _defaults_equal(before, after) else f"changed its default from {old!r} to {new!r}"


def _same_jstype(pair: VersionPair, before: FieldDescriptor, after: FieldDescriptor) -> str | None:
    if before.type not in _INT64_TYPES or after.type not in _INT64_TYPES:
        return None
    old, new = before.GetOptions().jstype, after.GetOptions().jstype
    return f"changed option jstype from {old} to {new}" if old != new else None


def _cpp_string_type(contracts: Contracts, field: FieldDescriptor) -> tuple[str, bool]:
    """The C++ string type (and whether it is a STRING_PIECE): ``ctype`` before edition 2024, else pb.cpp."""
    options = contracts.declared_field(field).options
    if options.HasField("ctype") and contracts.edition[file_name(field)] < descriptor_pb2.EDITION_2024:
        kind = descriptor_pb2.FieldOptions.CType.Name(options.ctype)
        return ("STRING", True) if kind == "STRING_PIECE" else (kind, False)
    string_type = language_feature(contracts, field, _CPP_FEATURES, _CPP_STRING_TYPE)
    if string_type is not None:
        return _CPP_STRING_TYPES.get(string_type, str(string_type)), False
    return ("VIEW" if contracts.edition[file_name(field)] >= descriptor_pb2.EDITION_2024 else "STRING"), False


def _same_cpp_string_type(pair: VersionPair, before: FieldDescriptor, after: FieldDescriptor) -> str | None:
    strings = (_F.TYPE_STRING, _F.TYPE_BYTES)
    if in_map_entries(before, after) or before.type not in strings or after.type not in strings:
        return None
    old, new = _cpp_string_type(pair.old, before), _cpp_string_type(pair.new, after)
    if old == new or (old[1] and new == ("STRING", False)):  # STRING_PIECE to STRING is allowed
        return None
    return f"changed its C++ string type from {old[0]} to {new[0]}"


def _utf8_validation(contracts: Contracts, field: FieldDescriptor, java: bool) -> int:
    resolved: int = features(field).utf8_validation
    if not java:
        return resolved
    file_options = contracts.file_protos[file_name(field)].options
    if contracts.syntax[file_name(field)] != "editions" or file_options.HasField("java_string_check_utf8"):
        return descriptor_pb2.FeatureSet.VERIFY if file_options.java_string_check_utf8 else resolved
    java_validation = language_feature(contracts, field, _JAVA_FEATURES, _JAVA_UTF8_VALIDATION)
    return descriptor_pb2.FeatureSet.VERIFY if java_validation == _JAVA_VERIFY else resolved


def _same_utf8(java: bool) -> _FieldCheck:
    def check(pair: VersionPair, before: FieldDescriptor, after: FieldDescriptor) -> str | None:
        if before.type != _F.TYPE_STRING or after.type != _F.TYPE_STRING:
            return None
        old, new = _utf8_validation(pair.old, before, java), _utf8_validation(pair.new, after, java)
        return f"changed {'Java ' if java else ''}UTF-8 validation" if old != new else None

    return check


def _required_fields(pair: VersionPair) -> _Changes:
    for before, after in pair.messages():
        # The declared label, as buf reads it: an editions LEGACY_REQUIRED field is not counted.
        old = {f.number for f in pair.old.proto(before).field if f.label == _F.LABEL_REQUIRED}
        new = {f.number for f in pair.new.proto(after).field if f.label == _F.LABEL_REQUIRED}
        for number in sorted(old - new):
            yield (after.file.name, f"message {after.full_name} lost required field {number}")
        for number in sorted(new - old):
            yield (after.file.name, f"message {after.full_name} gained required field {number}")


def _message_reserved_kept(pair: VersionPair) -> _Changes:
    for before, after in pair.messages():
        old, new = pair.old.proto(before), pair.new.proto(after)
        yield from _ranges_kept(after, "reserved", message_ranges(old.reserved_range), new.reserved_range)
        yield from _names_kept(after, old.reserved_name, new.reserved_name)


def _enum_reserved_kept(pair: VersionPair) -> _Changes:
    for before_enum, after_enum in pair.enums():
        old_enum, new_enum = pair.old.enum_proto(before_enum), pair.new.enum_proto(after_enum)
        old_ranges = [(r.start, r.end) for r in old_enum.reserved_range]
        yield from _ranges_kept(after_enum, "reserved", old_ranges, new_enum.reserved_range, exclusive=False)
        yield from _names_kept(after_enum, old_enum.reserved_name, new_enum.reserved_name)


def _ranges_kept(
    element: Descriptor | EnumDescriptor,
    kind: str,
    old: list[tuple[int, int]],
    new: Iterable[Range],
    exclusive: bool = True,
) -> _Changes:
    now = [(r.start, r.end - 1 if exclusive else r.end) for r in new]
    for start, end in uncovered(old, now):
        yield (element.file.name, f"{kind} range {start}-{end} of {element.full_name} shrank")


def _names_kept(element: Descriptor | EnumDescriptor, old: Iterable[str], new: Iterable[str]) -> _Changes:
    for name in sorted(set(old) - set(new)):
        yield (element.file.name, f"reserved name {name} of {element.full_name} was removed")


def _extension_ranges_kept(pair: VersionPair) -> _Changes:
    for before, after in pair.messages():
        old, new = pair.old.proto(before), pair.new.proto(after)
        yield from _ranges_kept(after, "extension", message_ranges(old.extension_range), new.extension_range)


def _oneof_no_delete(pair: VersionPair) -> _Changes:
    for before, after in pair.messages():
        synthetic = {f.containing_oneof.name for f in before.fields if f.containing_oneof and not pair.old.oneof(f)}
        for oneof in sorted(set(before.oneofs_by_name) - set(after.oneofs_by_name) - synthetic):
            yield (after.file.name, f"oneof {oneof} of {after.full_name} was deleted")


def _standard_descriptor_accessor(pair: VersionPair) -> _Changes:
    for before, after in pair.messages():
        if (
            not before.GetOptions().no_standard_descriptor_accessor
            and after.GetOptions().no_standard_descriptor_accessor
        ):
            yield (after.file.name, f"message {after.full_name} set no_standard_descriptor_accessor")


def _rpc_no_delete(pair: VersionPair) -> _Changes:
    for name, before in pair.old.services.items():
        if name in pair.new.services:
            now = {m.name for m in pair.new.services[name].method}
            for method in before.method:
                if method.name not in now:
                    file = pair.new.declared["service"][name].name
                    yield (file, f"rpc {name}.{method.name} was deleted")


def _rpc_same(attribute: str) -> _Rule:
    def rule(pair: VersionPair) -> _Changes:
        for name, before, after in pair.methods():
            old, new = _method_value(before, attribute), _method_value(after, attribute)
            if old != new:
                file = pair.new.declared["service"][name.rsplit(".", 1)[0]].name
                yield (file, f"rpc {name} changed {attribute} from {old} to {new}")

    return rule


def _method_value(method: descriptor_pb2.MethodDescriptorProto, attribute: str) -> object:
    if attribute == "idempotency_level":
        return method.options.idempotency_level
    return getattr(method, attribute)


# rule id -> (levels, rule); the categories are buf's v2 breaking categories
_ALL: frozenset[Level] = frozenset(LEVELS)
_SOURCE: frozenset[Level] = frozenset(("FILE", "PACKAGE"))
_JSON_AND_SOURCE: frozenset[Level] = frozenset(("FILE", "PACKAGE", "WIRE_JSON"))
_RULES: dict[str, tuple[frozenset[Level], _Rule]] = {
    "FILE_NO_DELETE": (frozenset(("FILE",)), _file_no_delete),
    "MESSAGE_NO_DELETE": (frozenset(("FILE",)), _no_delete_in_file("message")),
    "ENUM_NO_DELETE": (frozenset(("FILE",)), _no_delete_in_file("enum")),
    "SERVICE_NO_DELETE": (frozenset(("FILE",)), _no_delete_in_file("service")),
    "EXTENSION_NO_DELETE": (frozenset(("FILE",)), _no_delete_in_file("extension")),
    "PACKAGE_NO_DELETE": (frozenset(("PACKAGE",)), _package_no_delete),
    "PACKAGE_MESSAGE_NO_DELETE": (frozenset(("PACKAGE",)), _no_delete_in_package("message")),
    "PACKAGE_ENUM_NO_DELETE": (frozenset(("PACKAGE",)), _no_delete_in_package("enum")),
    "PACKAGE_SERVICE_NO_DELETE": (frozenset(("PACKAGE",)), _no_delete_in_package("service")),
    "PACKAGE_EXTENSION_NO_DELETE": (frozenset(("PACKAGE",)), _no_delete_in_package("extension")),
    "FILE_SAME_SYNTAX": (_SOURCE, _file_same("syntax")),
    **{f"FILE_SAME_{option.upper()}": (_SOURCE, _file_same(option)) for option in _FILE_OPTIONS},
    "ENUM_SAME_TYPE": (_SOURCE, _enum_same_type),
    "ENUM_VALUE_NO_DELETE": (_SOURCE, _enum_value_no_delete(number_reserved=False, name_reserved=False)),
    "EXTENSION_MESSAGE_NO_DELETE": (_SOURCE, _extension_ranges_kept),
    "FIELD_NO_DELETE": (_SOURCE, _field_no_delete(number_reserved=False, name_reserved=False)),
    "FIELD_SAME_TYPE": (_SOURCE, _field_rule(_same_type)),
    "FIELD_SAME_CARDINALITY": (_SOURCE, _field_rule(_cardinality_check(None))),
    "FIELD_SAME_CPP_STRING_TYPE": (_SOURCE, _field_rule(_same_cpp_string_type)),
    "FIELD_SAME_JAVA_UTF8_VALIDATION": (_SOURCE, _field_rule(_same_utf8(java=True))),
    "FIELD_SAME_UTF8_VALIDATION": (_SOURCE, _field_rule(_same_utf8(java=False))),
    "FIELD_SAME_JSTYPE": (_SOURCE, _field_rule(_same_jstype)),
    "MESSAGE_NO_REMOVE_STANDARD_DESCRIPTOR_ACCESSOR": (_SOURCE, _standard_descriptor_accessor),
    "ONEOF_NO_DELETE": (_SOURCE, _oneof_no_delete),
    "RPC_NO_DELETE": (_SOURCE, _rpc_no_delete),
    "ENUM_SAME_JSON_FORMAT": (_JSON_AND_SOURCE, _same_json_format("enum")),
    "MESSAGE_SAME_JSON_FORMAT": (_JSON_AND_SOURCE, _same_json_format("message")),
    "ENUM_VALUE_SAME_NAME": (_JSON_AND_SOURCE, _enum_value_same_name),
    "FIELD_SAME_NAME": (_JSON_AND_SOURCE, _field_rule(_same_name)),
    "FIELD_SAME_JSON_NAME": (_JSON_AND_SOURCE, _field_rule(_same_json_name)),
    "FIELD_SAME_DEFAULT": (_ALL, _field_rule(_same_default)),
    "FIELD_SAME_ONEOF": (_ALL, _field_rule(_same_oneof)),
    "FILE_SAME_PACKAGE": (_ALL, _file_same("package")),
    "MESSAGE_SAME_REQUIRED_FIELDS": (_ALL, _required_fields),
    "RESERVED_MESSAGE_NO_DELETE": (_ALL, _message_reserved_kept),
    "RESERVED_ENUM_NO_DELETE": (_ALL, _enum_reserved_kept),
    **{
        f"RPC_SAME_{rule}": (_ALL, _rpc_same(attribute))
        for rule, attribute in (
            ("CLIENT_STREAMING", "client_streaming"),
            ("SERVER_STREAMING", "server_streaming"),
            ("REQUEST_TYPE", "input_type"),
            ("RESPONSE_TYPE", "output_type"),
            ("IDEMPOTENCY_LEVEL", "idempotency_level"),
        )
    },
    "ENUM_VALUE_NO_DELETE_UNLESS_NAME_RESERVED": (
        frozenset(("WIRE_JSON",)),
        _enum_value_no_delete(number_reserved=False, name_reserved=True),
    ),
    "FIELD_NO_DELETE_UNLESS_NAME_RESERVED": (
        frozenset(("WIRE_JSON",)),
        _field_no_delete(number_reserved=False, name_reserved=True),
    ),
    "FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY": (frozenset(("WIRE_JSON",)), _field_rule(_cardinality_check(1))),
    "FIELD_WIRE_JSON_COMPATIBLE_TYPE": (
        frozenset(("WIRE_JSON",)),
        _field_rule(_compatible_type(_WIRE_JSON_GROUPS, string_to_bytes=False)),
    ),
    "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED": (
        frozenset(("WIRE_JSON", "WIRE")),
        _enum_value_no_delete(number_reserved=True, name_reserved=False),
    ),
    "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED": (
        frozenset(("WIRE_JSON", "WIRE")),
        _field_no_delete(number_reserved=True, name_reserved=False),
    ),
    "FIELD_WIRE_COMPATIBLE_CARDINALITY": (frozenset(("WIRE",)), _field_rule(_cardinality_check(0))),
    "FIELD_WIRE_COMPATIBLE_TYPE": (
        frozenset(("WIRE",)),
        _field_rule(_compatible_type(_WIRE_GROUPS, string_to_bytes=True)),
    ),
}


def check(
    old: descriptor_pb2.FileDescriptorSet, new: descriptor_pb2.FileDescriptorSet, level: Level = "WIRE_JSON"
) -> list[BreakingChange]:
    """The breaking changes from ``old`` to ``new`` at ``level``, sorted by file, rule and message."""
    if level not in LEVELS:
        raise ContractError(f"unknown level {level!r}: use one of {', '.join(LEVELS)}")
    pair = VersionPair(Contracts(old), Contracts(new))
    return sorted(
        BreakingChange(file, rule, what)
        for rule, (levels, find) in _RULES.items()
        if level in levels
        for file, what in find(pair)
    )
