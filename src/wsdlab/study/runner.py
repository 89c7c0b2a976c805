"""Run a study: expand the plan, train what is not complete in dependency order, then compute the
analysis tables and write the report.

Re-running the same command after a crash, Ctrl-C or SIGKILL skips complete runs (their folders are
never touched again), resumes the others from their latest checkpoint (train() does that), and
recomputes only the tables whose inputs changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from wsdlab.analysis.tables import write_table
from wsdlab.common.errors import ConfigError, RunLockedError, WsdlabError
from wsdlab.common.io import atomic_write_text
from wsdlab.study.compute import own_flops
from wsdlab.study.executors import Executor, QueuedRun, SequentialExecutor
from wsdlab.study.resources import Resources
from wsdlab.study.cooldown import base_run_spec
from wsdlab.study.plan import Plan, PlannedRun, expand_plan
from wsdlab.study.progress import StudyProgress
from wsdlab.study.preflight import check_inputs
from wsdlab.study.resolve import ResolvedRun, Resolver, describe, run_is_complete
from wsdlab.study.stages import RunPoint
from wsdlab.study.spec import StudySpec, dump_study, load_study

State = Literal["waiting", "running", "complete", "failed", "blocked"]
STUDY_FILE = "study.yaml"
PLAN_FILE = "plan.json"
LOCK_FILE = ".lock"


class StudyError(WsdlabError, RuntimeError):
    """Some runs failed; the message names them (the finished ones are kept)."""


@dataclass(frozen=True)
class RunStatus:
    """Where one planned run stands (status tables, runs.csv)."""

    key: str
    stage: str
    state: State
    resolved: ResolvedRun | None
    detail: str = ""


@contextlib.contextmanager
def study_lock(study_dir: Path) -> Iterator[None]:
    """Hold STUDY/.lock for the duration; a second `study run` on the same folder fails at once."""
    study_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(study_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(f"another `wsdlab study run` is using {study_dir} (lock {study_dir / LOCK_FILE})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def write_study_file(study: StudySpec, study_dir: Path, num_train: int | None) -> None:
    """STUDY/study.yaml (the validated spec) and STUDY/plan.json (what else fixes the plan)."""
    atomic_write_text(study_dir / STUDY_FILE, dump_study(study))
    atomic_write_text(study_dir / PLAN_FILE, json.dumps({"num_train": num_train}) + "\n")


def study_num_train(study: StudySpec, progress: bool = False) -> int | None:
    """Train sequences of the base's data (prepared on first use), when the plan needs them."""
    if study.cooldown is None or study.cooldown.data != "fresh":
        return None
    from wsdlab.data import load_data

    return load_data(base_run_spec(study).data, progress=progress).num_train


def plan_num_train(study: StudySpec, study_dir: Path) -> tuple[int | None, str | None]:
    """(num_train, note) for `wsdlab study plan`, which never prepares data nor needs a tokenizer: the
    study folder's plan.json, else the count of an already prepared corpus, else the fewest train
    sequences the 'fresh' layout accepts, with a note that the data portions are provisional (tokens
    and FLOPs do not depend on them; `wsdlab data prepare` or `study run` fixes them)."""
    if study.cooldown is None or study.cooldown.data != "fresh":
        return None, None
    plan_path = study_dir / PLAN_FILE
    if plan_path.is_file():
        with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
            num_train = json.loads(plan_path.read_text())["num_train"]
            if isinstance(num_train, int):
                return num_train, None
    from wsdlab.data.shards import prepared_meta
    from wsdlab.study.cooldown import fresh_min_train

    meta = prepared_meta(base_run_spec(study).data)
    if meta is not None:
        return int(meta["num_train"]), None
    return fresh_min_train(study), ("the base's corpus is not prepared: data portions (data.order) are provisional; "
                                    "tokens and FLOPs do not depend on them")


def load_study_dir(study_dir: str | Path) -> tuple[StudySpec, Plan]:
    """The study and plan stored in a study folder by `run_study` (for status and report)."""
    study_dir = Path(study_dir)
    spec_path, plan_path = study_dir / STUDY_FILE, study_dir / PLAN_FILE
    if not spec_path.is_file() or not plan_path.is_file():
        raise FileNotFoundError(f"not a study folder (no {STUDY_FILE} / {PLAN_FILE}): {study_dir}")
    study = load_study(spec_path)
    try:
        num_train = json.loads(plan_path.read_text())["num_train"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"unreadable {plan_path}: {err}") from None
    return study, expand_plan(study, num_train)


