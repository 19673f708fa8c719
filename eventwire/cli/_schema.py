"""``eventwire schema``: build and lint Protobuf contracts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .._errors import ContractError

app = typer.Typer(help="Event contracts: build Python modules, lint the rules.", no_args_is_help=True)
console = Console(highlight=False)

Source = Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Folder of .proto files (import root).")]


@app.command()
def build(
    source: Source,
    out: Annotated[Path, typer.Option("--out", help="Where the _pb2.py modules and .pyi stubs go.")],
) -> None:
    """Compile .proto files into Python modules with type stubs (grpcio-tools' protoc)."""
    from ..contracts import compile_protos

    try:
        generated = compile_protos(source, out)
    except ContractError as exc:
        console.print(f"error: {exc}")
        raise typer.Exit(1) from exc
    console.print(f"generated {len(generated)} files in {out}")


@app.command()
def lint(source: Source) -> None:
    """Check the contract rules: versioned packages, event names, field names, time fields."""
    from ..contracts._lint import lint as run_lint

    try:
        findings = run_lint(source)
    except ContractError as exc:
        console.print(f"error: {exc}")
        raise typer.Exit(1) from exc
    for finding in findings:
        console.print(str(finding), markup=False)
    errors = sum(1 for f in findings if f.severity == "error")
    if errors:
        console.print(f"{errors} error(s), {len(findings) - errors} warning(s)")
        raise typer.Exit(1)


@app.command()
def lock(
    source: Source,
    out: Annotated[Path, typer.Option("--out", help="The lock file to write.")] = Path("contracts.lock"),
) -> None:
    """Write the contracts as a serialized FileDescriptorSet, the baseline for `schema check`."""
    from ..contracts._breaking import write_lock
    from ..contracts._lint import descriptor_set

    try:
        write_lock(descriptor_set(source), out)
    except ContractError as exc:
        console.print(f"error: {exc}")
        raise typer.Exit(1) from exc
    console.print(f"locked {source} into {out}")


@app.command()
def check(
    source: Source,
    against: Annotated[Path, typer.Option("--against", exists=True, dir_okay=False, help="A lock file.")],
    level: Annotated[str, typer.Option(help="WIRE or WIRE_JSON.")] = "WIRE_JSON",
) -> None:
    """Report breaking changes of the contracts against a lock file; exit 1 if there are any."""
    from ..contracts._breaking import LEVELS, read_lock
    from ..contracts._breaking import check as find_breaking
    from ..contracts._lint import descriptor_set

    if level not in LEVELS:
        raise typer.BadParameter(f"level must be one of {', '.join(LEVELS)}", param_hint="--level")
    try:
        changes = find_breaking(read_lock(against), descriptor_set(source), level)
    except ContractError as exc:
        console.print(f"error: {exc}")
        raise typer.Exit(1) from exc
    for change in changes:
        console.print(str(change), markup=False)
    if changes:
        console.print(f"{len(changes)} breaking change(s) at level {level}")
        raise typer.Exit(1)
