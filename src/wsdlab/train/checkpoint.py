"""Checkpoint directories: weights, optimizer state, RNG, train state and spec, written atomically.

Layout of RUN/checkpoints/<step>/ (docs/ARCHITECTURE.md): model.safetensors, optimizer.safetensors
(AdamW state under "<param name>/<step|exp_avg|exp_avg_sq>"), rng.safetensors (torch CPU/CUDA
generator states), state.json (step, data_cursor, tokens, optimizer param-group hyper-parameters,
python/numpy RNG states) and spec.yaml. The directory is built under a `.tmp-*` name and renamed,
so a crash never leaves a checkpoint that looks valid. Nothing is unpickled on load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from wsdlab.common.errors import ConfigError
from wsdlab.common.io import atomic_directory
from wsdlab.models.config import ModelConfig
from wsdlab.train.config import RunSpec
from wsdlab.train.spec_io import describe_differences, differing_keys, dump_spec, read_spec

FORMAT_VERSION = 1
MODEL_FILE, OPTIM_FILE, RNG_FILE, STATE_FILE, SPEC_FILE = (
    "model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json", "spec.yaml")
REQUIRED_FILES = (MODEL_FILE, STATE_FILE, SPEC_FILE)


def cpu_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies (tied weights become separate tensors, which safetensors requires)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def save_checkpoint(directory: str | Path, *, model_state: dict[str, torch.Tensor],
                    optim_state: dict[str, torch.Tensor], rng_state: dict[str, torch.Tensor],
                    state: dict[str, Any], spec: RunSpec) -> Path:
    """Write one checkpoint directory atomically (replacing an older one of the same step)."""
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        save_file(cpu_tensors(model_state), tmp / MODEL_FILE)
        save_file(cpu_tensors(optim_state), tmp / OPTIM_FILE)
        save_file(cpu_tensors(rng_state), tmp / RNG_FILE)
        (tmp / STATE_FILE).write_text(json.dumps({"format": FORMAT_VERSION, **state}))
        (tmp / SPEC_FILE).write_text(dump_spec(spec))
    return directory


def is_checkpoint(path: Path) -> bool:
    """A finished checkpoint: a step-named directory (not `.tmp-*`) holding the required files."""
    return path.is_dir() and path.name.isdigit() and all((path / f).is_file() for f in REQUIRED_FILES)


def list_checkpoints(run: str | Path) -> dict[int, Path]:
    """{step: directory} of the finished checkpoints of a run, sorted by step."""
    root = Path(run) / "checkpoints"
    if not root.is_dir():
        return {}
    found = {int(p.name): p for p in root.iterdir() if is_checkpoint(p)}
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint directory opened for reading (tensors are read on demand)."""

    path: Path
    spec: RunSpec
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def model_tensors(self) -> dict[str, torch.Tensor]:
        return load_file(self.path / MODEL_FILE)

    def optimizer_tensors(self) -> dict[str, torch.Tensor]:
        path = self.path / OPTIM_FILE
        return load_file(path) if path.is_file() else {}

    def rng_tensors(self) -> dict[str, torch.Tensor]:
        path = self.path / RNG_FILE
        return load_file(path) if path.is_file() else {}


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Read state.json and spec.yaml of a checkpoint; FileNotFoundError names what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {path}")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"not a checkpoint directory: {path} (missing {', '.join(missing)})")
    state = json.loads((path / STATE_FILE).read_text())
    return Checkpoint(path=path, spec=read_spec(path / SPEC_FILE), state=state)


def check_same_model(stored: ModelConfig, wanted: ModelConfig, where: str | Path) -> None:
    """ValueError naming the model fields that differ between a checkpoint and a spec.

    `preset` is informational and ignored.
    """
    a, b = stored.model_dump(mode="json"), wanted.model_dump(mode="json")
    a.pop("preset", None), b.pop("preset", None)
    keys = differing_keys(a, b)
    if keys:
        detail = describe_differences(a, b, keys, "checkpoint", "spec")
        raise ConfigError(f"checkpoint {where} holds another model: model fields differ: "
                         f"{', '.join('model.' + k for k in keys)} ({detail})")


def load_model_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str | Path) -> None:
    """Copy saved weights into `model` exactly; missing/unexpected names or shapes are a ValueError."""
    own = model.state_dict()
    missing, unexpected = sorted(own.keys() - tensors.keys()), sorted(tensors.keys() - own.keys())
    if missing or unexpected:
        raise ValueError(f"checkpoint {where} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    bad = [k for k, v in tensors.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(f"checkpoint {where} does not match the model: shapes differ for {bad[:5]}")
    model.load_state_dict(tensors)