def train_runs(plan: Plan, resolver: Resolver, executor: Executor, progress: StudyProgress,
               on_complete: Callable[[set[str], int], int] | None = None) -> dict[str, RunStatus]:
    """Train every run of the plan that is not complete, parents before branches; returns final states.

    Independent ready runs go to the executor as slots free up; a failed run blocks only its branches.
    `on_complete(keys, free_slots)` is called with the keys of the complete runs and the executor's
    free slots before any slot is handed out; it returns how many slots it keeps (the study's analyses
    start on complete runs while the rest trains, each in a slot of its own).
    """
    states: dict[str, State] = {r.key: "waiting" for r in plan}
    details: dict[str, str] = {}
    running_paths: dict[Path, str] = {}  # run folder -> key of the job training it
    start_steps = {r.key: 0 for r in plan}

    def early_branches(key: str) -> bool:
        """Whether a waiting run branches from a checkpoint of `key` before its end (it may start meanwhile)."""
        return any(r.parent == key and r.at is not None and not r.at.final and states[r.key] == "waiting"
                   for r in plan)

    def settle() -> bool:
        """Mark complete/blocked runs and submit ready ones; True if anything is still pending."""
        pending = False
        free = executor.free_slots() - held
        ready: list[tuple[PlannedRun, ResolvedRun]] = []
        for run in plan:
            if states[run.key] != "waiting":
                continue
            if run.parent is not None and states[run.parent] in ("failed", "blocked"):
                states[run.key] = "blocked"
                details[run.key] = f"parent '{run.parent}' did not complete"
                progress.blocked(run.key, details[run.key])
                continue
            resolved = resolver.resolve(run)
            if not resolver.ready(run):
                if run.parent is not None and states[run.parent] == "complete":  # its checkpoint never came
                    states[run.key] = "failed"
                    details[run.key] = (f"parent '{run.parent}' completed without the checkpoint "
                                        f"'{run.at.describe() if run.at else 'final'}' this run starts from")
                    progress.finished(run.key, details[run.key])
                    continue
                pending = True
                continue
            if run_is_complete(run, resolved.path):
                states[run.key] = "complete"
                progress.skipped(run.key)
                continue
            pending = True
            if resolved.path in running_paths or len(ready) >= free:
                continue  # an identical run is training into the same folder, or no slot is free
            running_paths[resolved.path] = run.key
            ready.append((run, resolved))
        for run, resolved in ready:
            start_steps[run.key] = resolved.start_step
            states[run.key] = "running"
            progress.started(run.key, resolved.path, start_steps[run.key], resolved.spec.train.steps)
            # the only run that can train now, and no analysis holds a slot: it may use every CPU
            alone = len(ready) == 1 and len(running_paths) == 1 and held == 0 and not early_branches(run.key)
            stage = plan.stages.get(run.stage)
            executor.submit(QueuedRun(run.key, resolved.spec, resolved.path, run.job, alone=alone,
                                      resources=stage.resources if stage is not None else Resources()))
        return pending or bool(running_paths)

    def analyses_first() -> int:
        """Slots kept by the analyses that run on the complete runs (0 without `on_complete`)."""
        if on_complete is None:
            return 0
        return on_complete({k for k, v in states.items() if v == "complete"}, executor.free_slots())

    held = 0
    try:
        while True:
            held = analyses_first()
            if not settle():
                break
            for result in executor.wait(timeout=0.5):
                key = result.job.key
                running_paths.pop(result.job.path, None)
                error = result.error
                if error is None and not run_is_complete(plan[key], result.job.path):
                    error = f"run ended without writing COMPLETE in {result.job.path}"
                states[key] = "failed" if error else "complete"
                if error:
                    details[key] = error
                progress.finished(key, error, result.log)
                # runs sharing this folder complete (or fail) with it
                for other in plan:
                    r = resolver.get(other.key)
                    if states[other.key] == "waiting" and r is not None and r.path == result.job.path and error:
                        states[other.key] = "failed"
                        details[other.key] = f"same run as '{key}', which failed"
    finally:
        executor.close()
    return {r.key: RunStatus(r.key, r.stage, states[r.key], resolver.get(r.key), details.get(r.key, "")) for r in plan}


