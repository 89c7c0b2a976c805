"""A run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run (CPU, subprocesses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from run_logs import last_step, rows

from wsdlab.train import RunSpec, run_preset
from wsdlab.train.spec_io import write_spec

SCRIPT = """
import sys, time
from wsdlab.train import MetricsSink, train
from wsdlab.train.spec_io import read_spec

class Slow(MetricsSink):  # stretches the run so the kill lands mid-training; results are unaffected
    def log(self, metrics, step):
        time.sleep(float(sys.argv[3]))

train(read_spec(sys.argv[1]), sys.argv[2], sinks=[Slow()])
"""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run(script: Path, spec: Path, out: Path, delay: float) -> None:
    proc = subprocess.run([sys.executable, str(script), str(spec), str(out), str(delay)], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_sigkill_then_resume_is_bit_identical(tmp_path: Path) -> None:
    data = run_preset("micro").model_dump()
    data["train"].update(steps=24, checkpoint_every=6, eval_every=6, snapshot_every=None, progress=False)
    spec_path = tmp_path / "spec.yaml"
    write_spec(RunSpec.model_validate(data), spec_path)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)

    reference = tmp_path / "reference"
    _run(script, spec_path, reference, 0.0)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(spec_path), str(killed), "0.1"], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        # kill a few steps past checkpoint 6: the rows beyond it must be dropped on resume
        while not ((killed / "checkpoints" / "6").is_dir() and last_step(killed) >= 8):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the run did not get past step 8"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "COMPLETE").exists()

    _run(script, spec_path, killed, 0.0)
    assert (killed / "COMPLETE").exists()
    for name in ("model.safetensors", "optimizer.safetensors"):
        assert (killed / "checkpoints/24" / name).read_bytes() == (reference / "checkpoints/24" / name).read_bytes()
    assert rows(killed) == rows(reference)
    assert (killed / "batches.npy").read_bytes() == (reference / "batches.npy").read_bytes()
    assert sorted(os.listdir(killed / "checkpoints")) == sorted(os.listdir(reference / "checkpoints"))


def test_killed_between_final_checkpoint_and_complete_finishes(tmp_path: Path) -> None:
    """The state a kill leaves after the final checkpoint: resume only writes COMPLETE (files unchanged)."""
    from wsdlab.train import RunDir, train

    data = run_preset("micro").model_dump()
    data["train"].update(steps=4, checkpoint_every=2, eval_every=2, snapshot_every=None, progress=False)
    spec = RunSpec.model_validate(data)
    out = tmp_path / "run"
    train(spec, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "COMPLETE"}
    (out / "COMPLETE").unlink()
    assert not RunDir(out).is_complete
    assert train(spec, out).is_complete
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "COMPLETE"} == before


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
