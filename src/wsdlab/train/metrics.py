"""Metrics sinks (torchtitan style): a no-op base, a JSON-lines file, TensorBoard and W&B.

The loop hands every sink a flat `dict[str, float]` with slash-separated keys (`train/loss`,
`val/loss`, ...) and the step. RUN/metrics.jsonl itself is written by `JsonlFile` with the
ARCHITECTURE row format (train rows: step, loss, lr, ...; eval rows: split="val", step, val_loss).
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
from pathlib import Path
from typing import Any

from wsdlab.common.errors import ConfigError
from wsdlab.common.io import atomic_write_text


class MetricsSink:
    """Receives flat metrics once per logged step; the base class drops them.

    `train()` closes the sinks it was given when it returns; `close` must be safe to call twice.
    """

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record `metrics` at `step`."""

    def close(self) -> None:
        """Flush and release resources."""


def _clean(value: Any) -> Any:
    """JSON-safe value: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlFile:
    """Append-only JSON-lines file that can be cut back to a step (resume keeps files consistent)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f: io.TextIOWrapper | None = None

    def truncate_after(self, step: int) -> None:
        """Atomically drop every row with `step` > step (all rows when step < 0)."""
        rows = read_jsonl(self.path) if self.path.exists() else []
        keep = [r for r in rows if r.get("step", 0) <= step] if step >= 0 else []
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def write(self, row: dict[str, Any]) -> None:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = self.path.open("a", buffering=1)  # line-buffered: rows are visible as they come
        self._f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete rows of a JSON-lines file (a torn last line from a kill is skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class JsonlSink(MetricsSink):
    """Writes `{"step": step, **metrics}` per call to a JSON-lines file."""

    def __init__(self, path: str | Path) -> None:
        self._file = JsonlFile(path)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._file.write({"step": step, **metrics})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _require(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{module} is not installed; install it with: pip install 'wsdlab[{extra}]'")


class TensorBoardSink(MetricsSink):
    """Scalars to a TensorBoard event directory (needs the `tensorboard` extra; created on first log)."""

    def __init__(self, log_dir: str | Path) -> None:
        _require("tensorboard", "tensorboard")
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir))
        for key, value in metrics.items():
            if value is not None and math.isfinite(value):
                self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class WandbSink(MetricsSink):
    """Metrics to Weights & Biases (needs the `wandb` extra; the run starts on first log)."""

    def __init__(self, project: str, name: str | None = None, config: dict[str, Any] | None = None,
                 directory: str | Path | None = None) -> None:
        _require("wandb", "wandb")
        self.project, self.name, self.config, self.directory = project, name, config, directory
        self._run: Any = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self._run is None:
            import wandb

            self._run = wandb.init(project=self.project, name=self.name, config=self.config,
                                   dir=str(self.directory) if self.directory else None)
        self._run.log({k: v for k, v in metrics.items() if v is not None}, step=step)

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


def flat_metrics(row: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl row as sink metrics: `train/<key>` or `val/<key>`, numbers only."""
    split = row.get("split", "train")
    out = {}
    for key, value in row.items():
        if key in ("step", "split") or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        name = "loss" if key == "val_loss" else key
        out[f"{split}/{name}"] = float(value)
    return out
