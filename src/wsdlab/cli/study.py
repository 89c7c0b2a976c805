"""`wsdlab study run | plan | list | status | report | claims`: run a study, see its plan and cost before
it runs, list the built-in studies, see where a study stands, redo its report, read its verdicts on the
papers' claims."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from wsdlab.cli.errors import user_errors
from wsdlab.cli.options import name_option, path_option
from wsdlab.common.errors import ConfigError

app = typer.Typer(no_args_is_help=True)
console = Console()

STUDY_ARG_HELP = "Built-in study name (see `wsdlab study list`) or a study YAML file; default: default."
QUICK_HELP = "The study's quick variant (<name>-quick): a small version that runs in a minute or two."


def _load(spec: str | None, quick: bool):  # -> StudySpec
    from wsdlab.study.spec import find_study, load_study

    return load_study(find_study(spec, quick))


@app.command()
def run(
    spec: str | None = typer.Argument(None, metavar="NAME|FILE", parser=name_option, help=STUDY_ARG_HELP),
    quick: bool = typer.Option(False, "--quick", help=QUICK_HELP),
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
    from wsdlab.study.runner import run_study
    from wsdlab.study.worker import SinkOptions, check_sinks

    with user_errors():
        study = _load(spec, quick)
        study_dir = (out or Path("wsdlab-out") / study.name).absolute()
        sinks = SinkOptions(tensorboard=tensorboard, wandb_project=wandb)
        check_sinks(sinks)
        if workers is None:
            workers = 1 if executor == "slurm" else study.workers or auto_workers()
        ex = make_executor(executor, study_dir, workers=workers, sinks=sinks, slurm=study.slurm)
        run_study(study, study_dir, executor=ex, progress=StudyProgress(study.name, 0, Console(stderr=True)))
        console.print(f"study [bold]{escape(study.name)}[/] complete: {escape(str(study_dir))}", highlight=False)


def _gib(nbytes: float) -> str:
    """Bytes as GiB: one decimal from 1 GiB up, three significant digits below."""
    gib = nbytes / 2**30
    return f"{gib:.1f}" if gib >= 1 else f"{gib:.3g}"


def _print_memory(rows: list[dict], memory: list, device: str, gpus: int) -> None:
    """One line per distinct memory estimate (largest first) with the stages whose runs have it; one warning
    line when some do not fit `device`."""
    from wsdlab.study.compute import DEVICE_MEMORY, fits

    groups: dict = {}
    for r, mem in zip(rows, memory):
        groups.setdefault(mem, {}).setdefault(r["stage"], 0)
        groups[mem][r["stage"]] += 1
    console.print(f"memory per GPU with {gpus} GPU{'s' if gpus > 1 else ''} per run (--gpus), weights + gradients + "
                  "AdamW + activations of a micro batch:", highlight=False, markup=False)
    for mem, stages in sorted(groups.items(), key=lambda kv: -kv[0].total):
        where = ", ".join(f"{n} run{'s' if n > 1 else ''} of {stage}" for stage, n in stages.items())
        console.print(f"  {_gib(mem.total)} GiB = {_gib(mem.weights)} + {_gib(mem.gradients)} + {_gib(mem.optimizer)} + "
                      f"{_gib(mem.activations)} (micro batch {mem.micro_batch}): {where}", highlight=False, markup=False)
    over = [r["key"] for r, mem in zip(rows, memory) if not fits(mem, device)]
    if over:
        console.print(f"warning: {len(over)} runs need more than the {DEVICE_MEMORY[device] / 2**30:.0f} GiB of one "
                      f"{device} (first: {over[0]}); use more --gpus with train.fsdp, train.activation_checkpointing "
                      "or a smaller train.micro_batch_size", highlight=False, markup=False)


@app.command()
def plan(
    spec: str | None = typer.Argument(None, metavar="NAME|FILE", parser=name_option, help=STUDY_ARG_HELP),
    quick: bool = typer.Option(False, "--quick", help=QUICK_HELP),
    out: Path | None = typer.Option(None, "--out", parser=path_option, help="Study folder (to show done/left); default ./wsdlab-out/<study name>."),
    device: str = typer.Option("h100", "--device", parser=name_option, help="GPU for the GPU-hours and memory estimates (h100, a100, h200, ...)."),
    mfu: float = typer.Option(0.4, "--mfu", help="Model FLOPs utilisation assumed for the GPU-hours estimate."),
    gpus: int = typer.Option(8, "--gpus", min=1, help="GPUs one run trains on (unless its stage sets resources.gpus_per_run), for the memory per GPU (FSDP runs shard "
                             "their state over them; a run without micro_batch_size splits its batch over them)."),
    show: str | None = typer.Option(None, "--show", metavar="RUN", help="Print this run's full RunSpec (YAML), as it "
                                    "will train, and nothing else."),
) -> None:
    """Print the study's expanded runs, their compute and memory per GPU, without running anything."""
    from wsdlab.study.compute import gpu_hours, run_memory
    from wsdlab.study.runner import plan_costs

    with user_errors():
        study = _load(spec, quick)
        study_dir = (out or Path("wsdlab-out") / study.name).absolute()
        notes: list[str] = []
        rows = plan_costs(study, study_dir, notes)
        if show is not None:
            chosen = [r for r in rows if r["key"] == show]
            if not chosen:
                raise ConfigError(f"--show: study '{study.name}' has no run '{show}' (runs: {', '.join(r['key'] for r in rows[:8])}"
                                  f"{', ...' if len(rows) > 8 else ''}; `wsdlab study plan` lists them)")
            import yaml

            typer.echo(yaml.safe_dump(chosen[0]["spec"].model_dump(mode="json"), sort_keys=False), nl=False)
            return
        total_flops = sum(r["flops"] for r in rows if not r["shared"])
        hours = gpu_hours(total_flops, device, mfu)
        memory = [run_memory(r["spec"], device, r["gpus"] or gpus) for r in rows]  # a stage's resources win
    table = Table(title=escape(f"study {study.name}: {len(rows)} runs"))
    for col, justify in (("stage", "left"), ("run", "left"), ("parent", "left"), ("differs from the template", "left"),
                         ("tokens", "right"), ("FLOPs", "right"), ("state", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(escape(r["stage"]), escape(r["key"]), escape(r["parent"] or "-"), escape(r["differs"]),
                      f"{r['tokens']:,}", f"{r['flops']:.3g}", r["state"] + (" (same run as above)" if r["shared"] else ""))
    console.print(table)
    done = sum(r["state"] == "done" for r in rows)
    tokens = sum(r["tokens"] for r in rows if not r["shared"])
    console.print(f"{len(rows)} runs ({sum(not r['shared'] for r in rows)} distinct), {done} done, {len(rows) - done} left; "
                  f"total {tokens:,} tokens, {total_flops:.3g} training FLOPs = {hours:.3g} GPU-hours on one {device} "
                  f"at {mfu:.0%} MFU", highlight=False, markup=False)
    _print_memory(rows, memory, device, gpus)
    for note in notes:
        console.print(f"note: {note}", highlight=False, markup=False)


@app.command("list")
def list_studies() -> None:
    """The built-in studies, one line each (run one with `wsdlab study run NAME [--quick]`)."""
    from wsdlab.study.spec import builtin_studies

    table = Table(show_header=True)
    table.add_column("study")
    table.add_column("what it reproduces")
    for name, line in builtin_studies().items():
        table.add_row(escape(name), escape(line))
    console.print(table)


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
    for col in ("run", "stage", "state", "steps", "folder"):
        table.add_column(col)
    style = {"complete": "green", "waiting": "yellow"}
    for s in statuses.values():
        r = s.resolved
        state = s.state if not s.detail else f"{s.state} ({s.detail})"
        table.add_row(escape(s.key), escape(s.stage), f"[{style.get(s.state, 'red')}]{escape(state)}[/]",
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


VERDICT_STYLE = {"holds": "green", "contradicted": "red", "inconclusive": "yellow"}


def _fmt(v: object) -> str:
    return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


@app.command()
def claims(
    study_dir: Path = typer.Argument(..., metavar="STUDY_DIR", parser=path_option, help="Study folder (its tables/)."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON (for scripts) instead of a table."),
) -> None:
    """Paper vs this run: each claim of the papers the study touches, this run's value with its 95% interval,
    and the verdict (holds / contradicted / inconclusive, with the reason). Writes STUDY/tables/claims.csv."""
    import json

    from wsdlab.analysis.claims import summary_line, write_claims
    from wsdlab.study.runner import refresh_runs_index

    with user_errors():
        if not (study_dir / "tables").is_dir():
            raise ConfigError(f"{study_dir}: not a study folder with tables (no {study_dir / 'tables'}); "
                              f"run the study first: wsdlab study run ... --out {study_dir}")
        refresh_runs_index(study_dir)
        rows = write_claims(study_dir)
    if as_json:
        print(json.dumps(rows, indent=1, allow_nan=False, default=str))
        return
    for paper in dict.fromkeys(r["paper"] for r in rows):
        mine = [r for r in rows if r["paper"] == paper]
        console.print(f"\n[bold]{escape(paper)}[/] {escape(mine[0]['paper_title'])}\n{escape(mine[0]['scale'])}",
                      highlight=False)
        table = Table(show_lines=True, expand=True)
        for col, ratio in (("claim (paper's figure)", 4), ("this run [95% interval] (n)", 3), ("verdict", 2),
                           ("why", 3)):
            table.add_column(col, ratio=ratio)
        for r in mine:
            interval = "" if r["ci_low"] is None else f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
            value = f"{_fmt(r['value'])}{interval} (n={r['n']})" if r["value"] is not None else "-"
            table.add_row(escape(f"{r['claim']} ({r['where']})"), escape(f"{value}\n{r['statistic']}"),
                          f"[{VERDICT_STYLE[r['verdict']]}]{r['verdict']}[/]", escape(r["reason"] or ""))
        console.print(table)
    console.print(summary_line(rows), highlight=False, markup=False)
