"""`wsdlab study run | status | report`: run a whole cooldown study, see where it stands, redo its report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from wsdlab.cli.errors import UserError, user_errors
from wsdlab.cli.options import name_option, path_option

app = typer.Typer(no_args_is_help=True)
console = Console()


def _study_spec(spec: Path | None, quick: bool):  # -> StudySpec
    from wsdlab.study.spec import builtin_study_path, load_study

    if spec is not None and quick:
        raise UserError("give either a study file or --quick, not both")
    if spec is None:
        spec = builtin_study_path("quick" if quick else "default")
    return load_study(spec)


@app.command()
def run(
    spec: Path | None = typer.Argument(None, metavar="SPEC", parser=path_option, help="Study YAML; default: the built-in default study."),
    quick: bool = typer.Option(False, "--quick", help="Run the built-in quick study (well under a minute)."),
    out: Path | None = typer.Option(None, "--out", parser=path_option, help="Study folder; default ./wsdlab-out/<study name>."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Runs trained at once; > 1 trains in worker processes. Default: the study's "
        "`workers`, else one per GPU, else one per CPU core (at most 4)."),
    executor: str = typer.Option("local", "--executor", parser=name_option, help="local (in-process, or worker processes with --workers > 1), "
                                 "processes (always worker processes), or slurm (one submitit job per run)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log every run to RUN/tensorboard."),
    wandb: str | None = typer.Option(None, "--wandb", metavar="PROJECT", parser=name_option, help="Also log every run to this W&B project."),
) -> None:
    """Run a study (skipping complete runs, resuming partial ones), then write its tables and report."""
    from wsdlab.study.executors import auto_workers, make_executor
    from wsdlab.study.progress import StudyProgress
    from wsdlab.study.runner import StudyError, run_study
    from wsdlab.study.worker import SinkOptions, check_sinks

    with user_errors():
        study = _study_spec(spec, quick)
        study_dir = (out or Path("wsdlab-out") / study.name).absolute()
        sinks = SinkOptions(tensorboard=tensorboard, wandb_project=wandb)
        check_sinks(sinks)
        if workers is None:
            workers = 1 if executor == "slurm" else study.workers or auto_workers()
        ex = make_executor(executor, study_dir, workers=workers, sinks=sinks, slurm=study.slurm)
        try:
            run_study(study, study_dir, executor=ex, progress=StudyProgress(study.name, 0, Console(stderr=True)))
        except StudyError as err:
            raise UserError(str(err)) from None
        console.print(f"study [bold]{escape(study.name)}[/] complete: {escape(str(study_dir))}", highlight=False)


@app.command()
def status(
    study_dir: Path = typer.Argument(Path("wsdlab-out/default"), metavar="STUDY_DIR", parser=path_option, help="Study folder."),
) -> None:
    """Table of the study's runs: complete, partial or not started."""
    from wsdlab.study.resolve import Resolver, relative
    from wsdlab.study.runner import load_study_dir, plan_status

    with user_errors():
        study, plan = load_study_dir(study_dir)
        statuses = plan_status(plan, Resolver(plan, study_dir))
    table = Table(title=escape(f"study {study.name} ({study_dir})"))
    for col in ("run", "role", "state", "steps", "folder"):
        table.add_column(col)
    style = {"complete": "green", "waiting": "yellow"}
    for s in statuses.values():
        r = s.resolved
        state = s.state if not s.detail else f"{s.state} ({s.detail})"
        table.add_row(escape(s.key), s.role, f"[{style.get(s.state, 'red')}]{escape(state)}[/]",
                      str(r.spec.train.steps) if r else "?", escape(relative(r.path, study_dir)) if r else "-")
    console.print(table)
    done = sum(s.state == "complete" for s in statuses.values())
    console.print(f"{done} of {len(statuses)} runs complete, {len(statuses) - done} left", highlight=False)


@app.command()
def report(study_dir: Path = typer.Argument(..., metavar="STUDY_DIR", parser=path_option, help="Study folder of a finished study.")) -> None:
    """Recompute the analysis tables of a finished study and rewrite its report."""
    from wsdlab.study.progress import StudyProgress
    from wsdlab.study.runner import redo_report

    with user_errors():
        path = redo_report(study_dir, StudyProgress(study_dir.name, 0, Console(stderr=True), live=False))
    console.print(f"report: {path}", highlight=False, markup=False)


@app.command("worker", hidden=True)
def worker(
    job: Path = typer.Argument(..., metavar="JOB", parser=path_option, help="Run spec YAML written by the process executor."),
    out: Path = typer.Argument(..., metavar="OUT", parser=path_option, help="Run folder."),
    name: str = typer.Option("run", "--name", parser=name_option),
    threads: int | None = typer.Option(None, "--threads"),
    cpus: str | None = typer.Option(None, "--cpus", help="CPU list, e.g. 0,1 or 0-3."),
    tensorboard: bool = typer.Option(False, "--tensorboard"),
    wandb: str | None = typer.Option(None, "--wandb", parser=name_option),
) -> None:
    """Train one run of a study (used by `--workers N`; not meant to be called by hand)."""
    from wsdlab.common.config import read_yaml_mapping
    from wsdlab.study.worker import SinkOptions, parse_cpus, pin_threads, run_job

    with user_errors():
        pin_threads(threads, parse_cpus(cpus))
        data = read_yaml_mapping(job, "run spec")
        run_job(data, out, name, SinkOptions(tensorboard=tensorboard, wandb_project=wandb))
