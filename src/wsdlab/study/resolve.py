"""From planned runs to run directories: the full RunSpec of each run, its hash, and its folder.

A run is identified by the hash of its full RunSpec (`wsdlab.common.spec_hash`) with `init_from`
written relative to the study folder, so hashes do not depend on where the study lives. Its folder
is STUDY/runs/<key>-<hash>/; two planned runs with the same spec (e.g. a panel's baseline equal to a
grid cooldown) share the folder of the first. A branch is resolved once its parent is complete,
because `branch_spec` reads the parent's checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsdlab.common.errors import ConfigError
from wsdlab.common.hashing import spec_hash
from wsdlab.study.plan import Plan, PlannedRun
from wsdlab.train.config import RunSpec

BranchFn = Callable[..., RunSpec]  # branch_spec(checkpoint: Path, **BranchRecipe.branch_kwargs()) -> RunSpec
RUNS_DIR = "runs"
COMPLETE = "COMPLETE"


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


def run_identity(spec: RunSpec, study_dir: Path) -> str:
    """spec_hash of the spec with `init_from` made relative to the study folder (location independent)."""
    data = spec.model_dump(mode="json")
    if data.get("init_from"):
        init = Path(data["init_from"])
        try:
            data["init_from"] = init.resolve().relative_to(study_dir.resolve()).as_posix()
        except ValueError:
            pass  # outside the study: keep the absolute path
    return spec_hash(data)


def run_is_complete(path: Path) -> bool:
    """True when the run folder holds COMPLETE (written last, atomically, by train())."""
    return (path / COMPLETE).is_file()


def final_checkpoint(path: Path, spec: RunSpec) -> Path:
    """RUN/checkpoints/<train.steps>: where the branches of a complete run start."""
    return path / "checkpoints" / str(spec.train.steps)


def _default_branch_fn() -> BranchFn:
    from wsdlab.train import branch_spec

    return branch_spec


class Resolver:
    """Resolves planned runs lazily, memoizing results; parents must be resolved (and complete) first."""

    def __init__(self, plan: Plan, study_dir: Path, branch_fn: BranchFn | None = None) -> None:
        self.plan = plan
        self.study_dir = Path(study_dir).absolute()
        self._branch_fn = branch_fn
        self._done: dict[str, ResolvedRun] = {}
        self._by_hash: dict[str, Path] = {}

    @property
    def branch_fn(self) -> BranchFn:
        if self._branch_fn is None:
            self._branch_fn = _default_branch_fn()
        return self._branch_fn

    def get(self, key: str) -> ResolvedRun | None:
        return self._done.get(key)

    def resolve(self, run: PlannedRun) -> ResolvedRun | None:
        """The resolved run, or None while its parent is not complete."""
        if run.key in self._done:
            return self._done[run.key]
        if run.spec is not None:
            spec = run.spec
        else:
            assert run.parent is not None and run.recipe is not None
            parent = self.resolve(self.plan[run.parent])
            if parent is None or not run_is_complete(parent.path):
                return None
            spec = self.branch_fn(final_checkpoint(parent.path, parent.spec), **run.recipe.branch_kwargs())
        digest = run_identity(spec, self.study_dir)
        path = self._by_hash.setdefault(digest, self.study_dir / RUNS_DIR / f"{run.key}-{digest}")
        resolved = ResolvedRun(run, spec, digest, path)
        self._done[run.key] = resolved
        return resolved

    def resolve_all(self) -> dict[str, ResolvedRun | None]:
        """Every run of the plan that can be resolved now (None for the others)."""
        return {run.key: self.resolve(run) for run in self.plan}


def check_branches(plan: Plan, branch_fn: BranchFn | None = None) -> None:
    """Build every branch spec against a stand-in of its parent's final checkpoint, before any training,
    so a bad override fails in seconds rather than after the base run. ValueError names the run."""
    import tempfile

    from wsdlab.train.checkpoint import write_stub_checkpoint

    fn = branch_fn or _default_branch_fn()
    with tempfile.TemporaryDirectory(prefix=".tmp-check-") as tmp:
        for run in plan:
            if run.recipe is None or run.parent is None:
                continue
            parent = plan[run.parent]
            if parent.spec is None:
                continue  # a branch of a branch: its parent spec exists only after resolution
            ckpt = Path(tmp) / parent.key / str(parent.spec.train.steps)
            if not ckpt.is_dir():
                write_stub_checkpoint(ckpt, parent.spec)  # valid and verified, but holds no tensors
            try:
                fn(ckpt, **run.recipe.branch_kwargs())
            except ValueError as err:
                raise ConfigError(f"run '{run.key}' of study '{plan.study.name}': {err}") from None


def relative(path: Path, start: Path) -> str:
    """`path` relative to `start` when below it (for display), else absolute."""
    try:
        return os.path.relpath(path, start) if Path(path).resolve().is_relative_to(Path(start).resolve()) else str(path)
    except ValueError:
        return str(path)


def describe(resolved: ResolvedRun) -> dict[str, Any]:
    """A flat row about a resolved run (runs.csv, status tables)."""
    return {"key": resolved.key, "role": resolved.run.role, **resolved.run.labels,
            "hash": resolved.hash, "dir": resolved.path.name, "steps": resolved.spec.train.steps}
