"""Executors run independent runs: in this process one after another, in local worker processes
(each pinned to its CPUs or a GPU), or as Slurm jobs through submitit (optional extra `slurm`).

All share one small interface driven by the study runner: `submit(job)` while `free_slots() > 0`,
then `wait(timeout)` returns the jobs that ended. `close()` stops whatever still runs (Ctrl-C);
each run resumes from its latest checkpoint the next time, so nothing finished is lost.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wsdlab.common.errors import ConfigError
from wsdlab.common.io import atomic_write_text
from wsdlab.study.spec import SlurmConfig
from wsdlab.study.worker import RunFn, SinkOptions, format_cpus, run_job, short_traceback
from wsdlab.train.config import RunSpec

EXECUTORS = ("local", "processes", "slurm")


@dataclass(frozen=True)
class Job:
    """One run to train: `spec` into folder `path`; `key` names it on screen."""

    key: str
    spec: RunSpec
    path: Path
    kind: str = "train"  # a registered wsdlab.study.jobs kind
    alone: bool = False  # nothing else can run meanwhile: a worker may use every CPU of the executor


@dataclass(frozen=True)
class JobResult:
    job: Job
    error: str | None = None  # None: the job returned normally
    log: Path | None = None  # where the failed job's full traceback is


class Executor(ABC):
    """Runs jobs; the runner never submits more than `free_slots()`."""

    trains_elsewhere: bool = False  # jobs run in other processes: this one is free for the study's analyses

    @abstractmethod
    def free_slots(self) -> int: ...

    @abstractmethod
    def submit(self, job: Job) -> None: ...

    @abstractmethod
    def wait(self, timeout: float) -> list[JobResult]:
        """Jobs that ended since the last call (blocks up to `timeout` s when none has)."""

    def close(self) -> None:
        """Stop jobs still running (on interrupt or error)."""


class SequentialExecutor(Executor):
    """In-process, one run at a time: `wait` trains the submitted run in the foreground."""

    def __init__(self, run_fn: RunFn | None = None, sinks: SinkOptions = SinkOptions()) -> None:
        self.run_fn = run_fn
        self.sinks = sinks
        self._queue: deque[Job] = deque()

    def free_slots(self) -> int:
        return 0 if self._queue else 1

    def submit(self, job: Job) -> None:
        self._queue.append(job)

    def wait(self, timeout: float) -> list[JobResult]:
        if not self._queue:
            time.sleep(min(timeout, 0.05))
            return []
        job = self._queue.popleft()
        try:
            run_job(job.spec.model_dump(mode="json"), job.path, job.key, self.sinks, self.run_fn, job.kind)
            return [JobResult(job)]
        except Exception as err:  # noqa: BLE001 - a failed run must not stop its independent siblings
            return [JobResult(job, short_traceback(err), write_failure_log(job.path, err))]


def write_failure_log(run_path: Path, err: BaseException) -> Path | None:
    """Append a failed in-process job's full traceback to STUDY/logs/<run folder>.log (the processes
    executor's log of the same run); None when it cannot be written."""
    import traceback

    log = Path(run_path).parent.parent / "logs" / f"{Path(run_path).name}.log"
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write("".join(traceback.format_exception(type(err), err, err.__traceback__)))
    except OSError:
        return None
    return log


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
    cpus = cpus if cpus is not None else sorted(available_cpus())
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
    return gpus if gpus else max(1, min(len(available_cpus()), max_cpu_workers))


def available_cpus() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGKILL this worker when the study process dies, so a killed study leaves no orphan
    training into a run folder that the next `study run` resumes."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