def plan_status(plan: Plan, resolver: Resolver) -> dict[str, RunStatus]:
    """States of the runs as found on disk, without running anything (`wsdlab study status`)."""
    out: dict[str, RunStatus] = {}
    for run in plan:
        resolved = resolver.resolve(run)
        if run_is_complete(run, resolved.path):
            state: State = "complete"
            detail = ""
        elif not resolver.ready(run):
            state, detail = "waiting", f"waits for '{run.parent}'"
        elif run_is_complete(run, resolved.path):
            state, detail = "complete", ""
        elif resolved.path.is_dir():
            state, detail = "waiting", "partial: resumes from its latest checkpoint"
        else:
            state, detail = "waiting", ""
        out[run.key] = RunStatus(run.key, run.stage, state, resolved, detail)
    return out


def write_runs_index(plan: Plan, statuses: dict[str, RunStatus], study_dir: Path) -> Path:
    """STUDY/tables/runs.csv: one row per planned run (key, stage, labels, hash, folder, scale, state)."""
    rows: list[dict[str, Any]] = []
    for status in statuses.values():
        if status.resolved is not None:
            row = describe(status.resolved, plan)
        else:
            row = {"key": status.key, "stage": status.stage}
        rows.append({**row, "state": status.state})
    return write_table(rows, study_dir / "tables" / "runs.csv")


def run_study(study: StudySpec, study_dir: str | Path, *, executor: Executor | None = None,
              progress: StudyProgress | None = None,
              analyses: bool = True, report: bool | None = None) -> dict[str, RunStatus]:
    """Run (or finish) the whole study in `study_dir`; then its tables and report. Returns run states.

    `progress` (not yet entered) is shown while runs train; None prints nothing. Raises StudyError
    naming the failed runs (after writing STUDY/tables/runs.csv).
    """
    study_dir = Path(study_dir).absolute()
    prog = progress if progress is not None else StudyProgress(study.name, 0, Console(quiet=True), live=False)
    # everything that can reject the study runs before the folder and its lock exist, so a bad study
    # leaves nothing behind (preparing the corpus needs no lock of ours: the data cache has its own)
    if study_dir.exists() and not study_dir.is_dir():
        raise ConfigError(f"{study_dir}: exists and is not a directory")
    num_train = study_num_train(study, progress=prog.live_enabled)  # prepares the corpus on first use
    plan = expand_plan(study, num_train)  # every run's spec, checked: a bad study fails here, before training
    specs = {run.key: run.spec for run in plan}
    check_inputs(specs, {run.key: run.stage for run in plan})  # its data and tokenizer exist
    with study_lock(study_dir):
        write_study_file(study, study_dir, num_train)
        resolver = Resolver(plan, study_dir)
        prog.total, prog.costs = len(plan), own_flops(specs)
        executor = executor or SequentialExecutor()
        tables = None
        if analyses:
            from wsdlab.study.analyses import TableScheduler

            tables = TableScheduler(plan, resolver, study_dir, prog)
        # analyses overlap training only when runs train in other processes (not in this one's threads)
        overlap = tables.poll if (tables is not None and executor.trains_elsewhere) else None
        with prog:  # the live display while runs train
            statuses = train_runs(plan, resolver, executor, prog, on_complete=overlap)
        write_runs_index(plan, statuses, study_dir)
        failed = [s for s in statuses.values() if s.state in ("failed", "blocked")]
        if failed:
            if tables is not None:
                tables.stop()  # the units already computing finish (their tables are valid); no others start
            lines = "\n".join(f"  {s.key}: {s.detail.splitlines()[0] if s.detail else s.state}" for s in failed)
            raise StudyError(f"{len(failed)} run(s) of study '{study.name}' did not complete:\n{lines}\n"
                             f"fix the cause and re-run the same command: complete runs are kept")
        prog.message(prog.summary())
        if tables is not None:
            from wsdlab.study.analyses import analysis_parallelism

            tables.finish(analysis_parallelism())
            prog.message(write_claims_summary(study_dir))
        if report if report is not None else study.report.enabled:
            prog.message(f"report: {write_report(study, study_dir)}")
    return statuses


