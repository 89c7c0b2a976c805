"""Stopping a time-limited run cleanly: wall-clock checkpoints and a checkpoint on SIGUSR1 / SIGTERM.

Slurm sends a signal before a job's time limit (`--signal`, submitit's `slurm_signal_delay_s`: SIGUSR1)
and on preemption (SIGTERM). `StopSignals` turns either into a flag the loop reads after each step: it
finishes the step, writes a checkpoint at it and raises `Preempted`; rerunning the same command
resumes from that checkpoint. `CheckpointTimer` asks for a checkpoint once `minutes` of wall-clock time
passed since the last one (or the start), so a job killed without warning still loses little.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from wsdlab.common.errors import WsdlabError

EX_TEMPFAIL = 75  # sysexits.h: a temporary failure; the caller is invited to retry
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preempted(WsdlabError):
    """The run stopped on a signal after writing a checkpoint at `step` (rerun to resume from it)."""

    exit_code = EX_TEMPFAIL

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"preempted at step {step}: checkpoint written, rerun the same command to resume")
        self.step, self.checkpoint = step, Path(checkpoint)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (a study worker may send it between processes)
        return (type(self), (self.step, self.checkpoint))


class StopSignals:
    """While entered, SIGUSR1 and SIGTERM set `requested` (the signal number) instead of ending the process.

    Handlers are installed only in the main thread (Python allows no other) and the previous ones are
    put back on exit; elsewhere this is a no-op and `requested` stays None.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


class CheckpointTimer:
    """`due()` is true once `minutes` passed on `clock` (seconds) since `restart()` or construction;
    never with `minutes` None. `clock` is injectable so tests need no sleeping."""

    def __init__(self, minutes: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = None if minutes is None else 60.0 * minutes
        self.clock = clock
        self.last = clock() if self.seconds is not None else 0.0

    def due(self) -> bool:
        return self.seconds is not None and self.clock() - self.last >= self.seconds

    def restart(self) -> None:
        """Start the next interval now (call after every checkpoint, whatever asked for it)."""
        if self.seconds is not None:
            self.last = self.clock()
