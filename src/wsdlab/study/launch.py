"""Distributed runs on this machine: one torchrun per run, whose N ranks each run the same job request.

`python -m torch.distributed.run --standalone --nproc_per_node N -m wsdlab.study.worker --job '<request>'`
(gloo ranks on CPU, one GPU per rank with CUDA); rank 0 answers the job's one result line (JSON
`{"error", "type"}`) on torchrun's stdout, as a long-lived worker does, and every rank writes to the
run's log. `--standalone` picks a free rendezvous port, so several runs can train side by side.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from wsdlab.study.worker import SinkOptions, die_with_parent, format_cpus


@dataclass(frozen=True)
class Outcome:
    """How a job ended: its error text (None: returned normally) and the exception's class name."""

    error: str | None
    error_type: str | None = None


def read_outcome(line: str) -> Outcome | None:
    """The result a worker answered on `line`; None when the line is something else (a stray print)."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or "error" not in data:
        return None
    return Outcome(data["error"], data.get("type"))


def sink_flags(sinks: SinkOptions) -> list[str]:
    """The worker's command-line flags for `sinks`."""
    flags = ["--tensorboard"] if sinks.tensorboard else []
    return flags + (["--wandb", sinks.wandb_project] if sinks.wandb_project else [])


def torchrun_command(python: str, ranks: int, study_dir: Path, request: dict[str, Any], threads: int,
                     cpus: Sequence[int], sinks: SinkOptions = SinkOptions()) -> list[str]:
    """The command that trains one job request with `ranks` processes of `threads` threads each."""
    return [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
            "-m", "wsdlab.study.worker", "--study", str(study_dir), "--threads", str(threads),
            "--cpus", format_cpus(cpus), "--job", json.dumps(request), *sink_flags(sinks)]


class Launch:
    """One distributed run in flight: torchrun with its ranks, its log, and where it stands."""

    def __init__(self, ranks: int, study_dir: Path, request: dict[str, Any], cpus: Sequence[int],
                 gpus: Sequence[int] = (), sinks: SinkOptions = SinkOptions(), python: str = sys.executable) -> None:
        threads = max(1, len(cpus) // ranks)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        self.log = Path(request["log"])
        self.log.parent.mkdir(parents=True, exist_ok=True)
        cmd = torchrun_command(python, ranks, study_dir, request, threads, cpus, sinks)
        with open(self.log, "ab") as err:
            preexec = die_with_parent if sys.platform.startswith("linux") else None
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env,
                                         preexec_fn=preexec, text=True, bufsize=1)

    @property
    def stdout(self) -> IO[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def read(self, exit_wait_s: float = 60.0) -> Outcome | None:
        """Read one line (blocks until there is one): None while the run goes on, else its outcome once
        torchrun has exited (every rank is done, so its slots are free)."""
        line = self.stdout.readline()
        outcome = read_outcome(line) if line else None
        if line and outcome is None:
            return None
        try:
            code = self.proc.wait(exit_wait_s)
        except subprocess.TimeoutExpired:  # rank 0 answered but another rank hangs
            self.proc.kill()
            code = self.proc.wait()
        self.stdout.close()
        if outcome is None:  # no answer: torchrun or rank 0 died
            return Outcome(f"torchrun exited with code {code} before rank 0 answered (log: {self.log})\n"
                           f"last lines of the log:\n{tail(self.log)}")
        if outcome.error is None and code != 0:
            return Outcome(f"torchrun exited with code {code} after rank 0 finished (log: {self.log})")
        return outcome

    def wait(self) -> Outcome:
        """Block until the run ends."""
        while (outcome := self.read()) is None:
            pass
        return outcome

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGINT torchrun (it stops its ranks), then kill it after `timeout_s`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            self.stdout.close()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
