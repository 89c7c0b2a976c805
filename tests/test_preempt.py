"""Time-limited jobs: wall-clock checkpoints (fake clock) and SIGUSR1 -> checkpoint, exit 75, bit-exact resume."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from run_logs import last_step, rows, wait_past

from wsdlab.train import MetricsSink, RunSpec, run_preset, train
from wsdlab.train.checkpoint import list_checkpoints
from wsdlab.train.preempt import EX_TEMPFAIL, CheckpointTimer, Preempted, StopSignals
from wsdlab.train.spec_io import write_spec


def _spec(**train: object) -> RunSpec:
    data = run_preset("micro").model_dump()
    data["train"].update({"checkpoint_every": None, "snapshot_every": None, "progress": False, "device": "cpu", **train})
    return RunSpec.model_validate(data)


def test_timer_is_due_once_the_interval_passed_since_the_last_restart() -> None:
    now = [100.0]
    timer = CheckpointTimer(2.0, clock=lambda: now[0])  # 120 s
    now[0] = 219.9
    assert timer.due() is False
    now[0] = 220.0
    assert timer.due() is True
    timer.restart()  # a checkpoint was written at 220
    now[0] = 339.0
    assert timer.due() is False
    now[0] = 340.0
    assert timer.due() is True
    assert CheckpointTimer(None, clock=lambda: 1e9).due() is False


class _FakeMinutes(MetricsSink):
    """Drives the fake clock: the clock reads `step` minutes once the row of `step` is logged; records
    which checkpoints were on disk at each row."""

    def __init__(self, now: list[float], run: Path) -> None:
        self.now, self.run, self.seen = now, run, set()

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.now[0] = 60.0 * step
        self.seen |= set(list_checkpoints(self.run)) if self.run.is_dir() else set()


def test_checkpoint_every_minutes_uses_the_injected_clock(tmp_path: Path) -> None:
    now = [0.0]
    spec = _spec(steps=10, eval_every=100, checkpoint_every_minutes=2.5)
    sink = _FakeMinutes(now, tmp_path / "run")
    run = train(spec, tmp_path / "run", sinks=[sink], clock=lambda: now[0])
    # step t decides after its update and before its row: the clock reads t-1 minutes. Step 0's
    # checkpoint ends at 0; step 4 reads 3 >= 2.5 (checkpoint ends at 4); step 8 reads 7 >= 4 + 2.5; 10 is the end
    assert sorted(sink.seen) == [0, 4, 8]
    assert sorted(list_checkpoints(run.path)) == [0, 10]  # each wall-clock one went once a newer one was written


def test_stop_signals_restore_the_previous_handlers() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.01)  # let the interpreter run the handler
        assert signals.requested == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is before


def test_stop_signals_outside_the_main_thread_install_nothing() -> None:
    before, found = signal.getsignal(signal.SIGTERM), []

    def inside() -> None:
        with StopSignals() as signals:
            found.append((signal.getsignal(signal.SIGTERM), signals.requested))

    worker = threading.Thread(target=inside)
    worker.start()
    worker.join()
    assert found == [(before, None)]


def test_preempted_names_the_step_and_exits_75() -> None:
    err = Preempted(7, Path("run/checkpoints/7"))
    assert (err.step, err.checkpoint, err.exit_code) == (7, Path("run/checkpoints/7"), EX_TEMPFAIL)
    assert str(err) == "preempted at step 7: checkpoint written, rerun the same command to resume"
    again = pickle.loads(pickle.dumps(err))  # (a worker process or submitit sends it back pickled)
    assert (type(again), again.step, again.checkpoint, str(again)) == (Preempted, 7, err.checkpoint, str(err))


def test_the_cli_prints_the_preempted_line_alone_and_exits_75(capsys: pytest.CaptureFixture[str]) -> None:
    from wsdlab.cli.errors import report  # `wsdlab train` and `wsdlab cooldown` both end through it

    assert report(Preempted(12, Path("r/checkpoints/12"))) == 75
    assert capsys.readouterr().err == "preempted at step 12: checkpoint written, rerun the same command to resume\n"


# ------------------------------------------------------------------------- the CLI in a subprocess


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _cmd(spec: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "wsdlab", "train", "--config", str(spec), "--out", str(out)]


def test_sigusr1_checkpoints_exits_75_and_the_rerun_is_bit_identical(tmp_path: Path) -> None:
    # eval every step (8 val batches) only slows the steps down so the signal lands mid-run
    spec_path = tmp_path / "spec.yaml"
    write_spec(_spec(steps=60, eval_every=1, eval_batches=8, checkpoint_every=20), spec_path)

    reference = tmp_path / "reference"
    done = subprocess.run(_cmd(spec_path, reference), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "preempted"
    proc = subprocess.Popen(_cmd(spec_path, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_past(proc, out, 3)
        os.kill(proc.pid, signal.SIGUSR1)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EX_TEMPFAIL, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("preempted at step ") and line.endswith(": checkpoint written, rerun the same command to resume")
    stop = int(line.removeprefix("preempted at step ").split(":")[0])
    assert 3 <= stop < 60
    assert sorted(list_checkpoints(out)) == sorted({0, stop} | {s for s in (20, 40) if s < stop})
    assert last_step(out) == stop and not (out / "COMPLETE").exists()

    rerun = subprocess.run(_cmd(spec_path, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    final, expected = load_file(out / "checkpoints/60/model.safetensors"), load_file(reference / "checkpoints/60/model.safetensors")
    assert final.keys() == expected.keys()
    assert all(final[k].equal(expected[k]) for k in expected)  # bit for bit
    assert rows(out) == rows(reference)
    assert sorted(list_checkpoints(out)) == [0, 20, 40, 60]  # the stop's checkpoint went once 20/40/60 was written


def test_a_signal_stops_after_the_next_step_but_never_after_the_last(tmp_path: Path) -> None:
    class SignalAt(MetricsSink):  # sends SIGUSR1 to this process while step `at` is logged
        def __init__(self, at: int) -> None:
            self.at = at

        def log(self, metrics: dict[str, float], step: int) -> None:
            if step == self.at and "train/loss" in metrics:
                os.kill(os.getpid(), signal.SIGUSR1)
                time.sleep(0.01)

    spec = _spec(steps=6, eval_every=100)
    # a step decides before its row is logged: a signal during step 5's row is seen by step 6, the last
    run = train(spec, tmp_path / "last", sinks=[SignalAt(5)])
    assert (run.path / "COMPLETE").read_text() == "6\n"
    assert sorted(list_checkpoints(run.path)) == [0, 6]
    with pytest.raises(Preempted) as caught:
        train(spec, tmp_path / "mid", sinks=[SignalAt(2)])
    assert (caught.value.step, caught.value.checkpoint) == (3, tmp_path / "mid" / "checkpoints" / "3")
    assert sorted(list_checkpoints(tmp_path / "mid")) == [0, 3]
    assert not (tmp_path / "mid" / "COMPLETE").exists()


def _children(pid: int) -> list[int]:
    """Direct child processes of `pid` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found += [int(c) for c in text.split()]
    return found


