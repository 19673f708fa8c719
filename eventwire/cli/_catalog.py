"""``eventwire asyncapi``, ``topology`` and ``authz``: the event catalog and its permissions, from the Apps."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .._errors import EventwireError
from ._targets import AppDir, load_app

OutOption = Annotated[Path | None, typer.Option("--out", dir_okay=False, help="Write here instead of to stdout.")]


class TopologyFormat(StrEnum):
    mermaid = "mermaid"
    html = "html"


class AuthzFormat(StrEnum):
    conf = "conf"
    json = "json"


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=False)
    else:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            typer.echo(f"error: cannot write {out}: {exc.strerror}", err=True)
            raise typer.Exit(1) from exc
        typer.echo(f"wrote {out}", err=True)


def asyncapi(
    app: Annotated[str, typer.Argument(metavar="APP", help="The App, as module:attribute or module:factory().")],
    out: OutOption = None,
    version: Annotated[str, typer.Option("--version", help="info.version of the document.")] = "1.0.0",
    url: Annotated[
        str | None,
        typer.Option("--url", help="NATS server URL(s), comma-separated, listed as servers (credentials dropped)."),
    ] = None,
    app_dir: AppDir = None,
) -> None:
    """Write the AsyncAPI 3.0.0 document (JSON) of an App: its channels, operations and messages."""
    from .._asyncapi import asyncapi_document

    service = load_app(app, app_dir)
    servers = [s.strip() for s in url.split(",") if s.strip()] if url else []
    try:
        document = asyncapi_document(service, version=version, servers=servers)
    except EventwireError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    _emit(json.dumps(document, indent=2, ensure_ascii=False) + "\n", out)


def topology(
    apps: Annotated[
        list[str], typer.Argument(metavar="APP", help="The Apps, each as module:attribute or module:factory().")
    ],
    output_format: Annotated[
        TopologyFormat, typer.Option("--format", help="mermaid or html.")
    ] = TopologyFormat.mermaid,
    out: OutOption = None,
    app_dir: AppDir = None,
) -> None:
    """Show which service publishes and which consumes each event type, as Mermaid or a self-contained HTML page.

    Events that no listed App publishes, or that none consumes, are reported as warnings.
    """
    from .._topology import build_topology, to_mermaid
    from .._topology_html import to_html

    try:
        graph = build_topology([load_app(target, app_dir) for target in apps])
    except EventwireError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    _emit(to_html(graph) if output_format is TopologyFormat.html else to_mermaid(graph), out)
    for warning in graph.warnings:
        typer.echo(f"warning: {warning}", err=True)


def authz(
    apps: Annotated[
        list[str], typer.Argument(metavar="APP", help="The Apps, each as module:attribute or module:factory().")
    ],
    output_format: Annotated[AuthzFormat, typer.Option("--format", help="conf (nats-server) or json.")] = (
        AuthzFormat.conf
    ),
    out: OutOption = None,
    app_dir: AppDir = None,
) -> None:
    """Print the least-privilege NATS permissions each service needs, from what its App declares.

    Publish: its publications, its dead letters, the JetStream API of its own streams and durables, the acks of
    its durables. Subscribe: its own reply inbox (connect it with that --inbox-prefix).
    """
    from .._authz import grants_for, to_conf, to_json

    try:
        grants = grants_for([load_app(target, app_dir) for target in apps])
    except EventwireError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    _emit(to_json(grants) if output_format is AuthzFormat.json else to_conf(grants), out)
