"""Finding the user's code a command line names: an App as ``module:attribute`` or ``module:factory()``,
and modules to import for their event types."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer

from .._app import App
from ._connect import fail

AppDir = Annotated[
    Path | None,
    typer.Option(
        "--app-dir",
        envvar="EVENTWIRE_APP_DIR",
        file_okay=False,
        help="Folder to import the App and its contracts from (default: the current one).",
    ),
]


def use_app_dir(app_dir: Path | None) -> None:
    """Put ``app_dir`` (default: the current folder) first on ``sys.path``, as ``python -m`` would."""
    entry = str(app_dir.resolve()) if app_dir is not None else ""
    if entry not in sys.path:
        sys.path.insert(0, entry)


def _import(module_name: str, hint: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        fail(f"{hint}: cannot import {module_name}: {exc}", 2)


def import_modules(modules: Sequence[str], app_dir: Path | None = None) -> None:
    """Import each module (they register their event types); one that cannot be imported is a usage error."""
    use_app_dir(app_dir)
    for module in modules:
        _import(module, "--import")


def load_app(target: str, app_dir: Path | None = None) -> App:
    """Import ``module:attribute`` and return the App it names.

    ``module:factory()`` calls ``factory`` without arguments and returns the App it
    builds; the parentheses must be written, so that naming a function never runs it.
    """
    module_name, _, attribute = target.partition(":")
    call = attribute.endswith("()")
    attribute = attribute.removesuffix("()")
    if not module_name or not attribute:
        fail(f"APP {target!r}: expected module:app or module:factory(), e.g. myservice.main:app", 2)
    use_app_dir(app_dir)
    module = _import(module_name, "APP")
    if not hasattr(module, attribute):
        fail(f"APP {target}: module {module_name} has no attribute {attribute!r}", 2)
    found = getattr(module, attribute)
    if call:
        if not callable(found):
            fail(f"APP {target}: {module_name}:{attribute} is not callable", 2)
        found = found()
    if not isinstance(found, App):
        kind = "a class" if isinstance(found, type) else f"a {type(found).__name__}"
        fail(f"APP {target}: {kind}, not an eventwire App", 2)
    return found
