"""The `wsdlab` command: a thin typer app; each command group lives in its own module."""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from wsdlab.cli import analyze, data, doctor, export, schedule, study, train
from wsdlab.cli.errors import DEBUG_ENV, set_debug, user_errors
from wsdlab.common.allocator import tune_malloc


class _Root(TyperGroup):
    """Every command runs inside `user_errors`, so nothing it raises escapes as a bare traceback."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        with user_errors():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_Root,
    name="wsdlab",
    help="Warmup-Stable-Decay schedule research: schedules, training, cooldown branches, studies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(schedule.app, name="schedule", help="Learning-rate schedules: values and plots.")
app.add_typer(data.app, name="data", help="Corpora and tokenizers.")
app.add_typer(study.app, name="study", help="Run a study and write its report.")
app.add_typer(analyze.app, name="analyze", help="Measure geometry on run directories.")
train.register(app)  # adds the top-level `train` and `cooldown` commands
export.register(app)  # `wsdlab export CHECKPOINT OUT` (Hugging Face model directory)
doctor.register(app)  # `wsdlab doctor [--gpu]` (torch / CUDA facts, the GPU smoke test)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", envvar=DEBUG_ENV,
                               help=f"Show the full traceback of any error (also ${DEBUG_ENV}=1)."),
) -> None:
    """Warmup-Stable-Decay schedule research: schedules, training, cooldown branches, studies."""
    set_debug(debug)


def main() -> None:
    tune_malloc()  # reuse freed tensor memory instead of faulting in fresh pages every step
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
