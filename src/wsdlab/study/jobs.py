"""Job kinds: what one run of a stage does. A new kind (an evaluation, a fine-tuning sweep) is one class.

A kind turns a resolved RunSpec and a run folder into work on disk, and says when that work is done.
Executors and the worker call `get_job(kind).run(...)`; the planner and runner only carry the name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from wsdlab.common.errors import ConfigError
from wsdlab.train.config import RunSpec


class JobKind(ABC):
    """One kind of job. Subclasses set `name` and implement `run`; `is_complete` defaults to the run store's."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, spec: RunSpec, out: Path, sinks: Sequence[Any] = ()) -> None:
        """Do (or finish: resume from what `out` holds) the job's work into `out`."""

    def is_complete(self, out: Path) -> bool:
        from wsdlab.train.runstore import is_complete

        return is_complete(out)

    def check(self, spec: RunSpec, is_branch: bool, where: str) -> None:
        """ConfigError (naming `where`, e.g. `stages.sft`) when `spec` cannot be this job: called when the
        plan is made, before anything trains. Default: any spec."""


_JOBS: dict[str, JobKind] = {}


def register_job(cls: type[JobKind]) -> type[JobKind]:
    """Class decorator: make `cls` available as `get_job(cls.name)`; a second class of one name is an error."""
    if cls.name in _JOBS and type(_JOBS[cls.name]) is not cls:
        raise ValueError(f"job kind '{cls.name}' is already registered by {type(_JOBS[cls.name]).__module__}")
    _JOBS[cls.name] = cls()
    return cls


def get_job(name: str) -> JobKind:
    if name not in _JOBS:
        raise ConfigError(f"unknown job kind '{name}'; known: {', '.join(sorted(_JOBS))}")
    return _JOBS[name]


def job_names() -> list[str]:
    return sorted(_JOBS)


@register_job
class TrainJob(JobKind):
    """Train (or resume) the run to `train.steps`: `wsdlab.train.train`."""

    name = "train"

    def run(self, spec: RunSpec, out: Path, sinks: Sequence[Any] = ()) -> None:
        from wsdlab.train import train

        train(spec, out, sinks=sinks)


@register_job
class SFTJob(JobKind):
    """Supervised fine-tuning (WSO paper, App. D): a `restart` branch on prompt/response pairs (`data.sft`),
    trained with the same loop; its schedule starts at the branch (Table 8's warmup counts from there)."""

    name = "sft"

    def check(self, spec: RunSpec, is_branch: bool, where: str) -> None:
        if not is_branch:
            raise ConfigError(f"{where}: job sft fine-tunes a trained model; give the stage `from: <stage>` "
                              "(a root stage trains from scratch)")
        if spec.data.sft is None:
            raise ConfigError(f"{where}: job sft reads no SFT data; set branch.data.sft (e.g. {{source: stdlib}})")
        if spec.schedule.start_step == 0:
            raise ConfigError(f"{where}: job sft needs branch.mode restart (a schedule from its own start)")

    def run(self, spec: RunSpec, out: Path, sinks: Sequence[Any] = ()) -> None:
        from wsdlab.train import train

        self.check(spec, spec.init_from is not None, f"run '{spec.name}'")
        train(spec, out, sinks=sinks)
