"""Finding the App a command line names: ``module:attribute`` or ``module:factory()``."""

from __future__ import annotations

import importlib
import sys

import typer

from .._app import App


def load_app(target: str) -> App:
    """Import ``module:attribute`` and return the App it names.

    ``module:factory()`` calls ``factory`` without arguments and returns the App it
    builds; the parentheses must be written, so that naming a function never runs it.
    """
    module_name, _, attribute = target.partition(":")
    call = attribute.endswith("()")
    attribute = attribute.removesuffix("()")
    if not module_name or not attribute:
        raise typer.BadParameter("expected module:app or module:factory(), e.g. myservice.main:app", param_hint="APP")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise typer.BadParameter(f"cannot import {module_name}: {exc}", param_hint="APP") from exc
    found = getattr(module, attribute, None)
    if call:
        if not callable(found):
            raise typer.BadParameter(f"{module_name}:{attribute} is not callable", param_hint="APP")
        found = found()
    if not isinstance(found, App):
        raise typer.BadParameter(f"{target} is not an eventwire App", param_hint="APP")
    return found
