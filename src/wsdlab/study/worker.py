"""What one executor slot does: train one run (in this process, a subprocess, or a Slurm job).

`python -m wsdlab study worker JOB.yaml OUT --threads 2 --cpus 0,1` (the process executor's command)
pins itself to its CPUs / GPU, then calls `wsdlab.train.train(spec, OUT, sinks=...)`, which resumes
from the latest checkpoint in OUT.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsdlab.train.config import RunSpec

RunFn = Callable[..., Any]  # train(spec, out, *, sinks=...)


@dataclass(frozen=True)
class SinkOptions:
    """Extra metric sinks for every run: TensorBoard files under RUN/tensorboard, W&B project."""

    tensorboard: bool = False
    wandb_project: str | None = None

    def to_args(self) -> list[str]:
        args = ["--tensorboard"] if self.tensorboard else []
        return args + (["--wandb", self.wandb_project] if self.wandb_project else [])


def make_sinks(options: SinkOptions, out: Path, name: str, spec: RunSpec) -> list[Any]:
    """The train engine's sinks asked for by `options` (their packages are imported only when asked)."""
    sinks: list[Any] = []
    if options.tensorboard:
        from wsdlab.train import TensorBoardSink

        sinks.append(TensorBoardSink(out / "tensorboard"))
    if options.wandb_project:
        from wsdlab.train import WandbSink

        sinks.append(WandbSink(project=options.wandb_project, name=name, config=spec.model_dump(mode="json"),
                               directory=out))
    return sinks


def check_sinks(options: SinkOptions) -> None:
    """Fail before any training when a requested sink's package is missing (the sinks are lazy: no files)."""
    from wsdlab.train.config import TrainConfig

    dummy = RunSpec(train=TrainConfig(steps=1))
    for sink in make_sinks(options, Path("."), "check", dummy):
        sink.close()


def pin_threads(threads: int | None, cpus: Sequence[int] | None) -> None:
    """Limit this process to `cpus` (Linux affinity) and `threads` torch threads."""
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))
    if threads:
        import torch

        torch.set_num_threads(threads)


def run_job(spec_data: dict[str, Any], out: str | Path, name: str, options: SinkOptions = SinkOptions(),
            run_fn: RunFn | None = None) -> str:
    """Train one run to completion (resuming if it has checkpoints); returns the run folder."""
    spec = RunSpec.model_validate(spec_data)
    if run_fn is None:
        from wsdlab.train import train as run_fn
    out = Path(out)
    sinks = make_sinks(options, out, name, spec)
    try:
        run_fn(spec, out, sinks=sinks)
    finally:
        for sink in sinks:
            sink.close()
    return str(out)


def parse_cpus(text: str | None) -> list[int] | None:
    """'0,1,4-5' -> [0, 1, 4, 5]."""
    if not text:
        return None
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def format_cpus(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in cpus)
