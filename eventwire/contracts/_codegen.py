"""Compile ``.proto`` contracts into Python modules with grpcio-tools' bundled protoc."""

from __future__ import annotations

from pathlib import Path

from google.protobuf.message import Message

from .._errors import ContractError


def well_known_types_dir() -> Path:
    """Where grpcio-tools keeps the ``google/protobuf/*.proto`` files it compiles against."""
    from grpc_tools import protoc  # imported lazily: only schema tooling needs the compiler

    return Path(protoc.__file__).parent / "_proto"


def run_protoc(source_dir: Path, *options: str) -> list[str]:
    """Run grpcio-tools' protoc with ``options`` on every ``.proto`` under ``source_dir``.

    ``source_dir`` is the import root, with the well-known types beside it. Returns the
    compiled files, relative to ``source_dir``.
    """
    from grpc_tools import protoc

    protos = sorted(p.relative_to(source_dir).as_posix() for p in source_dir.rglob("*.proto"))
    if not protos:
        raise ContractError(f"no .proto files under {source_dir}")
    if protoc.main(["protoc", f"-I{source_dir}", f"-I{well_known_types_dir()}", *options, *protos]) != 0:
        raise ContractError(f"protoc failed on {source_dir} (its message is printed above)")
    return protos


def compile_protos(source_dir: Path, output_dir: Path) -> list[Path]:
    """Compile every ``.proto`` under ``source_dir`` into ``output_dir`` (``_pb2.py`` and ``.pyi``).

    Import paths are relative to ``source_dir``. Returns the generated files.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    protos = run_protoc(source_dir, f"--python_out={output_dir}", f"--pyi_out={output_dir}")
    generated = []
    for proto in protos:
        stem = proto.removesuffix(".proto")
        generated += [output_dir / f"{stem}_pb2.py", output_dir / f"{stem}_pb2.pyi"]
    return generated


def schema_ref(event_class: type[Message]) -> str:
    """A ``ce-dataschema`` value: the type plus a hash of its contract (the registry's id of this version)."""
    from ._descriptor_sets import schema_id

    return schema_id(event_class)
