"""Event contracts: the registry of Protobuf event classes, payload codecs and code generation."""

from ._codecs import JSON, PROTOBUF, Codec, JsonCodec, ProtobufCodec, codec_for
from ._codegen import compile_protos, schema_ref
from ._registry import EventRegistry, event_type_of

__all__ = [
    "JSON",
    "PROTOBUF",
    "Codec",
    "EventRegistry",
    "JsonCodec",
    "ProtobufCodec",
    "codec_for",
    "compile_protos",
    "event_type_of",
    "schema_ref",
]
