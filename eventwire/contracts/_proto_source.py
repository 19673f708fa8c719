"""``.proto`` source text rebuilt from a Protobuf file descriptor.

The runtime keeps no source of a generated module, and the protobuf package has
no printer for descriptors, so the text is rendered from the file's
``FileDescriptorProto``: protoc compiles it back into the same descriptor.
Comments are not kept in generated modules and cannot be restored; custom
options appear only when their extension is imported in this process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf import descriptor_pb2, text_encoding, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from .._errors import ContractError

_Field = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    number: name.removeprefix("TYPE_").lower()
    for name, number in _Field.Type.items()
    if number not in (_Field.TYPE_MESSAGE, _Field.TYPE_ENUM, _Field.TYPE_GROUP)
}
_MAX_FIELD_NUMBER = 536_870_911
_MAX_ENUM_NUMBER = 2_147_483_647
_INDENT = "  "
# Options the syntax expresses by other means (map<K, V>).
_IMPLICIT_OPTIONS = frozenset({"map_entry"})


def file_descriptor_proto(message_type: type[Message]) -> descriptor_pb2.FileDescriptorProto:
    """The descriptor of the file that defines ``message_type``."""
    proto = descriptor_pb2.FileDescriptorProto()
    message_type.DESCRIPTOR.file.CopyToProto(proto)
    return proto


@dataclass(frozen=True)
class _Scope:
    """Where a definition is written: the full names around it, each with the type names declared in it.

    ``levels`` runs from the package (whose names do not matter here) to the innermost message.
    """

    syntax: str
    levels: tuple[tuple[str, frozenset[str]], ...]
    root: str = ""  # the full name (".pkg.Type") of the message marked as the payload

    @property
    def full_name(self) -> str:
        return self.levels[-1][0]

    def enter(self, message: descriptor_pb2.DescriptorProto) -> _Scope:
        nested = frozenset(m.name for m in message.nested_type) | {e.name for e in message.enum_type}
        return _Scope(self.syntax, (*self.levels, (f"{self.full_name}.{message.name}", nested)), self.root)

    def type_ref(self, full_name: str) -> str:
        """``full_name`` (``.pkg.Type``) as short as protoc still resolves it to the same type.

        protoc looks the first part of a name up from the innermost scope outwards, so a
        name relative to an enclosing scope is right unless a scope inside it declares that part.
        """
        for depth in range(len(self.levels) - 1, -1, -1):
            prefix = self.levels[depth][0] + "."
            if full_name.startswith(prefix):
                relative = full_name.removeprefix(prefix)
                first = relative.split(".", 1)[0]
                if not any(first in names for _, names in self.levels[depth + 1 :]):
                    return relative
        return full_name


def render_file(proto: descriptor_pb2.FileDescriptorProto, root: str = "") -> str:
    """The file as ``.proto`` text; ``root`` (a full message name) gets the ``// @RootNode`` mark.

    AsyncAPI's Protobuf schema parser takes the marked message as the payload of a file
    that declares several.
    """
    syntax = proto.syntax or "proto2"
    if syntax == "editions":
        header = f'edition = "{descriptor_pb2.Edition.Name(proto.edition).removeprefix("EDITION_")}";'
    elif syntax in ("proto2", "proto3"):
        header = f'syntax = "{syntax}";'
    else:
        raise ContractError(f"{proto.name}: cannot render syntax {syntax!r}")
    scope = _Scope(syntax, ((f".{proto.package}" if proto.package else "", frozenset()),), f".{root}" if root else "")
    blocks = [[header]]
    if proto.package:
        blocks.append([f"package {proto.package};"])
    if proto.dependency:
        blocks.append([_import(proto, index) for index in range(len(proto.dependency))])
    if options := _options(proto.options):
        blocks.append([f"option {option};" for option in options])
    blocks += [_message(message, scope) for message in proto.message_type]
    blocks += [_enum(enum, syntax) for enum in proto.enum_type]
    blocks += _extends(proto.extension, scope)
    blocks += [_service(service, scope) for service in proto.service]
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"


def _import(proto: descriptor_pb2.FileDescriptorProto, index: int) -> str:
    kind = "public " if index in proto.public_dependency else "weak " if index in proto.weak_dependency else ""
    return f"import {kind}{_quoted(proto.dependency[index])};"


def _indented(lines: Iterable[str]) -> list[str]:
    return [_INDENT + line if line else line for line in lines]


def _message(message: descriptor_pb2.DescriptorProto, outer: _Scope) -> list[str]:
    scope = outer.enter(message)
    map_entries = {
        f"{scope.full_name}.{nested.name}": (index, nested)
        for index, nested in enumerate(message.nested_type)
        if nested.options.map_entry
    }
    body = [f"option {option};" for option in _options(message.options)]
    # Nested types are written before the map field whose entry type follows them, so that
    # protoc rebuilds the nested types (map entries included) in their original order.
    pending = [(i, n) for i, n in enumerate(message.nested_type) if not n.options.map_entry]

    def nested_before(position: int) -> None:
        while pending and pending[0][0] < position:
            body.extend(_message(pending.pop(0)[1], scope))

    for enum in message.enum_type:
        body.extend(_enum(enum, scope.syntax))
    nested_before(min((index for index, _ in map_entries.values()), default=len(message.nested_type)))
    written_oneofs: set[int] = set()
    for field in message.field:
        index, entry = map_entries.get(field.type_name, (None, None))
        if index is not None:
            nested_before(index)
        if field.HasField("oneof_index") and not field.proto3_optional:
            if field.oneof_index not in written_oneofs:
                written_oneofs.add(field.oneof_index)
                body.extend(_oneof(message, field.oneof_index, scope))
            continue
        body.append(_field_line(field, scope, map_entry=entry))
    nested_before(len(message.nested_type))
    body.extend(_ranges("extensions", [(r.start, r.end - 1) for r in message.extension_range], _MAX_FIELD_NUMBER))
    body.extend(_ranges("reserved", [(r.start, r.end - 1) for r in message.reserved_range], _MAX_FIELD_NUMBER))
    body.extend(_reserved_names(message.reserved_name, scope.syntax))
    for block in _extends(message.extension, scope):
        body.extend(block)
    mark = ["// @RootNode"] if scope.full_name == scope.root else []
    return [*mark, f"message {message.name} {{", *_indented(body), "}"]


def _oneof(message: descriptor_pb2.DescriptorProto, index: int, scope: _Scope) -> list[str]:
    declaration = message.oneof_decl[index]
    members = [f for f in message.field if f.HasField("oneof_index") and f.oneof_index == index]
    body = [f"option {option};" for option in _options(declaration.options)]
    body += [_field_line(field, scope, in_oneof=True) for field in members]
    return [f"oneof {declaration.name} {{", *_indented(body), "}"]


def _field_line(
    field: descriptor_pb2.FieldDescriptorProto,
    scope: _Scope,
    *,
    map_entry: descriptor_pb2.DescriptorProto | None = None,
    in_oneof: bool = False,
) -> str:
    if field.type == _Field.TYPE_GROUP and scope.syntax != "editions":
        raise ContractError(f"field {field.name}: proto2 groups cannot be rendered")
    if map_entry is not None:
        key, value = map_entry.field
        kind = f"map<{_type_name(key, scope)}, {_type_name(value, scope)}>"
    else:
        kind = _label(field, scope.syntax, in_oneof) + _type_name(field, scope)
    options = []
    if field.HasField("default_value"):
        options.append(f"default = {_default_value(field)}")
    if field.HasField("json_name") and field.json_name != default_json_name(field.name):
        options.append(f"json_name = {_quoted(field.json_name)}")
    options += _options(field.options)
    suffix = f" [{', '.join(options)}]" if options else ""
    return f"{kind} {field.name} = {field.number}{suffix};"


def _label(field: descriptor_pb2.FieldDescriptorProto, syntax: str, in_oneof: bool) -> str:
    if field.label == _Field.LABEL_REPEATED:
        return "repeated "
    if syntax == "editions":
        return ""  # presence is a feature in editions
    if field.proto3_optional:
        return "optional "
    if syntax == "proto2" and not in_oneof:
        return "required " if field.label == _Field.LABEL_REQUIRED else "optional "
    return ""


def _type_name(field: descriptor_pb2.FieldDescriptorProto, scope: _Scope) -> str:
    return _SCALARS.get(field.type) or scope.type_ref(field.type_name)


def _default_value(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type == _Field.TYPE_STRING:
        return _quoted(field.default_value)
    if field.type == _Field.TYPE_BYTES:
        return f'"{field.default_value}"'  # stored C-escaped already
    return field.default_value


def default_json_name(name: str) -> str:
    """protoc's JSON name of a field: underscores dropped, the letter after each one upper-cased."""
    parts = name.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def _enum(enum: descriptor_pb2.EnumDescriptorProto, syntax: str) -> list[str]:
    body = [f"option {option};" for option in _options(enum.options)]
    for value in enum.value:
        options = _options(value.options)
        suffix = f" [{', '.join(options)}]" if options else ""
        body.append(f"{value.name} = {value.number}{suffix};")
    body.extend(_ranges("reserved", [(r.start, r.end) for r in enum.reserved_range], _MAX_ENUM_NUMBER))
    body.extend(_reserved_names(enum.reserved_name, syntax))
    return [f"enum {enum.name} {{", *_indented(body), "}"]


