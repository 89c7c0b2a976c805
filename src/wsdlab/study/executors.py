"""Executors run independent runs: in this process one after another, in local worker processes
(each pinned to its CPUs or a GPU), or as Slurm jobs through submitit (optional extra `slurm`).

All share one small interface driven by the study runner: `submit(run)` while `free_slots() > 0`,
then `wait(timeout)` returns the runs that ended. `close()` stops whatever still runs (Ctrl-C);
each run resumes from its latest checkpoint the next time, so nothing finished is lost.

A run whose stage asks for several ranks (`resources.gpus_per_run`) trains as one distributed job:
under torchrun locally (`launch.py`; it takes that many slots), as one multi-task job on Slurm. A run
stopped by a preemption (the training loop wrote a checkpoint and raised `Preempted`) is submitted
again, and resumes from that checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wsdlab.common.errors import ConfigError
from wsdlab.common.io import atomic_write_text
from wsdlab.study.launch import Launch, Outcome, read_outcome, sink_flags, tail
from wsdlab.study.resources import Resources
from wsdlab.study.spec import SlurmConfig
from wsdlab.study.worker import PREEMPTED, RunFn, SinkOptions, die_with_parent, format_cpus, run_job, short_traceback
from wsdlab.train.config import RunSpec

EXECUTORS = ("local", "processes", "slurm")
SUBMITIT_CLUSTER_ENV = "WSDLAB_SUBMITIT_CLUSTER"


@dataclass(frozen=True)
class QueuedRun:
    """One run to train: `spec` into folder `path`; `key` names it on screen."""

    key: str
    spec: RunSpec
    path: Path
    kind: str = "train"  # a registered wsdlab.study.jobs kind
    alone: bool = False  # nothing else can run meanwhile: a worker may use every CPU of the executor
    resources: Resources = field(default_factory=Resources)  # its ranks (a distributed run when > 1)


@dataclass(frozen=True)
class JobResult:
    job: QueuedRun
    error: str | None = None  # None: the job returned normally
    log: Path | None = None  # where the failed job's full traceback is
    error_type: str | None = None  # class name of the job's exception ("Preempted": stopped with a checkpoint)


class Requeues:
    """Which ended runs go back to the queue: those stopped by a preemption, at most `limit` times each."""

    def __init__(self, limit: int = 1) -> None:
        self.limit = limit
        self._counts: dict[Path, int] = {}

    def take(self, result: JobResult) -> bool:
        if result.error_type != PREEMPTED or self._counts.get(result.job.path, 0) >= self.limit:
            return False
        self._counts[result.job.path] = self._counts.get(result.job.path, 0) + 1
        return True


def job_request(run: QueuedRun, study_dir: Path, log: Path) -> dict[str, Any]:
    """A worker's request for `run`: its spec written to STUDY/jobs/<run folder>.yaml, folder, name, kind, log."""
    job_file = study_dir / "jobs" / f"{run.path.name}.yaml"
    atomic_write_text(job_file, yaml.safe_dump(run.spec.model_dump(mode="json"), sort_keys=False))
    log.parent.mkdir(parents=True, exist_ok=True)
    return {"spec": str(job_file), "out": str(run.path), "name": run.key, "kind": run.kind, "log": str(log)}


class Executor(ABC):
    """Runs jobs; the runner never submits more than `free_slots()`."""

    trains_elsewhere: bool = False  # jobs run in other processes: this one is free for the study's analyses

    @abstractmethod
    def free_slots(self) -> int: ...

    @abstractmethod
    def submit(self, job: QueuedRun) -> None: ...

    @abstractmethod
    def wait(self, timeout: float) -> list[JobResult]:
        """Jobs that ended since the last call (blocks up to `timeout` s when none has)."""

    def close(self) -> None:
        """Stop jobs still running (on interrupt or error)."""


