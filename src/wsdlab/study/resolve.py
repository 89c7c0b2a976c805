"""From planned runs to run folders: each spec's identity and folder, and whether it can start.

Every spec is known when the plan is made (`study.plan`); the resolver adds only what depends on the
disk. A run's folder is STUDY/runs/<key>-<identity> (`study.identity`: the hash of the fields set, a
branch's lineage `<parent identity>@<step>` in place of its checkpoint path, so names do not depend on
where the study lives nor on fields added later); two planned runs with the same identity (e.g. a panel's
baseline equal to a grid cooldown) share the folder of the first. A folder written by release 0.1 is used
when it exists and the new one does not (`legacy_identity`). A branch's spec gets its `init_from`, the
parent folder's checkpoint at its step, and may start once that checkpoint exists (intact): a branch
from step 400 may start while its parent still trains.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsdlab.study.identity import legacy_identity, run_identity
from wsdlab.study.jobs import get_job
from wsdlab.study.plan import Plan, PlannedRun
from wsdlab.train.checkpoint import checkpoint_dir
from wsdlab.train.config import RunSpec
from wsdlab.train.layout import RUNS_DIR


@dataclass(frozen=True)
class ResolvedRun:
    """A planned run with its spec (`init_from` set for a branch), identity hash and folder."""

    run: PlannedRun
    spec: RunSpec
    hash: str
    path: Path

    @property
    def key(self) -> str:
        return self.run.key

    @property
    def start_step(self) -> int:
        """The step it starts from: its parent checkpoint's (a branch), else 0."""
        return self.run.step or 0


def run_is_complete(run: PlannedRun | None, path: Path) -> bool:
    """True when the run's job says its folder holds finished work (training: COMPLETE)."""
    return get_job(run.job if run is not None else "train").is_complete(path)


class Resolver:
    """Maps planned runs to their folders (memoized; parents first); tells when a branch may start."""

    def __init__(self, plan: Plan, study_dir: Path) -> None:
        self.plan = plan
        self.study_dir = Path(study_dir).absolute()
        self._done: dict[str, ResolvedRun] = {}
        self._by_hash: dict[str, Path] = {}
        self._lock = threading.RLock()  # the run loop and the analyses' threads resolve concurrently

    def get(self, key: str) -> ResolvedRun | None:
        return self._done.get(key)

    def parent_checkpoint(self, run: PlannedRun) -> Path | None:
        """The checkpoint a branch starts from, once it is on disk (the final one once its parent is complete)."""
        assert run.parent is not None and run.step is not None
        parent = self.resolve(self.plan[run.parent])
        path = checkpoint_dir(parent.path, run.step)
        if run.step == parent.spec.train.steps and not run_is_complete(self.plan[run.parent], parent.path):
            return None  # the final checkpoint counts once the parent is complete
        return path if path.is_dir() else None

    def ready(self, run: PlannedRun) -> bool:
        """Whether the run can start: a root always, a branch once its parent's checkpoint exists."""
        return run.parent is None or self.parent_checkpoint(run) is not None

    def resolve(self, run: PlannedRun) -> ResolvedRun:
        """The run's folder and its spec as trained there; needs nothing on disk."""
        with self._lock:
            return self._resolve(run)

    def _resolve(self, run: PlannedRun) -> ResolvedRun:
        if run.key in self._done:
            return self._done[run.key]
        spec, lineage = run.spec, None
        if run.parent is not None:
            assert run.step is not None
            parent = self._resolve(self.plan[run.parent])
            init = (checkpoint_dir(parent.path, run.step)).resolve()
            spec = spec.model_copy(update={"init_from": str(init)})
            lineage = f"{parent.hash}@{run.step}"
        digest = run_identity(spec, self.study_dir, lineage)
        path = self._by_hash.get(digest)
        if path is None:
            path = self.study_dir / RUNS_DIR / f"{run.key}-{digest}"
            if not path.exists():
                legacy = self.study_dir / RUNS_DIR / f"{run.key}-{legacy_identity(spec, self.study_dir)}"
                path = legacy if legacy.is_dir() else path
            self._by_hash[digest] = path
        resolved = ResolvedRun(run, spec, digest, path)
        self._done[run.key] = resolved
        return resolved


def relative(path: Path, start: Path) -> str:
    """`path` relative to `start` when below it (for display), else absolute."""
    try:
        return os.path.relpath(path, start) if Path(path).resolve().is_relative_to(Path(start).resolve()) else str(path)
    except ValueError:
        return str(path)


def describe(resolved: ResolvedRun, plan: Plan) -> dict[str, Any]:
    """A flat row about a resolved run (runs.csv, status tables): key, stage, labels, hash, folder, steps,
    and its scale (model arch, parameters, tokens of all its steps from step 0, its parents' included) for
    the claims' scale line."""
    from wsdlab.models import num_parameters
    from wsdlab.study.compute import tokens_read

    spec = resolved.spec
    return {"key": resolved.key, "stage": resolved.run.stage, **resolved.run.labels,
            "hash": resolved.hash, "dir": resolved.path.name, "steps": spec.train.steps,
            "arch": spec.model.arch, "params": num_parameters(spec.model),
            "tokens": tokens_read(plan, resolved.key)}
