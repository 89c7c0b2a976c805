"""Reading a run's metrics.jsonl while another process writes it (the kill and preemption tests)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path


def last_step(out: Path) -> int:
    """The step of the last complete row of OUT/metrics.jsonl, -1 when there is none yet."""
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    try:
        return json.loads(lines[-1])["step"] if lines else -1
    except json.JSONDecodeError:
        return -1


def rows(out: Path) -> list[dict]:
    """Every row of OUT/metrics.jsonl without its wall-clock speed (the rest must match bit for bit)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


def wait_past(proc: subprocess.Popen, out: Path, step: int, seconds: float = 240) -> None:
    """Poll until the run writing OUT has logged `step`; fail with its stderr if it ends first."""
    deadline = time.monotonic() + seconds
    while last_step(out) < step:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, f"the run did not get past step {step}"
        time.sleep(0.01)
