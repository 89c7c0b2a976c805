"""What one executor slot does: run jobs of a study (in this process, a long-lived worker process, or a
Slurm job) through the library, never through the command line.

`python -m wsdlab.study.worker --study DIR --threads 2 --cpus 0,1` is a long-lived worker: it pins
itself to its CPUs once, then reads one job per line (JSON: spec file, run folder, name, kind, log
file) from stdin, runs it with stdout/stderr sent to the job's log, and answers one JSON line
(`{"error": null, "type": null}`, or the error text and its exception's class name) on its result
channel. Staying alive across runs saves the interpreter and torch start-up and keeps the data loaded
(`wsdlab.data.load_data` memoizes in process).

With `--job '<request JSON>'` it runs that one job and exits: the form a distributed run takes under
torchrun (`python -m torch.distributed.run --nproc_per_node N --standalone -m wsdlab.study.worker
--job ...`), where every rank runs the job and rank 0 alone answers on the result channel.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsdlab.train.config import RunSpec

RunFn = Callable[..., Any]  # train(spec, out, *, sinks=...): a stand-in for tests
PREEMPTED = "Preempted"  # class name of wsdlab.train.preempt.Preempted (checkpoint written, stopped), matched by name


@dataclass(frozen=True)
class SinkOptions:
    """Extra metric sinks for every run: TensorBoard files under RUN/tensorboard, W&B project."""

    tensorboard: bool = False
    wandb_project: str | None = None


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


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGKILL this process when its parent dies, so a killed study (or torchrun) leaves no orphan
    training into a run folder that the next `study run` resumes."""
    import ctypes
    import signal

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


def pin_threads(threads: int | None, cpus: Sequence[int] | None) -> None:
    """Limit this process to `cpus` (Linux affinity) and `threads` torch threads."""
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))
    if threads:
        import torch

        torch.set_num_threads(threads)


def run_job(spec_data: dict[str, Any], out: str | Path, name: str, options: SinkOptions = SinkOptions(),
            run_fn: RunFn | None = None, kind: str = "train") -> str:
    """Run one job to completion (resuming what its folder holds); returns the run folder."""
    from wsdlab.study.jobs import get_job

    spec = RunSpec.model_validate(spec_data)
    out = Path(out)
    sinks = make_sinks(options, out, name, spec)
    try:
        if run_fn is not None:
            run_fn(spec, out, sinks=sinks)
        else:
            get_job(kind).run(spec, out, sinks)
    finally:
        for sink in sinks:
            sink.close()
    return str(out)


def announce_rank(name: str) -> None:
    """Under several ranks, print which one this process is (the run's log then shows every rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        print(f"[wsdlab] {name}: rank {os.environ.get('RANK', '0')} of {world}", flush=True)


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


def short_traceback(err: BaseException) -> str:
    """The error on the first line, then the innermost frames of its traceback."""
    head = "".join(traceback.format_exception_only(type(err), err)).strip()
    frames = "".join(traceback.format_tb(err.__traceback__)[-3:]).rstrip()
    return f"{head}\n{frames}"


def _serve(requests: Any, results: Any, options: SinkOptions, threads: int | None = None,
           cpus: Sequence[int] | None = None) -> int:
    """Run each job request line; stdout/stderr go to the job's log while it runs. Returns how many failed
    (a preempted job stopped cleanly: it is not counted).

    A request may widen this worker for its one job (`cpus`, `threads`: the only run that can train
    now gets every core); the worker's own pinning (`threads`, `cpus`) is restored after the job.
    """
    failed = 0
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        wide = request.get("threads")
        if wide:
            pin_threads(int(wide), parse_cpus(request.get("cpus")))
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        error = error_type = None
        try:
            import yaml

            spec_data = yaml.safe_load(Path(request["spec"]).read_text())
            announce_rank(request["name"])
            run_job(spec_data, request["out"], request["name"], options, kind=request.get("kind", "train"))
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: BLE001 - report every failure of a job, keep serving
            error, error_type = short_traceback(err), type(err).__name__
            traceback.print_exc()  # the whole traceback goes to the job's log; the study prints one line
        if wide:
            pin_threads(threads or 1, cpus)
        sys.stdout.flush()
        sys.stderr.flush()
        results.write(json.dumps({"error": error, "type": error_type}) + "\n")
        results.flush()
        failed += error is not None and error_type != PREEMPTED
    return failed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wsdlab.study.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="Study folder (names the worker in process lists).")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cpus", default=None)
    parser.add_argument("--tensorboard", action="store_true")
    parser.add_argument("--wandb", default=None)
    parser.add_argument("--job", default=None, help="Run this one job request (JSON) and exit (under torchrun).")
    args = parser.parse_args(argv)
    from wsdlab.common.allocator import tune_malloc

    tune_malloc()
    if args.job is not None and sys.platform.startswith("linux"):
        die_with_parent()  # a rank ends with its torchrun
    cpus = parse_cpus(args.cpus)
    pin_threads(args.threads, cpus)
    requests = sys.stdin if args.job is None else [args.job]
    # the result channel: this process's stdout as started; under torchrun only rank 0 answers
    results = os.fdopen(os.dup(1), "w") if int(os.environ.get("RANK", "0")) == 0 else open(os.devnull, "w")
    try:
        failed = _serve(requests, results, SinkOptions(args.tensorboard, args.wandb), args.threads, cpus)
    except KeyboardInterrupt:
        sys.exit(130)
    if args.job is not None and failed:
        sys.exit(1)  # a failed rank ends with an error, so torchrun stops the others instead of leaving them waiting
    # (a preempted rank ends normally: torchrun then waits for rank 0's answer instead of killing it)


if __name__ == "__main__":
    main()