def _torchrun(spec: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "wsdlab",
            "train", "--config", str(spec), "--out", str(out)]


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_both_at_the_same_checkpoint(tmp_path: Path) -> None:
    """Under torchrun a signal that reaches one rank only stops every rank after the same step (they agree
    each step); rank 0 writes that checkpoint and the rerun ends bit-identical to an uninterrupted run."""
    spec_path = tmp_path / "spec.yaml"
    write_spec(_spec(steps=40, eval_every=1, eval_batches=8, checkpoint_every=20), spec_path)
    reference = tmp_path / "reference"
    done = subprocess.run(_torchrun(spec_path, reference), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "preempted"
    proc = subprocess.Popen(_torchrun(spec_path, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_past(proc, out, 3)
        workers = _children(proc.pid)
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGUSR1)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in stderr.splitlines() if line.startswith("preempted at step ")]
    assert len(lines) == 2 and lines[0] == lines[1], stderr[-3000:]  # both ranks, the same step
    stop = int(lines[0].removeprefix("preempted at step ").split(":")[0])
    assert stop in list_checkpoints(out) and last_step(out) == stop and not (out / "COMPLETE").exists()

    rerun = subprocess.run(_torchrun(spec_path, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    final, expected = load_file(out / "checkpoints/40/model.safetensors"), load_file(reference / "checkpoints/40/model.safetensors")
    assert all(final[k].equal(expected[k]) for k in expected)  # bit for bit
    assert rows(out) == rows(reference)
