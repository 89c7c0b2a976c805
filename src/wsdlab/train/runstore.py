"""Read access to a run directory (the layout in docs/ARCHITECTURE.md) and to single checkpoints."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from wsdlab.models import build_model
from wsdlab.train.checkpoint import (
    MODEL_FILE,
    checkpoint_dir,
    is_sharded,
    list_checkpoints,
    load_model_weights,
    open_checkpoint,
)
from wsdlab.train.config import RunSpec
from wsdlab.train.layout import (  # noqa: F401
    BATCHES,
    CHECKPOINTS_DIR,
    COMPLETE,
    METRICS,
    RUNS_DIR,
    SNAPSHOTS_DIR,
    SPEC,
    snapshot_file,
)
from wsdlab.train.metrics import read_jsonl
from wsdlab.train.spec_io import read_spec


def is_complete(path: str | Path) -> bool:
    """True when the run folder holds COMPLETE (written last, atomically, when training reached its end)."""
    return (Path(path) / COMPLETE).is_file()


class RunDir:
    """One run directory: spec, metrics rows, checkpoints, snapshots, consumed batch indices."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / SPEC).is_file():
            raise FileNotFoundError(f"not a run directory (no {SPEC}): {self.path}")

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @cached_property
    def spec(self) -> RunSpec:
        return read_spec(self.path / SPEC)

    @property
    def is_complete(self) -> bool:
        return is_complete(self.path)

    def _rows(self) -> list[dict[str, Any]]:
        path = self.path / METRICS
        return read_jsonl(path) if path.is_file() else []

    def metrics(self) -> list[dict[str, Any]]:
        """Train rows (one per logged step)."""
        return [r for r in self._rows() if "split" not in r]

    def eval_rows(self) -> list[dict[str, Any]]:
        """Validation rows: {"split": "val", "step", "val_loss"}."""
        return [r for r in self._rows() if r.get("split") == "val"]

    def checkpoint_steps(self) -> list[int]:
        return list(list_checkpoints(self.path))

    def checkpoint_path(self, step: int) -> Path:
        """Where the checkpoint of `step` is (or will be) written: RUN/checkpoints/<step>."""
        return checkpoint_dir(self.path, step)

    def checkpoint(self, step: int) -> Path:
        found = list_checkpoints(self.path)
        if step not in found:
            raise FileNotFoundError(f"no checkpoint at step {step} in {self.path} (have {list(found) or 'none'})")
        return found[step]

    def weights(self, step: int) -> Path:
        """The weights file (safetensors) of the checkpoint of `step` (FileNotFoundError when there is none,
        or when the checkpoint is sharded: read it with `checkpoint_weights`)."""
        path = self.checkpoint(step)
        if is_sharded(path):
            raise FileNotFoundError(f"checkpoint {path} is sharded (an FSDP run) and has no {MODEL_FILE}; "
                                    f"read its weights with RunDir.checkpoint_weights({step})")
        return path / MODEL_FILE

    def checkpoint_weights(self, step: int) -> dict[str, torch.Tensor]:
        """The weights of the checkpoint of `step`, whole on this process, from a single file or from shards
        (the checkpoint is verified first)."""
        return open_checkpoint(self.checkpoint(step)).model_tensors()

    def parent_checkpoint(self) -> Path | None:
        """The checkpoint this run started from (its spec's `init_from`), None for a run from scratch.

        A study folder that was moved or copied still names its old location in `init_from`; then the
        checkpoint is looked up in this run's own runs folder: `<anything>/runs/<run>/checkpoints/<step>`
        becomes `<this run's parent>/<run>/checkpoints/<step>`. FileNotFoundError names both paths when
        neither exists.
        """
        init = self.spec.init_from
        if init is None:
            return None
        given = Path(init)
        if given.exists():
            return given
        parts = given.parts
        if len(parts) >= 4 and parts[-4] == RUNS_DIR and parts[-2] == CHECKPOINTS_DIR:
            sibling = self.path.parent / parts[-3] / CHECKPOINTS_DIR / parts[-1]
            if sibling.exists():
                return sibling
            raise FileNotFoundError(f"run {self.path}: the checkpoint it started from is neither at init_from "
                                    f"{given} nor in its own runs folder at {sibling}")
        raise FileNotFoundError(f"run {self.path}: init_from checkpoint {given} not found (and it is not "
                                f"<study>/{RUNS_DIR}/<run>/{CHECKPOINTS_DIR}/<step>, so it cannot be looked up "
                                f"beside {self.path})")

    def latest_checkpoint(self) -> Path | None:
        found = list_checkpoints(self.path)
        return found[max(found)] if found else None

    def load_model(self, step: int | None = None, device: torch.device | str = "cpu") -> nn.Module:
        """The model at checkpoint `step` (None = the latest, the final one of a complete run), eval mode."""
        path = self.latest_checkpoint() if step is None else self.checkpoint(step)
        if path is None:
            raise FileNotFoundError(f"run {self.path} has no checkpoint yet")
        return load_checkpoint_model(path, device)

    def snapshot_steps(self) -> list[int]:
        root = self.path / SNAPSHOTS_DIR
        if not root.is_dir():
            return []
        return sorted(int(p.stem) for p in root.glob("*.safetensors") if p.stem.isdigit())

    def snapshot(self, step: int) -> Path:
        """The weights file of the snapshot of `step` (RUN/snapshots/<step>.safetensors; it may not exist)."""
        return snapshot_file(self.path, step)

    def load_snapshot(self, step: int) -> dict[str, torch.Tensor]:
        path = self.snapshot(step)
        if not path.is_file():
            raise FileNotFoundError(f"no snapshot at step {step} in {self.path} (have {self.snapshot_steps()})")
        return load_file(path)

    def batch_indices(self) -> np.ndarray:
        """(steps_run, global_batch) int64 stream positions consumed by this run (not its parent's)."""
        path = self.path / BATCHES
        if not path.is_file():
            return np.zeros((0, 0), dtype=np.int64)
        return np.load(path, allow_pickle=False)


def run_of(checkpoint: str | Path) -> RunDir:
    """The run directory holding `checkpoint` (RUN/checkpoints/<step>); FileNotFoundError when it is in none."""
    path = Path(checkpoint)
    if path.parent.name != CHECKPOINTS_DIR:
        raise FileNotFoundError(f"checkpoint {path} is not inside a run (RUN/{CHECKPOINTS_DIR}/<step>)")
    return RunDir(path.parent.parent)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, RunSpec, dict[str, Any]]:
    """(model in eval mode, the run's spec, state.json) of a checkpoint directory; no optimizer."""
    ckpt = open_checkpoint(path)
    with torch.device(device):
        model = build_model(ckpt.spec.model)
    load_model_weights(model, ckpt.model_tensors(), ckpt.path)
    return model.eval(), ckpt.spec, ckpt.state


def load_checkpoint_model(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Just the model of a checkpoint (eval mode)."""
    return load_checkpoint(path, device)[0]
