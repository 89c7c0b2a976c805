"""`wsdlab train` and `wsdlab cooldown` (filled in by the train module owner)."""

import typer


def register(app: typer.Typer) -> None:
    """Add the top-level commands to the root app."""
