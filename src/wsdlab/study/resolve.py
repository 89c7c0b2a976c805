"""From planned runs to run directories: the full RunSpec of each run, its hash, and its folder.

A run is identified by the hash of its full RunSpec (`wsdlab.common.spec_hash`) with `init_from`
written relative to the study folder, so hashes do not depend on where the study lives (a moved or
copied study resumes). Its folder is STUDY/runs/<key>-<hash>/; two planned runs with the same spec
(e.g. a panel's baseline equal to a grid cooldown) share the folder of the first. A branch is resolved
once the checkpoint its selector picks exists (intact) in its parent's folder, because `branch_spec`
reads it: a branch from step 400 may start while its parent still trains. Each run's spec also
checkpoints the steps its own branches and analyses need (`PlannedRun.keep`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsdlab.common.errors import ConfigError, WsdlabError
from wsdlab.common.hashing import spec_hash
from wsdlab.study.jobs import get_job
from wsdlab.study.plan import Plan, PlannedRun
from wsdlab.study.stages import Selector, selector_step
from wsdlab.train.config import BranchConfig, RunSpec
from wsdlab.train.checkpoint import checkpoint_dir

BranchFn = Callable[[Path, BranchConfig], RunSpec]  # wsdlab.train.branch_spec
RUNS_DIR = "runs"


@dataclass(frozen=True)
class ResolvedRun:
    """A planned run with its spec, identity hash and folder."""

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
        return self.spec.branch.parent_step or 0 if self.spec.branch is not None else 0


# Spec fields added after studies were first written, left out of a run's identity while at their default so
# that the run folders of existing studies keep their names: (section, field) -> default.
LATE_DEFAULTS: dict[tuple[str, str], Any] = {
    ("schedule", "stable_ratio"): None, ("schedule", "start_step"): 0, ("data", "sft"): None, ("branch", "schedule"): {},
    ("train", "activation_checkpointing"): False,
}


def run_identity(spec: RunSpec, study_dir: Path) -> str:
    """spec_hash of the spec with `init_from` made relative to the study folder (location independent)
    and the LATE_DEFAULTS fields left out while at their defaults."""
    data = spec.model_dump(mode="json")
    for (section, name), default in LATE_DEFAULTS.items():
        if isinstance(data.get(section), dict) and data[section].get(name, default) == default:
            data[section].pop(name, None)
    if data.get("init_from"):
        init = Path(data["init_from"])
        try:
            data["init_from"] = init.resolve().relative_to(study_dir.resolve()).as_posix()
        except ValueError:
            pass  # outside the study: keep the absolute path
    return spec_hash(data)


def run_is_complete(run: PlannedRun | None, path: Path) -> bool:
    """True when the run's job says its folder holds finished work (training: COMPLETE)."""
    return get_job(run.job if run is not None else "train").is_complete(path)


def with_kept_checkpoints(spec: RunSpec, keep: tuple[Selector, ...]) -> RunSpec:
    """`spec` with `train.checkpoint_steps` holding every step the selectors in `keep` pick."""
    steps = {selector_step(sel, spec) for sel in keep} - {spec.train.steps}
    start = spec.branch.parent_step if spec.branch is not None and spec.branch.parent_step else 0
    extra = sorted(s for s in steps if s > start and s not in spec.train.checkpoint_steps)
    if not extra:
        return spec
    train = spec.train.model_copy(update={"checkpoint_steps": sorted({*spec.train.checkpoint_steps, *extra})})
    return spec.model_copy(update={"train": train})


def _default_branch_fn() -> BranchFn:
    from wsdlab.train import branch_spec

    return branch_spec


