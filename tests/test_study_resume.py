"""Kill a running study (SIGKILL of the study process, workers included) and re-run it: nothing finished
is redone or lost, and the study completes. Real training of the quick study, tiny."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def complete_runs(study: Path) -> list[Path]:
    runs = study / "runs"
    return sorted(p for p in runs.iterdir() if (p / "COMPLETE").is_file()) if runs.is_dir() else []


def partial_runs(study: Path) -> list[Path]:
    runs = study / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir() and not (p / "COMPLETE").is_file()) if runs.is_dir() else []


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line holds `text` (to check no worker outlived the killed study)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def snapshot(run_dirs: list[Path]) -> dict[Path, int]:
    return {p: os.stat(p).st_mtime_ns for d in run_dirs for p in d.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")
def test_kill_and_rerun_finishes_without_redoing(tmp_path: Path) -> None:
    study = tmp_path / "study"
    cmd = [sys.executable, "-m", "wsdlab", "study", "run", "--quick", "--out", str(study)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*cmd, "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if len(complete_runs(study)) >= 3 and partial_runs(study):
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the study ended before it could be killed:\n{proc.stderr.read().decode()[-3000:]}"
        proc.send_signal(signal.SIGKILL)  # the study process only: its workers must die with it
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = complete_runs(study)
    assert len(done) >= 3 and partial_runs(study)
    time.sleep(0.5)
    orphans = processes_mentioning(str(study))
    for pid in orphans:  # clean up before failing
        os.kill(pid, signal.SIGKILL)
    assert not orphans, "worker processes outlived the killed study"
    before = snapshot(done)

    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert snapshot(done) == before  # finished runs untouched
    assert all(d in complete_runs(study) for d in done)
    assert not partial_runs(study)
    assert (study / "report.html").is_file() and (study / "tables" / "bias_variance.csv").is_file()
