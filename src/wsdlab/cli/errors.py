"""Turn expected failures into one `error: ...` line and a non-zero exit; keep bugs recognisable.

What is printed, and the exit code:

- `Preempted` (a run stopped on SIGUSR1/SIGTERM at a checkpoint): its message alone, not an error:
  `preempted at step N: checkpoint written, rerun the same command to resume`, exit 75 (EX_TEMPFAIL).
- `WsdlabError` (ConfigError, CheckpointError, RunLockedError, DataUnavailableError, ...):
  `error: <message>`, exit `e.exit_code` (2; NonFiniteError 3).
- pydantic `ValidationError` (a spec built from flags): `error: invalid config: <field>: <problem>`, exit 2.
- `OSError` (disk full, permission denied, a file where a directory is needed, ...):
  `error: <filename>: <reason>`, exit 2.
- A click usage error (a bad option value, a missing option): `error: <click's message> (see --help)`,
  exit 2, instead of typer's boxed usage panel.
- Anything else is a bug in wsdlab, not bad input: one line
  `internal error: <Type>: <message> (a bug in wsdlab; run with --debug for the traceback)`, exit 1.
  We print a line rather than let the traceback through so users see one consistent format, but it
  never starts with `error:` and never uses exit 2, so a bug is not mistaken for a user error.

A message of several lines (one per bad field) prints its first line after `error:` and the others
indented below it. Messages are printed literally (no rich markup), so `wsdlab[tensorboard]` stays.

`--debug` (or WSDLAB_DEBUG=1) re-raises everything instead, so Python prints the full traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from wsdlab.common.config import describe_validation_error
from wsdlab.common.errors import WsdlabError
from wsdlab.train.preempt import Preempted

err_console = Console(stderr=True, soft_wrap=True, highlight=False)

DEBUG_ENV = "WSDLAB_DEBUG"
_debug = False


class UserError(WsdlabError):
    """Bad input from the user: printed as `error: ...`, exit code 2."""


def set_debug(enabled: bool) -> None:
    """Set by the root `--debug` option (and WSDLAB_DEBUG) on every invocation."""
    global _debug
    _debug = enabled


def debug_enabled() -> bool:
    return _debug or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def print_error(message: str, label: str = "error:") -> None:
    """`<label> <first line>` in bold red, further lines indented; the message is never parsed as markup."""
    first, *rest = str(message).strip("\n").splitlines() or [""]
    text = Text.assemble((label, "bold red"), " ", first)
    for line in rest:
        text.append("\n  " + line.strip())
    err_console.print(text)


def describe_os_error(err: OSError) -> str:
    """`<file>: <reason>` (`<file> -> <file2>: <reason>` for renames); a message-only OSError as it is."""
    if err.strerror is None:  # raised with a message of our own, e.g. FileNotFoundError("data.path: ...")
        return str(err)
    where = "" if err.filename is None else str(err.filename)
    if err.filename2 is not None:
        where = f"{where} -> {err.filename2}"
    return f"{where}: {err.strerror}" if where else err.strerror


def message_of(err: BaseException) -> tuple[str, int] | None:
    """(message, exit code) of an expected failure; None for a bug."""
    if isinstance(err, WsdlabError):
        return str(err), err.exit_code
    if isinstance(err, ValidationError):
        lines = describe_validation_error(err).splitlines()
        return ("invalid config: " + lines[0] if len(lines) == 1 else "invalid config:\n" + "\n".join(lines)), 2
    if isinstance(err, OSError):
        return describe_os_error(err), 2
    return None


def report(err: Exception) -> int:
    """Print `err` as the one-line message this module promises and return the exit code."""
    if isinstance(err, Preempted):  # a requested stop, not a failure: the plain line, exit 75
        err_console.print(Text(str(err)))
        return err.exit_code
    found = message_of(err)
    if found is not None:
        print_error(found[0])
        return found[1]
    detail = " ".join(str(err).split())[:300]
    print_error(f"{type(err).__name__}{': ' + detail if detail else ''} "
                f"(a bug in wsdlab; run with --debug for the traceback)", label="internal error:")
    return 1


def _click_classes(*names: str) -> tuple[type[BaseException], ...]:
    """Classes of click's exceptions, from typer's vendored copy (typer >= 0.20) and from click itself."""
    found: list[type[BaseException]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        found += [getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type)]
    return tuple(found)


_USAGE_ERRORS = _click_classes("UsageError")
_PASS_THROUGH = (typer.Exit, typer.Abort, *_click_classes("Exit", "Abort", "ClickException"))


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Map every exception raised inside to one printed line and `typer.Exit` (see the module doc)."""
    try:
        yield
    except _USAGE_ERRORS as err:  # a bad option value or a missing option: one line, like every other error
        if type(err).__name__ == "NoArgsIsHelpError" or debug_enabled():
            raise
        print_error(f"{err.format_message().rstrip('.')} (see --help)")  # type: ignore[attr-defined]
        raise typer.Exit(2) from None
    except _PASS_THROUGH:
        raise  # typer's own exits and usage errors
    except Exception as err:
        if debug_enabled():
            raise
        raise typer.Exit(report(err)) from None