def _ranges(keyword: str, ranges: list[tuple[int, int]], maximum: int) -> list[str]:
    """``ranges`` hold inclusive ends."""
    if not ranges:
        return []
    written = []
    for start, end in ranges:
        if end >= maximum:
            written.append(f"{start} to max")
        else:
            written.append(str(start) if start == end else f"{start} to {end}")
    return [f"{keyword} {', '.join(written)};"]


def _quoted(text: str) -> str:
    """A string literal in .proto (C escapes; UTF-8 kept as is)."""
    return '"' + text_encoding.CEscape(text.encode(), as_utf8=True) + '"'


def _reserved_names(names: Iterable[str], syntax: str) -> list[str]:
    """Reserved names are string literals in proto2 and proto3, identifiers in editions."""
    written = [name if syntax == "editions" else _quoted(name) for name in names]
    return [f"reserved {', '.join(written)};"] if written else []


def _extends(fields: Iterable[descriptor_pb2.FieldDescriptorProto], scope: _Scope) -> list[list[str]]:
    by_extendee: dict[str, list[str]] = {}
    for field in fields:
        by_extendee.setdefault(field.extendee, []).append(_field_line(field, scope))
    return [
        [f"extend {scope.type_ref(extendee)} {{", *_indented(lines), "}"] for extendee, lines in by_extendee.items()
    ]


