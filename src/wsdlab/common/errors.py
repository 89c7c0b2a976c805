"""Expected failures every layer may raise: the CLI prints them as one line and exits non-zero.

Raise a subclass of `WsdlabError` for anything the user can fix (bad input, a damaged or missing
file, a busy run directory, a diverged run); any other exception is a bug and keeps its traceback.
The message must name the thing that is wrong (the file, the field, the step) in one line.
"""

from __future__ import annotations


class WsdlabError(Exception):
    """Base of every expected, user-facing failure (exit code 2 unless a subclass says otherwise)."""

    exit_code: int = 2


class ConfigError(WsdlabError, ValueError):
    """A config, spec, option or argument is invalid (names the field or option)."""


class DataUnavailableError(WsdlabError):
    """A data source cannot be read here (missing files, no network for a hub dataset)."""


class CheckpointError(WsdlabError):
    """A checkpoint is missing, incomplete or damaged (names the file and the problem)."""


class RunLockedError(WsdlabError):
    """Another live process holds the run (or study) directory's writer lock."""


class NonFiniteError(WsdlabError):
    """Training produced a NaN/inf loss or gradient norm (names the step and the quantity)."""

    exit_code = 3
