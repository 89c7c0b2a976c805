"""`wsdlab data ...` commands (filled in by its module owner)."""

import typer

app = typer.Typer(no_args_is_help=True)
