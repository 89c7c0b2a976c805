"""Executors run independent runs: in this process one after another, in local worker processes
(each pinned to its CPUs or a GPU), or as Slurm jobs through submitit (optional extra `slurm`).

All share one small interface driven by the study runner: `submit(job)` while `free_slots() > 0`,
then `wait(timeout)` returns the jobs that ended. `close()` stops whatever still runs (Ctrl-C);
each run resumes from its latest checkpoint the next time, so nothing finished is lost.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wsdlab.common.errors import ConfigError
from wsdlab.common.io import atomic_write_text
from wsdlab.study.spec import SlurmConfig
from wsdlab.study.worker import RunFn, SinkOptions, format_cpus, run_job
from wsdlab.train.config import RunSpec

EXECUTORS = ("local", "processes", "slurm")


@dataclass(frozen=True)
class Job:
    """One run to train: `spec` into folder `path`; `key` names it on screen."""

    key: str
    spec: RunSpec
    path: Path


@dataclass(frozen=True)
class JobResult:
    job: Job
    error: str | None = None  # None: the job returned normally

    @property
    def ok(self) -> bool:
        return self.error is None


class Executor(ABC):
    """Runs jobs; the runner never submits more than `free_slots()`."""

    @abstractmethod
    def free_slots(self) -> int: ...

    @abstractmethod
    def submit(self, job: Job) -> None: ...

    @abstractmethod
    def wait(self, timeout: float) -> list[JobResult]:
        """Jobs that ended since the last call (blocks up to `timeout` s when none has)."""

    @abstractmethod
    def running(self) -> list[Job]: ...

    def close(self) -> None:
        """Stop jobs still running (on interrupt or error)."""


class SequentialExecutor(Executor):
    """In-process, one run at a time: `wait` trains the submitted run in the foreground."""

    def __init__(self, run_fn: RunFn | None = None, sinks: SinkOptions = SinkOptions()) -> None:
        self.run_fn = run_fn
        self.sinks = sinks
        self._queue: deque[Job] = deque()
        self._current: Job | None = None

    def free_slots(self) -> int:
        return 0 if self._queue else 1

    def submit(self, job: Job) -> None:
        self._queue.append(job)

    def running(self) -> list[Job]:
        return [self._current] if self._current else list(self._queue)

    def wait(self, timeout: float) -> list[JobResult]:
        if not self._queue:
            time.sleep(min(timeout, 0.05))
            return []
        job = self._current = self._queue.popleft()
        try:
            run_job(job.spec.model_dump(mode="json"), job.path, job.key, self.sinks, self.run_fn)
            return [JobResult(job)]
        except Exception as err:  # noqa: BLE001 - a failed run must not stop its independent siblings
            return [JobResult(job, _short_traceback(err))]
        finally:
            self._current = None


def _short_traceback(err: BaseException) -> str:
    """The error on the first line, then the innermost frames of its traceback."""
    head = "".join(traceback.format_exception_only(type(err), err)).strip()
    frames = "".join(traceback.format_tb(err.__traceback__)[-3:]).rstrip()
    return f"{head}\n{frames}"


# --------------------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Slot:
    """Where one worker process runs: its CPUs (affinity), torch threads and GPU (None on CPU)."""

    cpus: tuple[int, ...]
    threads: int
    gpu: int | None


def plan_slots(workers: int, cpus: list[int] | None = None, num_gpus: int = 0) -> list[Slot]:
    """Split the CPUs evenly between `workers` slots; with GPUs, slot i uses GPU i mod num_gpus."""
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    cpus = cpus if cpus is not None else sorted(_available_cpus())
    per = max(1, len(cpus) // workers)
    slots = []
    for i in range(workers):
        mine = cpus[i * per : (i + 1) * per] if len(cpus) >= workers else cpus
        slots.append(Slot(tuple(mine), len(mine), i % num_gpus if num_gpus else None))
    return slots


def auto_workers(max_cpu_workers: int = 4) -> int:
    """Runs to train at once by default: one per GPU, else one per CPU core (at most `max_cpu_workers`).

    On CPU, single-threaded worker processes beat one multi-threaded process for small models, and
    they keep their speed on a busy machine, where threads of one process wait on each other.
    """
    gpus = _cuda_device_count()
    return gpus if gpus else max(1, min(len(_available_cpus()), max_cpu_workers))


def _available_cpus() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGKILL this worker when the study process dies, so a killed study leaves no orphan
    training into a run folder that the next `study run` resumes."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


class ProcessExecutor(Executor):
    """Up to `workers` `python -m wsdlab study worker ...` subprocesses, each pinned to a slot.

    Job specs go to STUDY/jobs/<run folder>.yaml and output to STUDY/logs/<run folder>.log.
    """

    def __init__(self, study_dir: Path, workers: int, sinks: SinkOptions = SinkOptions(),
                 num_gpus: int | None = None, python: str = sys.executable) -> None:
        if num_gpus is None:
            num_gpus = _cuda_device_count()
        self.study_dir = Path(study_dir)
        self.slots = plan_slots(workers, num_gpus=num_gpus)
        self.sinks = sinks
        self.python = python
        self._procs: dict[int, tuple[Job, subprocess.Popen[bytes], Any]] = {}  # slot index -> job

    def free_slots(self) -> int:
        return len(self.slots) - len(self._procs)

    def running(self) -> list[Job]:
        return [job for job, _, _ in self._procs.values()]

    def submit(self, job: Job) -> None:
        index = next(i for i in range(len(self.slots)) if i not in self._procs)
        slot = self.slots[index]
        job_file = self.study_dir / "jobs" / f"{job.path.name}.yaml"
        atomic_write_text(job_file, yaml.safe_dump(job.spec.model_dump(mode="json"), sort_keys=False))
        log_path = self.log_path(job)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - closed when the process ends
        cmd = [self.python, "-m", "wsdlab", "study", "worker", str(job_file), str(job.path), "--name", job.key,
               "--threads", str(slot.threads), "--cpus", format_cpus(slot.cpus), *self.sinks.to_args()]
        env = {**os.environ, "OMP_NUM_THREADS": str(slot.threads), "MKL_NUM_THREADS": str(slot.threads)}
        if slot.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(slot.gpu)
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                preexec_fn=preexec)
        self._procs[index] = (job, proc, log)

    def log_path(self, job: Job) -> Path:
        return self.study_dir / "logs" / f"{job.path.name}.log"

    def wait(self, timeout: float) -> list[JobResult]:
        deadline = time.monotonic() + timeout
        while True:
            ended = [i for i, (_, proc, _) in self._procs.items() if proc.poll() is not None]
            if ended or not self._procs or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        results = []
        for i in ended:
            job, proc, log = self._procs.pop(i)
            log.close()
            error = None
            if proc.returncode != 0:
                tail = _tail(self.log_path(job))
                last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
                error = (f"worker exited with code {proc.returncode}: {last.strip()} (log: {self.log_path(job)})\n"
                         f"last lines of the log:\n{tail}")
            results.append(JobResult(job, error))
        return results

    def close(self) -> None:
        for _, proc, _ in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # train() stops cleanly; checkpoints are atomic anyway
        deadline = time.monotonic() + 10
        for _, proc, log in self._procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
        self._procs.clear()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA install means CPU workers
        return 0


# ------------------------------------------------------------------------------------------- slurm


def import_submitit() -> Any:
    """submitit, or a clear error naming the optional extra."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--executor slurm needs submitit: pip install 'wsdlab[slurm]'") from None
    return submitit


