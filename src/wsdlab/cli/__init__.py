"""The `wsdlab` command: a thin typer app; each command group lives in its own module."""

from __future__ import annotations

import sys

import typer

from wsdlab.cli import analyze, data, schedule, study, train

app = typer.Typer(
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