class SequentialExecutor(Executor):
    """In-process, one run at a time: `wait` trains the submitted run in the foreground (a distributed
    run under torchrun, on every CPU of this process or one GPU per rank; `run_fn`, a test stand-in for
    the training, then runs it in process as one rank)."""

    def __init__(self, run_fn: RunFn | None = None, sinks: SinkOptions = SinkOptions()) -> None:
        self.run_fn = run_fn
        self.sinks = sinks
        self._queue: deque[QueuedRun] = deque()
        self._requeues = Requeues()

    def free_slots(self) -> int:
        return 0 if self._queue else 1

    def submit(self, job: QueuedRun) -> None:
        self._queue.append(job)

    def wait(self, timeout: float) -> list[JobResult]:
        if not self._queue:
            time.sleep(min(timeout, 0.05))
            return []
        job = self._queue.popleft()
        result = self._launched(job) if job.resources.distributed and self.run_fn is None else self._in_process(job)
        if self._requeues.take(result):
            self._queue.appendleft(job)  # preempted: it resumes from the checkpoint it wrote
            return []
        return [result]

    def _in_process(self, job: QueuedRun) -> JobResult:
        try:
            run_job(job.spec.model_dump(mode="json"), job.path, job.key, self.sinks, self.run_fn, job.kind)
            return JobResult(job)
        except Exception as err:  # noqa: BLE001 - a failed run must not stop its independent siblings
            return JobResult(job, short_traceback(err), write_failure_log(job.path, err), type(err).__name__)

    def _launched(self, job: QueuedRun) -> JobResult:
        study_dir = Path(job.path).parent.parent  # STUDY/runs/<run folder>
        log = study_dir / "logs" / f"{Path(job.path).name}.log"
        problem = local_problem(job, _cuda_device_count())
        if problem is not None:
            return JobResult(job, problem)
        gpus = range(job.resources.world_size) if _cuda_device_count() else ()
        outcome = Launch(job.resources.world_size, study_dir, job_request(job, study_dir, log),
                         sorted(available_cpus()), gpus, self.sinks).wait()
        return JobResult(job, outcome.error, log if outcome.error else None, outcome.error_type)


def local_problem(run: QueuedRun, num_gpus: int) -> str | None:
    """Why a local executor cannot train `run` (several nodes, more ranks than GPUs), else None."""
    res = run.resources
    if res.nodes > 1:
        return (f"run '{run.key}' asks for {res.nodes} nodes: only --executor slurm spreads a run over nodes "
                f"(set resources.nodes: 1 to train it here)")
    if num_gpus and res.world_size > num_gpus:
        return f"run '{run.key}' asks for {res.world_size} GPUs; this machine has {num_gpus}"
    return None


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


