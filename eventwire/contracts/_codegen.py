"""Compile ``.proto`` contracts into Python modules with grpcio-tools' bundled protoc."""

from __future__ import annotations

import hashlib
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.message import Message

from .._errors import ContractError


def compile_protos(source_dir: Path, output_dir: Path) -> list[Path]:
    """Compile every ``.proto`` under ``source_dir`` into ``output_dir`` (``_pb2.py`` and ``.pyi``).

    Import paths are relative to ``source_dir``. Returns the generated files.
    """
    from grpc_tools import protoc  # imported lazily: only schema tooling needs the compiler

    protos = sorted(p.relative_to(source_dir).as_posix() for p in source_dir.rglob("*.proto"))
    if not protos:
        raise ContractError(f"no .proto files under {source_dir}")
    output_dir.mkdir(parents=True, exist_ok=True)
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{source_dir}",
        f"-I{include}",
        f"--python_out={output_dir}",
        f"--pyi_out={output_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise ContractError(f"protoc failed on {source_dir} (its message is printed above)")
    generated = []
    for proto in protos:
        stem = proto.removesuffix(".proto")
        generated += [output_dir / f"{stem}_pb2.py", output_dir / f"{stem}_pb2.pyi"]
    return generated


def schema_ref(event_class: type[Message]) -> str:
    """A ``ce-dataschema`` value: the type plus a hash of its message descriptor."""
    proto = descriptor_pb2.DescriptorProto()
    event_class.DESCRIPTOR.CopyToProto(proto)
    digest = hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()[:16]
    return f"urn:eventwire:schema:{event_class.DESCRIPTOR.full_name}:{digest}"
