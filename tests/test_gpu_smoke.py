"""The GPU smoke test's CPU path (lists every check, exit 0), its MFU formula and table, and `wsdlab doctor`."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from wsdlab.cli import app
from wsdlab.cli.gpu_smoke import CHECKS, Result, check_hvp_attention, format_table, mfu, run_smoke, run_worker, worker

REPO = Path(__file__).resolve().parents[1]


def test_without_cuda_the_script_lists_each_check_and_exits_0() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_smoke.py")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "no CUDA device: nothing run. On a CUDA machine this runs:"
    assert lines[1:] == [f"  {name}: {what}" for name, what in CHECKS.items()]
    assert list(CHECKS) == ["bf16-compile-210M", "ddp", "fsdp", "fsdp-1B-ac", "hvp-attention"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU `doctor --gpu` runs the whole smoke test")
def test_doctor_prints_the_facts_and_the_checks_it_would_run() -> None:
    result = CliRunner().invoke(app, ["doctor", "--gpu"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[2].split() == ["torch", torch.__version__]
    assert lines[3].split() == ["cuda", "available", "False"]
    assert [line.split(":")[0].strip() for line in lines if line.startswith("  ")] == list(CHECKS)


def test_mfu_is_six_n_tokens_per_second_over_the_peak() -> None:
    # 170M non-embedding parameters at 300k tokens/s on an H100 (989 TFLOP/s dense bf16)
    assert mfu(170_000_000, 300_000.0, 989e12) == pytest.approx(6 * 170e6 * 3e5 / 989e12)
    assert round(mfu(170_000_000, 300_000.0, 989e12), 4) == 0.3094
    assert mfu(170_000_000, 300_000.0, None) is None


def test_the_table_has_one_row_per_check() -> None:
    table = format_table([Result("ddp", None, 0.0, "skipped: DDP needs 2 GPUs, 1 visible"),
                          Result("fsdp-1B-ac", True, 41.25, "1 GPU(s), peak 30.1 GiB/GPU")])
    assert table.splitlines() == [
        "check       status  seconds  detail",
        "ddp         skip        0.0  skipped: DDP needs 2 GPUs, 1 visible",
        "fsdp-1B-ac  ok         41.2  1 GPU(s), peak 30.1 GiB/GPU",
    ]


@pytest.mark.parametrize("kind", ["ddp", "fsdp-1B-ac"])
def test_the_torchrun_checks_run_on_two_cpu_ranks(kind: str) -> None:
    """The torchrun workers' code on two gloo ranks with the micro preset (the GPU run swaps in 60M / 1B)."""
    result = run_worker(kind, 2, device_kind="cpu")
    assert (result.check, result.ok) == (kind, True), result.detail
    assert result.detail.startswith("2 GPU(s), step(s) ")
    assert result.detail.endswith("peak 0.0 GiB/GPU" if kind == "ddp" else "peak 0.0 GiB/GPU, sharded")


def test_the_fsdp_worker_alone_shards_in_a_group_of_one() -> None:
    out = worker("fsdp", device_kind="cpu")  # no torchrun: WORLD_SIZE unset
    assert (out["world"], out["distributed"], out["sharded"], out["peak_gib"]) == (1, True, True, 0.0)
    assert out["loss"] == pytest.approx(math.log(32), abs=0.3)  # an initialised model over 32 tokens: ~uniform


def test_ddp_on_one_gpu_is_skipped() -> None:
    assert run_worker("ddp", 1) == Result("ddp", None, 0.0, "skipped: DDP needs 2 GPUs, 1 visible")


def test_the_hvp_check_is_symmetric_on_cpu() -> None:
    result = check_hvp_attention("cpu")
    assert (result.check, result.ok) == ("hvp-attention", True), result.detail
    gap = float(result.detail.rsplit("relative gap ", 1)[1])
    assert gap < 1e-3


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_check_passes_on_cuda() -> None:
    lines: list[str] = []
    assert run_smoke(lines.append) == 0, "\n".join(lines)
    rows = [line.split()[0] for line in lines[2:]]  # after the device line and the table header
    assert rows == list(CHECKS)