class SlurmExecutor(Executor):
    """One submitit job per run (Slurm, or submitit's 'local'/'debug' cluster for testing)."""

    def __init__(self, study_dir: Path, config: SlurmConfig, sinks: SinkOptions = SinkOptions(),
                 cluster: str | None = None, max_jobs: int = 256, run_fn: RunFn | None = None) -> None:
        submitit = import_submitit()
        self.executor = submitit.AutoExecutor(folder=str(Path(study_dir) / "slurm" / "%j"), cluster=cluster)
        params: dict[str, Any] = {"timeout_min": config.timeout_min, "cpus_per_task": config.cpus_per_task,
                                  "gpus_per_node": config.gpus_per_node, "tasks_per_node": 1, "nodes": 1}
        if config.mem_gb is not None:
            params["mem_gb"] = config.mem_gb
        if config.partition is not None:
            params["slurm_partition"] = config.partition
        params.update(config.additional)
        if self.executor.cluster != "slurm":
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        self.executor.update_parameters(**params)
        self.sinks = sinks
        self.max_jobs = max_jobs
        self.run_fn = run_fn  # None: wsdlab.train.train (a test passes a stand-in with cluster="debug")
        self._jobs: list[tuple[Job, Any]] = []

    def free_slots(self) -> int:
        return self.max_jobs - len(self._jobs)

    def running(self) -> list[Job]:
        return [job for job, _ in self._jobs]

    def submit(self, job: Job) -> None:
        handle = self.executor.submit(run_job, job.spec.model_dump(mode="json"), str(job.path), job.key, self.sinks,
                                      self.run_fn)
        self._jobs.append((job, handle))

    def wait(self, timeout: float) -> list[JobResult]:
        deadline = time.monotonic() + timeout
        while True:
            ended = [(job, h) for job, h in self._jobs if h.done()]
            if ended or not self._jobs or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        results = []
        for job, handle in ended:
            self._jobs.remove((job, handle))
            try:
                handle.result()
                results.append(JobResult(job))
            except Exception as err:  # noqa: BLE001 - submitit re-raises the job's failure here
                results.append(JobResult(job, f"job {handle.job_id} failed: {err}"))
        return results

    def close(self) -> None:
        for _, handle in self._jobs:
            with contextlib.suppress(Exception):
                handle.cancel(check=False)
        self._jobs.clear()


def make_executor(kind: str, study_dir: Path, *, workers: int = 1, sinks: SinkOptions = SinkOptions(),
                  slurm: SlurmConfig | None = None, run_fn: RunFn | None = None) -> Executor:
    """The executor named on the command line (`local` with --workers > 1 means `processes`)."""
    if kind not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got '{kind}'")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if kind == "slurm":
        return SlurmExecutor(study_dir, slurm or SlurmConfig(), sinks)
    if kind == "processes" or workers > 1:
        return ProcessExecutor(study_dir, workers, sinks)
    return SequentialExecutor(run_fn, sinks)