class _Worker:
    """One long-lived `python -m wsdlab.study.worker` process bound to a slot, and the job it runs."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        with open(log, "ab") as err:
            preexec = die_with_parent if sys.platform.startswith("linux") else None
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env,
                                         preexec_fn=preexec, text=True, bufsize=1)
        self.job: QueuedRun | None = None
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

    def end(self, timeout_s: float) -> None:
        """Close its job channel (an idle worker then exits), wait up to `timeout_s`, then kill it."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(max(0.1, timeout_s))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class ProcessExecutor(Executor):
    """Up to `workers` long-lived worker processes (`python -m wsdlab.study.worker`), each pinned to a slot.

    A worker trains one run after another without restarting, so interpreter and torch start-up and
    the data loading are paid once per worker, not once per run. Job specs go to
    STUDY/jobs/<run folder>.yaml and a run's output to STUDY/logs/<run folder>.log.

    A run of N ranks takes N slots (N GPUs; on CPU at most every slot, their CPUs shared by its gloo
    ranks) and trains under its own torchrun (`launch.Launch`); the idle workers of those slots exit
    so that they hold no GPU memory. It waits in a queue until enough slots are free, and the slots it
    waits for are not counted free meanwhile.
    """

    def __init__(self, study_dir: Path, workers: int, sinks: SinkOptions = SinkOptions(),
                 num_gpus: int | None = None, python: str = sys.executable) -> None:
        if num_gpus is None:
            num_gpus = _cuda_device_count()
        self.study_dir = Path(study_dir)
        self.num_gpus = num_gpus
        self.trains_elsewhere = num_gpus == 0  # GPU runs would share their device with the analyses
        self.slots = plan_slots(workers, num_gpus=num_gpus)
        self.sinks = sinks
        self.python = python
        self._workers: dict[int, _Worker] = {}
        self._launches: dict[Launch, tuple[QueuedRun, tuple[int, ...]]] = {}  # run and the slots it holds
        self._waiting: deque[QueuedRun] = deque()  # distributed runs waiting for enough free slots
        self._ended: list[JobResult] = []  # runs that ended without training (they cannot train here)
        self._requeues = Requeues()

    def _idle(self) -> list[int]:
        """Slots with no job: neither a worker's nor a distributed run's."""
        held = {i for _, slots in self._launches.values() for i in slots}
        return [i for i in range(len(self.slots))
                if i not in held and (self._workers.get(i) is None or self._workers[i].job is None)]

    def slots_needed(self, run: QueuedRun) -> int:
        """Slots a run takes: 1, or one per rank (on CPU at most every slot)."""
        ranks = run.resources.world_size
        return ranks if self.num_gpus else min(ranks, len(self.slots))

    def free_slots(self) -> int:
        return max(0, len(self._idle()) - sum(self.slots_needed(r) for r in self._waiting))

    def _worker(self, index: int) -> _Worker:
        worker = self._workers.get(index)
        if worker is not None and worker.alive():
            return worker
        slot = self.slots[index]
        cmd = [self.python, "-m", "wsdlab.study.worker", "--study", str(self.study_dir),
               "--threads", str(slot.threads), "--cpus", format_cpus(slot.cpus), *sink_flags(self.sinks)]
        env = {**os.environ, "OMP_NUM_THREADS": str(slot.threads), "MKL_NUM_THREADS": str(slot.threads)}
        if slot.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(slot.gpu)
        worker = self._workers[index] = _Worker(cmd, env, self.study_dir / "logs" / f"worker-{index}.log")
        return worker

    def submit(self, job: QueuedRun) -> None:
        if job.resources.distributed or job.resources.nodes > 1:
            problem = local_problem(job, self.num_gpus)
            if problem is not None:
                self._ended.append(JobResult(job, problem))
                return
            self._waiting.append(job)
            self._start_waiting()
            return
        index = self._idle()[0]
        worker = self._worker(index)
        log_path = self.log_path(job)
        request = job_request(job, self.study_dir, log_path)
        worker.job, worker.job_log = job, log_path
        others = bool(self._launches) or any(w.job is not None for i, w in self._workers.items() if i != index)
        if job.alone and not others and len(self.slots) > 1 and self.slots[index].gpu is None:
            # the only run that can train now (a study's root run): every CPU of the executor, one thread each
            cpus = sorted({c for slot in self.slots for c in slot.cpus})
            request.update(cpus=format_cpus(cpus), threads=len(cpus))
        worker.send(request)

    def _claim(self, run: QueuedRun) -> tuple[int, ...] | None:
        """Free slots for a distributed run (with GPUs: one per rank, each on another GPU), or None."""
        idle, need = self._idle(), self.slots_needed(run)
        if self.num_gpus:
            by_gpu: dict[int | None, int] = {}
            for i in idle:
                by_gpu.setdefault(self.slots[i].gpu, i)
            idle = list(by_gpu.values())
        return tuple(idle[:need]) if len(idle) >= need else None

    def _start_waiting(self) -> None:
        """Start the waiting distributed runs, in order, while their slots are free."""
        while self._waiting:
            claim = self._claim(self._waiting[0])
            if claim is None:
                return
            run = self._waiting.popleft()
            for index in claim:  # an idle worker would keep its GPU memory and compete for the CPUs
                worker = self._workers.pop(index, None)
                if worker is not None:
                    worker.end(10.0)
            cpus = sorted({c for i in claim for c in self.slots[i].cpus})
            gpus = [g for i in claim if (g := self.slots[i].gpu) is not None]
            launch = Launch(run.resources.world_size, self.study_dir,
                            job_request(run, self.study_dir, self.log_path(run)), cpus, gpus, self.sinks, self.python)
            self._launches[launch] = (run, claim)

    def log_path(self, job: QueuedRun) -> Path:
        return self.study_dir / "logs" / f"{job.path.name}.log"

    def wait(self, timeout: float) -> list[JobResult]:
        ended, self._ended = self._ended, []
        busy: dict[Any, _Worker | Launch] = {w.proc.stdout: w for w in self._workers.values() if w.job is not None}
        busy.update({launch.stdout: launch for launch in self._launches})
        if not busy:
            time.sleep(0 if ended else min(timeout, 0.05))
        else:
            ready, _, _ = select.select(list(busy), [], [], 0 if ended else timeout)
            for stream in ready:
                owner = busy[stream]
                result = self._read_launch(owner) if isinstance(owner, Launch) else self._read_worker(owner)
                if result is not None:
                    ended.append(result)
        results = []
        for result in ended:
            if self._requeues.take(result):
                self.submit(result.job)  # preempted: it resumes from the checkpoint it wrote
            else:
                results.append(result)
        self._start_waiting()
        return results

    def _read_worker(self, worker: _Worker) -> JobResult | None:
        """The result of a worker's job, from its next line; None for a line that is not one (a stray print)."""
        assert worker.proc.stdout is not None and worker.job is not None
        line = worker.proc.stdout.readline()
        outcome = read_outcome(line) if line else None
        if line and outcome is None:
            return None
        job, worker.job = worker.job, None
        log = self.log_path(job)
        if outcome is None:  # the worker died in the middle of the job
            worker.proc.wait()
            text = tail(log)
            last = next((x for x in reversed(text.splitlines()) if x.strip()), "")
            outcome = Outcome(f"worker exited with code {worker.proc.returncode}: {last.strip()} "
                              f"(log: {log})\nlast lines of the log:\n{text}")
        return self._result(job, outcome)

    def _read_launch(self, launch: Launch) -> JobResult | None:
        outcome = launch.read()
        if outcome is None:
            return None
        run, _ = self._launches.pop(launch)
        return self._result(run, outcome)

    def _result(self, job: QueuedRun, outcome: Outcome) -> JobResult:
        error = outcome.error
        if error is not None and "(log: " not in error:
            error = f"{error}\n(log: {self.log_path(job)})"
        return JobResult(job, error, self.log_path(job) if error else None, outcome.error_type)

    def close(self) -> None:
        for worker in self._workers.values():
            worker.stop()
        for launch in self._launches:
            launch.stop()
        deadline = time.monotonic() + 10
        for worker in self._workers.values():
            worker.end(deadline - time.monotonic())
        self._workers.clear()
        self._launches.clear()
        self._waiting.clear()


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


