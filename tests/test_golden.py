"""Golden loss curve: the first 20 training losses of a tiny fixed run, against numbers written here.

The run: the `micro` preset (char tokenizer on the embedded default corpus, the ~1K-parameter Llama),
a WSD schedule (4 warmup steps, last 25% decay), 20 steps, fp32 on the CPU with one thread.

A change of these numbers means the numerics of training changed (model, initialisation, data order,
tokenizer, optimizer, schedule or loss): find out why before regenerating them. To regenerate, run
`python tests/test_golden.py` under ATEN_CPU_CAPABILITY=default, =avx2 and =avx512 (with PYTHONPATH=src)
and write here the midpoint of the three per step; they agreed to 4.8e-7 when written, so each value
was within 2.4e-7 of every kernel set's, well inside the 1e-6 tolerance.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wsdlab.train import RunSpec, run_preset, train

GOLDEN_LOSSES = [
    3.46503067, 3.44685769, 3.37813425, 3.28995085, 3.17615175,
    3.09874523, 2.90037918, 2.81248450, 2.93019652, 2.59146619,
    2.68451846, 3.23157012, 2.53068841, 2.75440836, 2.63675094,
    2.44826472, 2.78869927, 2.39381325, 2.54931545, 2.80657518,
]


def golden_spec() -> RunSpec:
    data = run_preset("micro").model_dump()
    data["schedule"].update({"kind": "wsd", "warmup_steps": 4, "cooldown_fraction": 0.25})
    data["train"].update({"steps": 20, "checkpoint_every": None, "snapshot_every": None, "eval_every": 20,
                          "device": "cpu", "precision": "fp32", "progress": False})
    return RunSpec.model_validate(data)


def golden_losses(out: Path) -> list[float]:
    """The run's training losses, on one thread (a parallel reduction sums in another order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [r["loss"] for r in train(golden_spec(), out).metrics()]
    finally:
        torch.set_num_threads(threads)


def test_first_20_losses_match_the_golden_curve(tmp_path: Path) -> None:
    assert golden_losses(tmp_path / "run") == pytest.approx(GOLDEN_LOSSES, abs=1e-6, rel=0)


if __name__ == "__main__":  # prints the losses to write above
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(",\n".join(f"{v!r}" for v in golden_losses(Path(d) / "run")))
