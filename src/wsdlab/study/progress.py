"""The study's live display: how many runs are done, running and left, each running run's step, and
the time left.

Running runs are followed by reading the tail of their metrics.jsonl at each refresh, so the same
display works for in-process, subprocess and Slurm runs. On a non-terminal (CI, pipes) it prints
one line per event instead.

The time left is measured, not guessed: the FLOPs per second of the runs trained so far (their planned
FLOPs over their wall time, queueing and evaluation included) applied to the planned FLOPs of the runs
left (`time_left`). Runs skipped as already complete, and failed runs, tell nothing about the speed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from wsdlab.train.layout import METRICS


def last_train_row(path: Path, max_bytes: int = 16384) -> dict | None:
    """The last complete train row (no "split" key) of RUN/metrics.jsonl, reading only its tail."""
    metrics = path / METRICS
    try:
        with open(metrics, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a half-written last line, or a cut first line
        if isinstance(row, dict) and "split" not in row and "step" in row:
            return row
    return None


def time_left(done: Sequence[tuple[float, float]], remaining_flops: float, parallel: int = 1) -> float | None:
    """Seconds to train `remaining_flops` at the speed of the finished runs `done` ((FLOPs, wall seconds)
    each): their total FLOPs over their total seconds, so a long run weighs more than a short one, times
    `parallel` runs training side by side (each measured at its speed beside the others). None before any
    run finished (or while the finished ones did no measurable work)."""
    flops = sum(f for f, _ in done)
    seconds = sum(s for _, s in done)
    if flops <= 0 or seconds <= 0:
        return None
    return max(0.0, remaining_flops) * seconds / flops / max(1, parallel)


def format_left(seconds: float) -> str:
    """A rounded duration for the estimate: `~7 s`, `~40 s`, `~3 min`, `~2 h 05 min` (no more precise than it is)."""
    if seconds < 10:
        return f"~{max(1, round(seconds))} s"
    if seconds < 55:
        return f"~{round(seconds / 10) * 10} s"
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return f"~{minutes} min"
    return f"~{minutes // 60} h {minutes % 60:02d} min"


@dataclass
class _Running:
    key: str
    path: Path
    start_step: int
    end_step: int
    first_step: int  # where it (re)starts training: a partial run resumes after its last logged step
    since: float  # time.monotonic() when it started

    def share_done(self, step: int) -> float:
        """The share of this run's planned steps (start_step..end_step) that lie before `step`."""
        return min(1.0, max(0.0, (step - self.start_step) / max(1, self.end_step - self.start_step)))