def refresh_runs_index(study_dir: Path) -> None:
    """Rewrite tables/runs.csv of a study folder written by an older release (without the runs' scale), so
    the claims can state it; nothing is done when it already has it or the folder has no readable plan."""
    from wsdlab.analysis.tables import read_table
    from wsdlab.common.errors import WsdlabError

    index = Path(study_dir) / "tables" / "runs.csv"
    if index.is_file():
        rows = read_table(index)
        if rows and "params" in rows[0]:
            return
    try:
        study, plan = load_study_dir(study_dir)
        write_runs_index(plan, plan_status(plan, Resolver(plan, Path(study_dir))), Path(study_dir))
    except (WsdlabError, OSError, ValueError):
        return  # the claims then say the scale is not recorded


def write_claims_summary(study_dir: Path) -> str:
    """Evaluate the papers' claims on the study's tables (tables/claims.csv); the one-line verdict count."""
    from wsdlab.analysis.claims import summary_line, write_claims

    return summary_line(write_claims(study_dir))


def write_report(study: StudySpec, study_dir: Path) -> Path:
    """Figures and STUDY/report.html from the tables (wsdlab.report)."""
    from wsdlab.report import build_report

    return build_report(study_dir, title=study.report.title)


def redo_report(study_dir: str | Path, progress: StudyProgress | None = None) -> Path:
    """Recompute every table of a finished study and rewrite its report (`wsdlab study report`)."""
    from wsdlab.study.analyses import analysis_parallelism, compute_tables

    study_dir = Path(study_dir).absolute()
    study, plan = load_study_dir(study_dir)
    resolver = Resolver(plan, study_dir)
    statuses = plan_status(plan, resolver)
    missing = [k for k, s in statuses.items() if s.state != "complete"]
    if missing:
        raise ConfigError(f"study {study_dir} has {len(missing)} incomplete run(s) ({', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}); finish it with `wsdlab study run` first")
    with study_lock(study_dir):
        write_runs_index(plan, statuses, study_dir)
        compute_tables(plan, resolver, study_dir, progress, force=True, parallel=analysis_parallelism())
        summary = write_claims_summary(study_dir)
        if progress is not None:
            progress.message(summary)
        return write_report(study, study_dir)


def _differences(points: list[RunPoint]) -> list[str]:
    """For the runs of one stage, what sets each apart: the items not shared by all of them."""
    flat = [p.items() for p in points]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    varying = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    return [" ".join(f"{k}={f[k]}" for k in varying if f.get(k) not in (None,)) for f in flat]


def plan_costs(study: StudySpec, study_dir: Path, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per planned run (`wsdlab study plan`): stage, key, parent, what differs from its stage's
    template, tokens and training FLOPs of its own steps, done/left in `study_dir`, whether it is
    the same run as an earlier one (it then costs nothing), and its RunSpec (`spec`). Nothing is trained, prepared or written
    (`plan_num_train`); what the caller should know about the plan is appended to `notes`."""
    from wsdlab.study.compute import run_cost
    from wsdlab.study.plan import study_stages
    from wsdlab.study.stages import expand_stages

    num_train, note = plan_num_train(study, study_dir)
    if note is not None and notes is not None:
        notes.append(note)
    plan = expand_plan(study, num_train)
    stage_runs = expand_stages(study_stages(study, num_train))
    differs: dict[str, str] = {}
    for stage in dict.fromkeys(r.stage for r in stage_runs):
        mine = [r for r in stage_runs if r.stage == stage]
        differs.update(zip((r.key for r in mine), _differences([r.point for r in mine])))
    resolver = Resolver(plan, study_dir)
    seen: set[str] = set()
    rows = []
    for run in plan:
        resolved = resolver.resolve(run)
        spec, identity = resolved.spec, resolved.hash
        cost = run_cost(spec, run.step or 0)
        done = (study_dir / PLAN_FILE).is_file() and run_is_complete(run, resolved.path)
        rows.append({"stage": run.stage, "key": run.key, "parent": run.parent, "differs": differs[run.key] or "-",
                     "tokens": cost.tokens, "flops": cost.flops, "state": "done" if done else "left",
                     "shared": identity in seen, "spec": spec,
                     "gpus": plan.stages[run.stage].resources.gpus_per_run
                     if "resources" in plan.stages[run.stage].model_fields_set else None})
        seen.add(identity)
    return rows
