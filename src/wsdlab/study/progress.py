"""The study's live display: how many runs are done, running and left, and each running run's step.

Running runs are followed by reading the tail of their metrics.jsonl at each refresh, so the same
display works for in-process, subprocess and Slurm runs. On a non-terminal (CI, pipes) it prints
one line per event instead.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
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


@dataclass
class _Running:
    key: str
    path: Path
    start_step: int
    end_step: int
    since: float = field(default_factory=time.monotonic)


class StudyProgress:
    """Counts of runs by state plus one bar per running run; use as a context manager."""

    def __init__(self, name: str, total: int, console: Console | None = None, live: bool | None = None) -> None:
        self.name = name
        self.total = total
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
        self._line(f"[dim]complete[/] {key}")

    def started(self, key: str, path: Path, start_step: int, end_step: int) -> None:
        with self._lock:
            self._running[key] = _Running(key, path, start_step, end_step)
        self._line(f"[cyan]start[/] {key} (steps {start_step}..{end_step})")

    def finished(self, key: str, error: str | None, log: Path | None = None) -> None:
        """A run ended; a failure is one line (the error's first), and where its full traceback is."""
        with self._lock:
            run = self._running.pop(key, None)
            self.counts["failed" if error else "done"] += 1
        took = f" in {time.monotonic() - run.since:.1f} s" if run else ""
        if error:
            first = error.strip().splitlines()[0] if error.strip() else "failed"
            where = f" (log: {log})" if log is not None else ""
            self.console.print(f"[bold red]failed[/] {escape(key)}{took}: {escape(first)}{escape(where)}",
                               highlight=False)
        else:
            self._line(f"[green]done[/] {key}{took}")

    def blocked(self, key: str, reason: str) -> None:
        with self._lock:
            self.counts["blocked"] += 1
        self._line(f"[yellow]not run[/] {key}: {reason}")

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def _line(self, text: str) -> None:
        if not self.live_enabled:
            n = sum(self.counts.values())
            self.console.print(f"[{n}/{self.total}] {text}", highlight=False)

    # rendering ------------------------------------------------------------------------------
    def summary(self) -> str:
        c = self.counts
        finished = c["done"] + c["skipped"]
        left = self.total - finished - c["failed"] - c["blocked"] - len(self._running)
        parts = [f"{finished} done ({c['skipped']} already complete)", f"{len(self._running)} running", f"{left} left"]
        if c["failed"] or c["blocked"]:
            parts.append(f"{c['failed']} failed, {c['blocked']} not run")
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
