"""``eventwire schema``: build and lint Protobuf contracts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from google.protobuf import descriptor_pb2
from rich.console import Console
from rich.table import Table

from .._errors import ContractError, SchemaRefused
from ..contracts._breaking import LEVELS
from ._connect import ConnectionFlags, fail, run_connected, with_connection, with_logging
from ._output import print_json, table_console

if TYPE_CHECKING:
    from ..registry import SchemaRegistry, SchemaVersion
    from ..transport import JetStreamTransport

T = TypeVar("T")

app = typer.Typer(
    help="Event contracts: build Python modules, lint them, check changes for breakage, and the schema registry.",
    no_args_is_help=True,
)
console = Console(highlight=False, soft_wrap=True)

Level = Annotated[str, typer.Option(help="FILE, PACKAGE, WIRE_JSON or WIRE (buf's breaking levels).")]
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
    level: Level = "WIRE_JSON",
) -> None:
    """Report breaking changes of the contracts against a baseline; exit 1 if there are any.

    Only the files under SOURCE are compared, as `buf breaking --exclude-imports` does: an imported file
    (google/protobuf/timestamp.proto, say) that is no longer imported is not a change.
    """
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


def _registry_call(
    connection: ConnectionFlags,
    work: Callable[[SchemaRegistry | None], Awaitable[T]],
    *,
    create: bool = False,
    replicas: int = 1,
) -> T:
    from ..registry import SchemaRegistry

    async def opened(transport: JetStreamTransport) -> T:
        return await work(await SchemaRegistry.open(transport, create=create, replicas=replicas))

    return run_connected(connection, "eventwire-schema", opened)


@app.command()
@with_connection()
def push(
    source: Source,
    connection: ConnectionFlags,
    service: Annotated[str, typer.Option("--service", help="Who registers, recorded with each new version.")] = "ci",
    level: Level = "WIRE_JSON",
    allow_breaking: Annotated[
        bool,
        typer.Option("--allow-breaking", help="Register breaking versions too (a deliberate cut-over), recorded."),
    ] = False,
    replicas: Annotated[
        int, typer.Option("--replicas", min=1, max=5, help="Replicas of the registry's bucket, if it is made now.")
    ] = 1,
) -> None:
    """Register the events of the contracts under SOURCE in the schema registry; exit 1 if one breaks its readers.

    Each event type (a top-level message no other message uses) is checked against its latest registered
    version with the rules of `schema check`; when one is refused, none is registered.
    """
    from ..contracts._descriptor_sets import event_types
    from ..contracts._lint import descriptor_set

    if level not in LEVELS:
        fail(f"--level {level}: must be one of {', '.join(LEVELS)}", 2)
    try:
        events = event_types(descriptor_set(source, with_imports=True))
    except ContractError as exc:
        fail(str(exc))
    if not events:
        fail(f"{source} declares no event (every message is used as a field type)")

    async def work(registry: SchemaRegistry | None) -> list[SchemaRefused]:
        assert registry is not None
        # All or nothing: every type is checked before any is written.
        refused = [r for r in [await registry.refusal(e, level=level) for e in events] if r is not None]
        if refused and not allow_breaking:
            return refused
        for event_class in events:
            version, added = await registry.register(
                event_class, service=service, level=level, allow_breaking=allow_breaking
            )
            if not added:
                console.print(
                    f"{version.event_type}: version {version.version} ({version.schema_id}), registered already "
                    f"by {version.registered_by} at {version.registered_at}",
                    markup=False,
                )
                continue
            console.print(
                f"{version.event_type}: registered version {version.version} ({version.schema_id})", markup=False
            )
            for change in version.breaking_changes:
                console.print(f"  allowed: {change}", markup=False)
        return []

    refused = _registry_call(connection, work, create=True, replicas=replicas)
    for refusal in refused:
        for change in refusal.findings:
            console.print(change, markup=False)
        console.print(str(refusal).splitlines()[0], markup=False)
    if refused:
        console.print(f"nothing registered: {len(refused)} of {len(events)} event type(s) refused", markup=False)
        raise typer.Exit(1)


@app.command()
@with_connection()
def pull(
    target: Annotated[
        str, typer.Argument(metavar="TYPE|ID", help="An event type (its latest version) or a schema id.")
    ],
    connection: ConnectionFlags,
    out: Annotated[Path, typer.Option("--out", help="Where the .proto files go (import paths below it).")],
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="This version of TYPE, not the latest.")
    ] = None,
) -> None:
    """Write the .proto sources of a registered version, to generate code in any language from the registry."""
    from ..contracts._descriptor_sets import parse_schema_id
    from ..contracts._proto_source import render_file
    from ..contracts._versions import bundled_files

    async def work(registry: SchemaRegistry | None) -> tuple[str, descriptor_pb2.FileDescriptorSet]:
        if registry is None:
            fail("this server has no schema registry: nothing was registered yet")
        identifier = target
        if parse_schema_id(target) is None:
            versions = await registry.versions(target)
            chosen = [v for v in versions if version is None or v.version == version]
            if not chosen:
                fail(f"{target}: " + ("no version is registered" if not versions else f"no version {version}"))
            identifier = chosen[-1].schema_id
        elif version is not None:
            fail("--version goes with a TYPE, not with a schema id", 2)
        files = await registry.descriptor_set(identifier)
        if files is None:
            fail(f"{identifier} is not in the registry")
        return identifier, files

    identifier, files = _registry_call(connection, work)
    for file in files.file:
        if file.name.startswith("/") or ".." in Path(file.name).parts:
            fail(f"{identifier} holds a file named {file.name!r}, outside --out: not written")
    written = []
    for file in files.file:
        if file.name in bundled_files():
            continue  # the well-known types come with every protoc
        path = out / file.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_file(file))
        written.append(path)
    console.print(f"wrote {len(written)} file(s) of {identifier} into {out}", markup=False)


@app.command("list")
@with_connection()
def list_(
    connection: ConnectionFlags,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array instead of a table.")] = False,
) -> None:
    """Show the registered event types, each version with its id, time and registering service."""

    async def work(registry: SchemaRegistry | None) -> list[tuple[str, list[SchemaVersion]]]:
        if registry is None:
            return []
        return [(event_type, await registry.versions(event_type)) for event_type in await registry.types()]

    registered = _registry_call(connection, work)
    if as_json:
        print_json([{"type": t, "versions": [v.to_json() for v in versions]} for t, versions in registered])
        return
    table = Table(title=f"{len(registered)} event type(s) registered")
    for column in ("type", "version", "id", "registered at", "by", "breaking changes allowed"):
        table.add_column(column)
    for event_type, versions in registered:
        for v in versions:
            digest = v.schema_id.rpartition(":")[2]
            table.add_row(event_type, str(v.version), digest, v.registered_at, v.registered_by,
                          str(len(v.breaking_changes)) if v.breaking_changes else "")  # fmt: skip
    table_console().print(table)
