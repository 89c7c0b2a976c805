"""The names inside a run folder, written once (docs/ARCHITECTURE.md, "Run directory layout").

Every module that reads or writes a run folder takes its file names from here (`RunDir` in
`runstore.py` is the reading API); no other module spells them.
"""

from __future__ import annotations

from pathlib import Path

SPEC = "spec.yaml"  # the resolved RunSpec (also inside each checkpoint)
METRICS = "metrics.jsonl"  # one JSON row per logged step / evaluation
BATCHES = "batches.npy"  # (steps, global batch) stream positions read at each step
COMPLETE = "COMPLETE"  # written last, atomically, when the run reached train.steps
LOCK = ".lock"  # the writer lock (runlock.py)
CHECKPOINTS_DIR = "checkpoints"  # checkpoints/<step>/
SNAPSHOTS_DIR = "snapshots"  # snapshots/<step>.safetensors (weights only)
RUNS_DIR = "runs"  # a study folder's runs: STUDY/runs/<run folder>/


def checkpoint_dir(run: str | Path, step: int) -> Path:
    """RUN/checkpoints/<step>: where a run's checkpoint of `step` lives."""
    return Path(run) / CHECKPOINTS_DIR / str(step)


def snapshot_file(run: str | Path, step: int) -> Path:
    """RUN/snapshots/<step>.safetensors."""
    return Path(run) / SNAPSHOTS_DIR / f"{step}.safetensors"
