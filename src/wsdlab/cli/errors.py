"""Turn expected failures into one clear message and a non-zero exit, never a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from pydantic import ValidationError
from rich.console import Console

from wsdlab.common.config import describe_validation_error
from wsdlab.common.errors import WsdlabError

err_console = Console(stderr=True, soft_wrap=True)


class UserError(WsdlabError):
    """Bad input from the user: printed as `error: ...`, exit code 2."""


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Map config/IO/value errors raised by the layers below to `error: ...` and exit 2."""
    try:
        yield
    except ValidationError as e:
        err_console.print(f"[bold red]error:[/] invalid config\n{describe_validation_error(e)}", highlight=False)
        raise typer.Exit(2) from None
    except (WsdlabError, ValueError, FileNotFoundError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        err_console.print(f"[bold red]error:[/] {msg}", highlight=False)
        raise typer.Exit(2) from None