class Resolver:
    """Resolves planned runs lazily, memoizing results; a branch waits for its parent's checkpoint."""

    def __init__(self, plan: Plan, study_dir: Path, branch_fn: BranchFn | None = None) -> None:
        self.plan = plan
        self.study_dir = Path(study_dir).absolute()
        self._branch_fn = branch_fn
        self._done: dict[str, ResolvedRun] = {}
        self._by_hash: dict[str, Path] = {}
        self._lock = threading.RLock()  # the run loop and the analyses' threads resolve concurrently

    @property
    def branch_fn(self) -> BranchFn:
        if self._branch_fn is None:
            self._branch_fn = _default_branch_fn()
        return self._branch_fn

    def get(self, key: str) -> ResolvedRun | None:
        return self._done.get(key)

    def parent_checkpoint(self, run: PlannedRun) -> Path | None:
        """The checkpoint a branch starts from, once its parent is resolved and the checkpoint is on disk."""
        assert run.parent is not None and run.at is not None
        parent = self.resolve(self.plan[run.parent])
        if parent is None:
            return None
        step = selector_step(run.at, parent.spec)
        path = checkpoint_dir(parent.path, step)
        if step == parent.spec.train.steps and not run_is_complete(self.plan[run.parent], parent.path):
            return None  # the final checkpoint counts once the parent is complete
        return path if path.is_dir() else None

    def resolve(self, run: PlannedRun) -> ResolvedRun | None:
        """The resolved run, or None while the checkpoint it branches from does not exist yet."""
        with self._lock:
            return self._resolve(run)

    def _resolve(self, run: PlannedRun) -> ResolvedRun | None:
        if run.key in self._done:
            return self._done[run.key]
        if run.spec is not None:
            spec = run.spec
        else:
            assert run.branch is not None
            ckpt = self.parent_checkpoint(run)
            if ckpt is None:
                return None
            spec = self.branch_fn(ckpt, run.branch)
        spec = with_kept_checkpoints(spec, run.keep)
        digest = run_identity(spec, self.study_dir)
        path = self._by_hash.setdefault(digest, self.study_dir / RUNS_DIR / f"{run.key}-{digest}")
        resolved = ResolvedRun(run, spec, digest, path)
        self._done[run.key] = resolved
        return resolved


def planned_specs(plan: Plan, branch_fn: BranchFn | None = None) -> dict[str, RunSpec]:
    """The RunSpec of every planned run, before any training: each branch is built against a stand-in
    of the checkpoint it starts from (valid and verified, but holding no tensors), parents first, so
    branches of branches get specs too. A bad override fails here in seconds rather than after the
    parent trained; ConfigError names the run. (`init_from` points into a temporary folder: these
    specs are for checking and costing, not for training.)"""
    import tempfile

    from wsdlab.train.checkpoint import write_stub_checkpoint

    fn = branch_fn or _default_branch_fn()
    specs: dict[str, RunSpec] = {}
    with tempfile.TemporaryDirectory(prefix=".tmp-check-") as tmp:
        for run in plan:
            try:
                if run.spec is not None:
                    spec = run.spec
                else:
                    assert run.parent is not None and run.at is not None and run.branch is not None
                    parent = specs[run.parent]
                    step = selector_step(run.at, parent)
                    ckpt = Path(tmp) / run.parent / str(step)
                    if not ckpt.is_dir():
                        write_stub_checkpoint(ckpt, parent, step)
                    spec = fn(ckpt, run.branch)
                specs[run.key] = with_kept_checkpoints(spec, run.keep)
            except (WsdlabError, ValueError) as err:
                raise ConfigError(f"run '{run.key}' of study '{plan.study.name}': {err}") from None
    return specs


def check_branches(plan: Plan, branch_fn: BranchFn | None = None) -> None:
    """Build every run's spec before any training (`planned_specs`); ConfigError names the bad run."""
    planned_specs(plan, branch_fn)


def relative(path: Path, start: Path) -> str:
    """`path` relative to `start` when below it (for display), else absolute."""
    try:
        return os.path.relpath(path, start) if Path(path).resolve().is_relative_to(Path(start).resolve()) else str(path)
    except ValueError:
        return str(path)


def tokens_at(resolved: ResolvedRun, step: int, by_key: Mapping[str, ResolvedRun]) -> int:
    """Tokens (images) a run has read by `step`: its parent's up to the branch point, each at the parent's
    batch (a batch-scaled or fine-tuning branch reads another batch than its parent), then its own steps.
    A branch whose parent is not in `by_key` counts every step at its own batch."""
    from wsdlab.study.compute import run_cost

    spec = resolved.spec
    per_step = run_cost(spec, spec.train.steps - 1).tokens
    start = resolved.start_step
    parent = by_key.get(resolved.run.parent) if resolved.run.parent is not None else None
    if parent is None or start == 0:
        return step * per_step
    return tokens_at(parent, start, by_key) + (step - start) * per_step


def describe(resolved: ResolvedRun, by_key: Mapping[str, ResolvedRun] | None = None) -> dict[str, Any]:
    """A flat row about a resolved run (runs.csv, status tables): key, stage, labels, hash, folder, steps,
    and its scale (model arch, parameters, tokens of all its steps from step 0, its parents' included when
    `by_key` holds them) for the claims' scale line."""
    from wsdlab.models import num_parameters

    spec = resolved.spec
    return {"key": resolved.key, "stage": resolved.run.stage, **resolved.run.labels,
            "hash": resolved.hash, "dir": resolved.path.name, "steps": spec.train.steps,
            "arch": spec.model.arch, "params": num_parameters(spec.model),
            "tokens": tokens_at(resolved, spec.train.steps, by_key or {})}
