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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from wsdlab.analysis.tables import write_table
from wsdlab.common.errors import ConfigError, RunLockedError, WsdlabError
from wsdlab.common.io import atomic_write_text
from wsdlab.study.executors import Executor, Job, SequentialExecutor
from wsdlab.study.plan import Plan, base_run_spec, expand_plan
from wsdlab.study.progress import StudyProgress
from wsdlab.study.resolve import BranchFn, ResolvedRun, Resolver, check_branches, describe, run_is_complete
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
    role: str
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
    if study.cooldown.data != "fresh":
        return None
    from wsdlab.data import load_data

    return load_data(base_run_spec(study).data, progress=progress).num_train


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


def train_runs(plan: Plan, resolver: Resolver, executor: Executor, progress: StudyProgress) -> dict[str, RunStatus]:
    """Train every run of the plan that is not complete, parents before branches; returns final states.

    Independent ready runs go to the executor as slots free up; a failed run blocks only its branches.
    """
    states: dict[str, State] = {r.key: "waiting" for r in plan}
    details: dict[str, str] = {}
    running_paths: dict[Path, str] = {}  # run folder -> key of the job training it
    start_steps = {r.key: 0 for r in plan}

    def settle() -> bool:
        """Mark complete/blocked runs and submit ready ones; True if anything is still pending."""
        pending = False
        for run in plan:
            if states[run.key] != "waiting":
                continue
            if run.parent is not None and states[run.parent] in ("failed", "blocked"):
                states[run.key] = "blocked"
                details[run.key] = f"parent '{run.parent}' did not complete"
                progress.blocked(run.key, details[run.key])
                continue
            resolved = resolver.resolve(run)
            if resolved is None:
                pending = True
                continue
            if run_is_complete(resolved.path):
                states[run.key] = "complete"
                progress.skipped(run.key)
                continue
            pending = True
            if resolved.path in running_paths or executor.free_slots() <= 0:
                continue  # an identical run is training into the same folder, or no slot is free
            if run.parent is not None:
                parent = resolver.get(run.parent)
                start_steps[run.key] = parent.spec.train.steps if parent else 0
            states[run.key] = "running"
            running_paths[resolved.path] = run.key
            progress.started(run.key, resolved.path, start_steps[run.key], resolved.spec.train.steps)
            executor.submit(Job(run.key, resolved.spec, resolved.path))
        return pending or bool(running_paths)

    try:
        while settle():
            for result in executor.wait(timeout=0.5):
                key = result.job.key
                running_paths.pop(result.job.path, None)
                error = result.error
                if error is None and not run_is_complete(result.job.path):
                    error = f"run ended without writing COMPLETE in {result.job.path}"
                states[key] = "failed" if error else "complete"
                if error:
                    details[key] = error
                progress.finished(key, error)
                # runs sharing this folder complete (or fail) with it
                for other in plan:
                    r = resolver.get(other.key)
                    if states[other.key] == "waiting" and r is not None and r.path == result.job.path and error:
                        states[other.key] = "failed"
                        details[other.key] = f"same run as '{key}', which failed"
    finally:
        executor.close()
    return {r.key: RunStatus(r.key, r.role, states[r.key], resolver.get(r.key), details.get(r.key, "")) for r in plan}


def plan_status(plan: Plan, resolver: Resolver) -> dict[str, RunStatus]:
    """States of the runs as found on disk, without running anything (`wsdlab study status`)."""
    out: dict[str, RunStatus] = {}
    for run in plan:
        resolved = resolver.resolve(run)
        if resolved is None:
            state: State = "waiting"
            detail = f"waits for '{run.parent}'"
        elif run_is_complete(resolved.path):
            state, detail = "complete", ""
        elif resolved.path.is_dir():
            state, detail = "waiting", "partial: resumes from its latest checkpoint"
        else:
            state, detail = "waiting", ""
        out[run.key] = RunStatus(run.key, run.role, state, resolved, detail)
    return out


def write_runs_index(statuses: dict[str, RunStatus], study_dir: Path) -> Path:
    """STUDY/tables/runs.csv: one row per planned run (key, role, labels, hash, folder, state)."""
    rows: list[dict[str, Any]] = []
    for status in statuses.values():
        if status.resolved is not None:
            row = describe(status.resolved)
        else:
            row = {"key": status.key, "role": status.role}
        rows.append({**row, "state": status.state})
    return write_table(rows, study_dir / "tables" / "runs.csv")


def run_study(study: StudySpec, study_dir: str | Path, *, executor: Executor | None = None,
              branch_fn: BranchFn | None = None, progress: StudyProgress | None = None,
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
    plan = expand_plan(study, num_train)
    check_branches(plan, branch_fn)
    with study_lock(study_dir):
        write_study_file(study, study_dir, num_train)
        resolver = Resolver(plan, study_dir, branch_fn)
        prog.total = len(plan)
        with prog:  # the live display only while runs train: analyses show their own progress bars
            statuses = train_runs(plan, resolver, executor or SequentialExecutor(), prog)
        write_runs_index(statuses, study_dir)
        failed = [s for s in statuses.values() if s.state in ("failed", "blocked")]
        if failed:
            lines = "\n".join(f"  {s.key}: {s.detail.splitlines()[0] if s.detail else s.state}" for s in failed)
            raise StudyError(f"{len(failed)} run(s) of study '{study.name}' did not complete:\n{lines}\n"
                             f"fix the cause and re-run the same command: complete runs are kept")
        prog.message(prog.summary())
        if analyses:
            from wsdlab.study.analyses import compute_tables

            compute_tables(plan, resolver, study_dir, prog)
        if report if report is not None else study.report.enabled:
            prog.message(f"report: {write_report(study, study_dir)}")
    return statuses


def write_report(study: StudySpec, study_dir: Path) -> Path:
    """Figures and STUDY/report.html from the tables (wsdlab.report)."""
    from wsdlab.report import build_report

    return build_report(study_dir, title=study.report.title)


def redo_report(study_dir: str | Path, progress: StudyProgress | None = None) -> Path:
    """Recompute every table of a finished study and rewrite its report (`wsdlab study report`)."""
    from wsdlab.study.analyses import compute_tables

    study_dir = Path(study_dir).absolute()
    study, plan = load_study_dir(study_dir)
    resolver = Resolver(plan, study_dir)
    statuses = plan_status(plan, resolver)
    missing = [k for k, s in statuses.items() if s.state != "complete"]
    if missing:
        raise ConfigError(f"study {study_dir} has {len(missing)} incomplete run(s) ({', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}); finish it with `wsdlab study run` first")
    with study_lock(study_dir):
        write_runs_index(statuses, study_dir)
        compute_tables(plan, resolver, study_dir, progress, force=True)
        return write_report(study, study_dir)