class _Worker:
    """One long-lived `python -m wsdlab.study.worker` process bound to a slot, and the job it runs."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        with open(log, "ab") as err:
            preexec = _die_with_parent if sys.platform.startswith("linux") else None
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env,
                                         preexec_fn=preexec, text=True, bufsize=1)
        self.job: Job | None = None
        self.job_log: Path | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, request: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)  # train() stops cleanly; checkpoints are atomic anyway


class ProcessExecutor(Executor):
    """Up to `workers` long-lived worker processes (`python -m wsdlab.study.worker`), each pinned to a slot.

    A worker trains one run after another without restarting, so interpreter and torch start-up and
    the data loading are paid once per worker, not once per run. Job specs go to
    STUDY/jobs/<run folder>.yaml and a run's output to STUDY/logs/<run folder>.log.
    """

    def __init__(self, study_dir: Path, workers: int, sinks: SinkOptions = SinkOptions(),
                 num_gpus: int | None = None, python: str = sys.executable) -> None:
        if num_gpus is None:
            num_gpus = _cuda_device_count()
        self.study_dir = Path(study_dir)
        self.trains_elsewhere = num_gpus == 0  # GPU runs would share their device with the analyses
        self.slots = plan_slots(workers, num_gpus=num_gpus)
        self.sinks = sinks
        self.python = python
        self._workers: dict[int, _Worker] = {}

    def free_slots(self) -> int:
        return len(self.slots) - sum(w.job is not None for w in self._workers.values())

    def _worker(self, index: int) -> _Worker:
        worker = self._workers.get(index)
        if worker is not None and worker.alive():
            return worker
        slot = self.slots[index]
        cmd = [self.python, "-m", "wsdlab.study.worker", "--study", str(self.study_dir),
               "--threads", str(slot.threads), "--cpus", format_cpus(slot.cpus)]
        if self.sinks.tensorboard:
            cmd.append("--tensorboard")
        if self.sinks.wandb_project:
            cmd += ["--wandb", self.sinks.wandb_project]
        env = {**os.environ, "OMP_NUM_THREADS": str(slot.threads), "MKL_NUM_THREADS": str(slot.threads)}
        if slot.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(slot.gpu)
        worker = self._workers[index] = _Worker(cmd, env, self.study_dir / "logs" / f"worker-{index}.log")
        return worker

    def submit(self, job: Job) -> None:
        index = next(i for i in range(len(self.slots)) if self._workers.get(i) is None or self._workers[i].job is None)
        worker = self._worker(index)
        job_file = self.study_dir / "jobs" / f"{job.path.name}.yaml"
        atomic_write_text(job_file, yaml.safe_dump(job.spec.model_dump(mode="json"), sort_keys=False))
        log_path = self.log_path(job)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        worker.job, worker.job_log = job, log_path
        request = {"spec": str(job_file), "out": str(job.path), "name": job.key, "kind": job.kind, "log": str(log_path)}
        others = any(w.job is not None for i, w in self._workers.items() if i != index)
        if job.alone and not others and len(self.slots) > 1 and self.slots[index].gpu is None:
            # the only run that can train now (a study's root run): every CPU of the executor, one thread each
            cpus = sorted({c for slot in self.slots for c in slot.cpus})
            request.update(cpus=format_cpus(cpus), threads=len(cpus))
        worker.send(request)

    def log_path(self, job: Job) -> Path:
        return self.study_dir / "logs" / f"{job.path.name}.log"

    def wait(self, timeout: float) -> list[JobResult]:
        busy = {w.proc.stdout: w for w in self._workers.values() if w.job is not None}
        if not busy:
            time.sleep(min(timeout, 0.05))
            return []
        ready, _, _ = select.select(list(busy), [], [], timeout)
        results = []
        for stream in ready:
            worker = busy[stream]
            line = stream.readline()
            job, worker.job = worker.job, None
            assert job is not None
            if line:
                error = json.loads(line).get("error")
            else:  # the worker died in the middle of the job
                worker.proc.wait()
                tail = _tail(self.log_path(job))
                last = next((x for x in reversed(tail.splitlines()) if x.strip()), "")
                error = (f"worker exited with code {worker.proc.returncode}: {last.strip()} "
                         f"(log: {self.log_path(job)})\nlast lines of the log:\n{tail}")
            if error is not None and "(log: " not in error:
                error = f"{error}\n(log: {self.log_path(job)})"
            results.append(JobResult(job, error, self.log_path(job) if error else None))
        return results

    def close(self) -> None:
        for worker in self._workers.values():
            worker.stop()
            if worker.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    worker.proc.stdin.close()
        deadline = time.monotonic() + 10
        for worker in self._workers.values():
            try:
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
            if worker.proc.stdout is not None:
                worker.proc.stdout.close()
        self._workers.clear()


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

    def submit(self, job: Job) -> None:
        handle = self.executor.submit(run_job, job.spec.model_dump(mode="json"), str(job.path), job.key, self.sinks,
                                      self.run_fn, job.kind)
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
