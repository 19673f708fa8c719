"""``eventwire schema``: build and lint Protobuf contracts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .._errors import ContractError
from ._connect import fail, with_logging

app = typer.Typer(
    help="Event contracts: build Python modules, lint them, check changes for breakage.", no_args_is_help=True
)
console = Console(highlight=False, soft_wrap=True)

Source = Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Folder of .proto files (import root).")]


@app.command()
@with_logging()
def build(
    source: Source,
    out: Annotated[Path, typer.Option("--out", help="Where the _pb2.py modules and .pyi stubs go.")],
) -> None:
    """Compile .proto files into Python modules with type stubs (grpcio-tools' protoc)."""
    from ..contracts import compile_protos

    try:
        generated = compile_protos(source, out)
    except ContractError as exc:
        fail(str(exc))
    console.print(f"generated {len(generated)} files in {out}")


@app.command()
@with_logging()
def lint(source: Source) -> None:
    """Check the contract rules: versioned packages, event names, field names, time fields."""
    from ..contracts._lint import lint as run_lint

    try:
        findings = run_lint(source)
    except ContractError as exc:
        fail(str(exc))
    for finding in findings:
        console.print(str(finding), markup=False)
    errors = sum(1 for f in findings if f.severity == "error")
    if errors:
        console.print(f"{errors} error(s), {len(findings) - errors} warning(s)")
        raise typer.Exit(1)
    files = sum(1 for _ in source.rglob("*.proto"))
    console.print(f"{files} file(s) in {source}: no errors, {len(findings)} warning(s)")


@app.command()
@with_logging()
def lock(
    source: Source,
    out: Annotated[Path, typer.Option("--out", help="The lock file to write.")] = Path("contracts.lock"),
) -> None:
    """Write the contracts as a serialized FileDescriptorSet, the baseline for `schema check`."""
    from ..contracts._lint import descriptor_set
    from ..contracts._lock import write_lock

    try:
        write_lock(descriptor_set(source, with_imports=True), out)
    except ContractError as exc:
        fail(str(exc))
    console.print(f"locked {source} into {out}")


@app.command()
@with_logging()
def check(
    source: Source,
    against: Annotated[
        str,
        typer.Option(
            "--against",
            help="A lock file written by `schema lock`, or a git revision (branch, tag, commit) of SOURCE.",
        ),
    ],
    level: Annotated[str, typer.Option(help="FILE, PACKAGE, WIRE_JSON or WIRE (buf's breaking levels).")] = "WIRE_JSON",
) -> None:
    """Report breaking changes of the contracts against a baseline; exit 1 if there are any.

    Only the files under SOURCE are compared, as `buf breaking --exclude-imports` does: an imported file
    (google/protobuf/timestamp.proto, say) that is no longer imported is not a change.
    """
    from ..contracts._breaking import LEVELS
    from ..contracts._breaking import check as find_breaking
    from ..contracts._lint import descriptor_set
    from ..contracts._lock import read_baseline

    if level not in LEVELS:
        fail(f"--level {level}: must be one of {', '.join(LEVELS)}", 2)
    try:
        changes = find_breaking(read_baseline(source, against), descriptor_set(source, with_imports=True), level)
    except ContractError as exc:
        fail(str(exc))
    for change in changes:
        console.print(str(change), markup=False)
    if changes:
        console.print(f"{len(changes)} breaking change(s) at level {level}")
        raise typer.Exit(1)
    console.print(f"no breaking changes against {against} at level {level}")