def submitit_cluster(cluster: str | None) -> str:
    """Where submitit sends jobs: `cluster` or $WSDLAB_SUBMITIT_CLUSTER when given (tests use 'local', submitit's
    local processes, or 'debug', in process), else Slurm, which needs `sbatch` on PATH: without it a ConfigError
    (submitit alone would quietly run every job on this machine)."""
    cluster = cluster or os.environ.get(SUBMITIT_CLUSTER_ENV) or None
    if cluster is not None:
        return cluster
    if shutil.which("sbatch") is None:
        raise ConfigError("--executor slurm: Slurm is not available here (no `sbatch` on PATH); "
                          "use --executor local to train on this machine")
    return "slurm"


class SlurmExecutor(Executor):
    """One submitit job per run (Slurm, or submitit's 'local'/'debug' cluster for testing).

    A run of N ranks on M nodes is one job of M nodes x N/M tasks, every task one rank (`slurm_task`,
    with one GPU each where the study's `slurm.gpus_per_node` asks for GPUs). Jobs are requeued on their
    time limit (Slurm signals `slurm.signal_delay_s` before it) and on preemption, and resume from the
    run's checkpoint; the cluster comes from `submitit_cluster`.
    """

    def __init__(self, study_dir: Path, config: SlurmConfig, sinks: SinkOptions = SinkOptions(),
                 cluster: str | None = None, max_jobs: int = 256, run_fn: RunFn | None = None) -> None:
        submitit = import_submitit()
        cluster = submitit_cluster(cluster)
        self.executor = submitit.AutoExecutor(folder=str(Path(study_dir) / "slurm" / "%j"), cluster=cluster,
                                              slurm_max_num_timeout=config.max_timeouts)
        self.config = config
        self.sinks = sinks
        self.max_jobs = max_jobs
        self.run_fn = run_fn  # None: the stage's job kind (a test passes a stand-in)
        self._jobs: list[tuple[QueuedRun, Any]] = []

    def parameters(self, resources: Resources) -> dict[str, Any]:
        """submitit's parameters for a job of `resources` (the slurm_* ones only on Slurm)."""
        config = self.config
        gpus = max(config.gpus_per_node, resources.ranks_per_node) if config.gpus_per_node else 0
        params: dict[str, Any] = {"timeout_min": config.timeout_min, "cpus_per_task": config.cpus_per_task,
                                  "gpus_per_node": gpus, "tasks_per_node": resources.ranks_per_node,
                                  "nodes": resources.nodes, "slurm_signal_delay_s": config.signal_delay_s}
        if config.mem_gb is not None:
            params["mem_gb"] = config.mem_gb
        if config.partition is not None:
            params["slurm_partition"] = config.partition
        params.update(config.additional)
        if self.executor.cluster != "slurm":
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        return params

    def free_slots(self) -> int:
        return self.max_jobs - len(self._jobs)

    def submit(self, job: QueuedRun) -> None:
        from wsdlab.study.slurm_task import SlurmRun

        self.executor.update_parameters(**self.parameters(job.resources))
        handle = self.executor.submit(SlurmRun(), job.spec.model_dump(mode="json"), str(job.path), job.key,
                                      self.sinks, self.run_fn, job.kind)
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
                handle.results()  # every task's (rank 0's is the run's)
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
