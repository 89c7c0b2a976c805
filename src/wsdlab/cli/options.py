"""Parsers for path and name options: an empty value is an error, not the current directory."""

from __future__ import annotations

from pathlib import Path

import typer


def path_option(text: str) -> Path:
    """`--out ''` would be Path('') == Path('.'), the current directory: refuse it instead."""
    if not str(text).strip():
        raise typer.BadParameter("must not be empty")
    return Path(text)


def name_option(text: str) -> str:
    """A name (preset, project, shape): not empty or blank."""
    if not str(text).strip():
        raise typer.BadParameter("must not be empty")
    return str(text)