class StudyProgress:
    """Counts of runs by state, one bar per running run and the time left; use as a context manager.

    `costs` (run key -> planned training FLOPs of its own steps) gives the time left; the runner sets it
    (with `total`) once the plan is expanded. Without it no estimate is shown."""

    def __init__(self, name: str, total: int, console: Console | None = None, live: bool | None = None,
                 costs: Mapping[str, float] | None = None) -> None:
        self.name = name
        self.total = total
        self.costs: Mapping[str, float] = dict(costs or {})
        self._ended: set[str] = set()  # done, skipped, failed or not run
        self._measured: list[tuple[float, float]] = []  # (FLOPs, wall seconds) of each run trained here
        self._most_running = 0
        self.console = console or Console(stderr=True)
        self.live_enabled = self.console.is_terminal if live is None else live
        self.counts = {"done": 0, "skipped": 0, "failed": 0, "blocked": 0}
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._live: Live | None = None

    def __enter__(self) -> "StudyProgress":
        if self.live_enabled:
            self._live = Live(get_renderable=self.render, console=self.console, refresh_per_second=2, transient=False)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    # events ---------------------------------------------------------------------------------
    def skipped(self, key: str) -> None:
        with self._lock:
            self.counts["skipped"] += 1
            self._ended.add(key)
        self._line(f"[dim]complete[/] {key}")

    def started(self, key: str, path: Path, start_step: int, end_step: int) -> None:
        row = last_train_row(path)  # a partial run resumes: only its steps after this one are timed
        first = max(start_step, min(end_step, int(row["step"]))) if row else start_step
        with self._lock:
            self._running[key] = _Running(key, path, start_step, end_step, first, time.monotonic())
            self._most_running = max(self._most_running, len(self._running))
        self._line(f"[cyan]start[/] {key} (steps {start_step}..{end_step})")

    def finished(self, key: str, error: str | None, log: Path | None = None) -> None:
        """A run ended; a failure is one line (the error's first), and where its full traceback is."""
        with self._lock:
            run = self._running.pop(key, None)
            self.counts["failed" if error else "done"] += 1
            self._ended.add(key)
            seconds = time.monotonic() - run.since if run is not None else 0.0
            if run is not None and not error:
                trained = self.costs.get(key, 0.0) * (1.0 - run.share_done(run.first_step))
                self._measured.append((trained, seconds))
        took = f" in {seconds:.1f} s" if run else ""
        if error:
            first = error.strip().splitlines()[0] if error.strip() else "failed"
            where = f" (log: {log})" if log is not None else ""
            self.console.print(f"[bold red]failed[/] {escape(key)}{took}: {escape(first)}{escape(where)}",
                               highlight=False)
        else:
            left = self.estimate()
            self._line(f"[green]done[/] {key}{took}" + (f" · {format_left(left)} left" if left is not None else ""))

    def blocked(self, key: str, reason: str) -> None:
        with self._lock:
            self.counts["blocked"] += 1
            self._ended.add(key)
        self._line(f"[yellow]not run[/] {key}: {reason}")

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def _line(self, text: str) -> None:
        if not self.live_enabled:
            n = sum(self.counts.values())
            self.console.print(f"[{n}/{self.total}] {text}", highlight=False)

    # the estimate ---------------------------------------------------------------------------
    def remaining_flops(self) -> float:
        """Planned FLOPs of the runs not ended; a running run's by the share of its steps still to train."""
        with self._lock:
            left = {k: c for k, c in self.costs.items() if k not in self._ended}
            running = [r for r in self._running.values() if r.key in left]
        for run in running:
            row = last_train_row(run.path)
            if row is not None:
                left[run.key] *= 1.0 - run.share_done(int(row["step"]))
        return sum(left.values())

    def estimate(self) -> float | None:
        """Seconds left (`time_left`) with as many runs side by side as ever ran at once here, at most the
        runs left; None before a run finished, or once nothing is left."""
        remaining = self.remaining_flops()
        with self._lock:
            runs_left = sum(1 for k in self.costs if k not in self._ended)
            measured, parallel = list(self._measured), min(self._most_running, runs_left)
        if runs_left == 0 or remaining <= 0:
            return None
        return time_left(measured, remaining, parallel)

    # rendering ------------------------------------------------------------------------------
    def summary(self) -> str:
        c = self.counts
        finished = c["done"] + c["skipped"]
        left = self.total - finished - c["failed"] - c["blocked"] - len(self._running)
        parts = [f"{finished} done ({c['skipped']} already complete)", f"{len(self._running)} running", f"{left} left"]
        if c["failed"] or c["blocked"]:
            parts.append(f"{c['failed']} failed, {c['blocked']} not run")
        left_s = self.estimate()
        if left_s is not None:
            parts.append(f"{format_left(left_s)} left")
        return f"study {self.name}: " + " · ".join(parts)

    def render(self) -> RenderableType:
        with self._lock:
            running = list(self._running.values())
            finished = self.counts["done"] + self.counts["skipped"]
        overall = ProgressBar(total=max(1, self.total), completed=finished, width=40)
        table = Table.grid(padding=(0, 2))
        for run in running:
            row = last_train_row(run.path)
            step = int(row["step"]) if row else run.start_step
            span = max(1, run.end_step - run.start_step)
            loss = f"loss {row['loss']:.4f}" if row and isinstance(row.get("loss"), (int, float)) else ""
            table.add_row(Text(run.key, style="cyan"),
                          ProgressBar(total=span, completed=min(span, max(0, step - run.start_step)), width=30),
                          Text(f"step {step}/{run.end_step}"), Text(loss),
                          Text(f"{time.monotonic() - run.since:.0f} s", style="dim"))
        return Group(Text(self.summary(), style="bold"), overall, table)