def _service(service: descriptor_pb2.ServiceDescriptorProto, scope: _Scope) -> list[str]:
    body = [f"option {option};" for option in _options(service.options)]
    for method in service.method:
        request = ("stream " if method.client_streaming else "") + scope.type_ref(method.input_type)
        response = ("stream " if method.server_streaming else "") + scope.type_ref(method.output_type)
        options = _options(method.options)
        rest = " { " + " ".join(f"option {o};" for o in options) + " }" if options else ";"
        body.append(f"rpc {method.name}({request}) returns ({response}){rest}")
    return [f"service {service.name} {{", *_indented(body), "}"]


def _options(options: Message) -> list[str]:
    """The set options of a descriptor as ``name = value`` (custom ones as ``(full.name)``)."""
    written = []
    for field, value in options.ListFields():
        if field.name in _IMPLICIT_OPTIONS and not field.is_extension:
            continue
        if field.name == "features" and not field.is_extension:
            written += _features(value)
            continue
        name = f"({field.full_name})" if field.is_extension else field.name
        values = value if field.is_repeated else [value]
        written += [f"{name} = {_option_value(field, item)}" for item in values]
    return written


def _features(features: Message) -> list[str]:
    """Editions features as ``features.name = VALUE`` (only editions files set them)."""
    if UnknownFieldSet(features):
        # The pb.cpp and pb.java extensions have no Python module: their settings cannot be named.
        raise ContractError("language-specific features (pb.cpp, pb.java) cannot be rendered")
    return [f"features.{field.name} = {_option_value(field, value)}" for field, value in features.ListFields()]


def _option_value(field: FieldDescriptor, value: object) -> str:
    if field.type == FieldDescriptor.TYPE_STRING:
        assert isinstance(value, str)
        return _quoted(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        assert isinstance(value, bytes)
        return f'"{text_encoding.CEscape(value, as_utf8=False)}"'
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None and isinstance(value, int)
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else str(value)
    if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        assert isinstance(value, Message)
        return "{ " + text_format.MessageToString(value, as_one_line=True) + " }"
    return repr(value) if isinstance(value, float) else str(value)
