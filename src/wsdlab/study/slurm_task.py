"""What each task of a study's Slurm job runs (through submitit): one rank of one run.

A run of N ranks is one job of N tasks; each task takes its place in the run's process group from
submitit's `JobEnvironment` (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, read by
`wsdlab.train.distributed.init_distributed`), then trains.

Requeue (submitit's checkpoint mechanism): Slurm signals the job `signal_delay_s` before its time
limit with submitit's signal (USR2). While the run trains, that signal is handed to the training
loop's own SIGUSR1 handler, which writes a checkpoint and raises `Preempted` (matched by class name);
on SIGTERM (a preemption) the loop does the same. Rank 0 then lets submitit's handler requeue the job:
it calls `checkpoint()`, which returns the same call again, and the rerun resumes from the checkpoint
just written. A signal outside training (no loop handler) goes to submitit's handler at once, and the
rerun resumes from the latest periodic checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import Checkpointable

from wsdlab.study.worker import PREEMPTED, RunFn, SinkOptions, announce_rank, run_job

LOOP_SIGNAL = signal.SIGUSR1  # the training loop's "checkpoint and stop" signal


def distributed_env(env: Any) -> dict[str, str]:
    """torch.distributed's environment for this task of a multi-task submitit job (`env`: JobEnvironment).

    The rendezvous is rank 0's node; its port is derived from the job id, so two jobs sharing a node
    (each with its own id) do not collide.
    """
    digits = re.sub(r"\D", "", str(env.job_id)) or "0"
    addr = "127.0.0.1" if env.num_nodes == 1 else env.hostnames[0]
    return {"RANK": str(env.global_rank), "WORLD_SIZE": str(env.num_tasks), "LOCAL_RANK": str(env.local_rank),
            "LOCAL_WORLD_SIZE": str(env.num_tasks // max(1, env.num_nodes)), "MASTER_ADDR": addr,
            "MASTER_PORT": str(20000 + int(digits) % 20000)}


def _usr_sig() -> signal.Signals:
    return signal.Signals[f"SIG{submitit.JobEnvironment.USR_SIG}"]


@contextlib.contextmanager
def loop_gets_the_signal() -> Iterator[Any]:
    """While the body runs, submitit's signal goes to the training loop's handler when there is one.

    Yields submitit's own handler (None when submitit installed none: its 'debug' cluster runs in
    this process); it is restored afterwards.
    """
    sig = _usr_sig()
    submitit_handler = signal.getsignal(sig)
    if not callable(submitit_handler):
        yield None
        return

    def forward(signum: int, frame: Any) -> None:
        loop_handler = signal.getsignal(LOOP_SIGNAL)
        if callable(loop_handler):
            loop_handler(LOOP_SIGNAL, frame)  # checkpoint at the end of this step, then Preempted
        else:
            submitit_handler(signum, frame)  # not training now: requeue at once

    signal.signal(sig, forward)
    try:
        yield submitit_handler
    finally:
        signal.signal(sig, submitit_handler)


class SlurmRun(Checkpointable):
    """The callable submitit runs in each task; `checkpoint` (inherited) resubmits the same call."""

    def __call__(self, spec_data: Mapping[str, Any], out: str | Path, name: str, sinks: SinkOptions = SinkOptions(),
                 run_fn: RunFn | None = None, kind: str = "train") -> str:
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            os.environ.update(distributed_env(env))
            announce_rank(name)
        with loop_gets_the_signal() as submitit_handler:
            try:
                return run_job(dict(spec_data), out, name, sinks, run_fn, kind)
            except Exception as err:
                if type(err).__name__ == PREEMPTED and submitit_handler is not None:
                    # rank 0: checkpoint() -> requeue -> exit; the other ranks return here and fail
                    # (the requeue restarts every task)
                    submitit_handler(_usr_sig(), None)
                raise
