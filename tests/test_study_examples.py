"""The example stage studies run end to end with --quick (real tiny training); `study plan` and
`study list` describe them; a moved half-finished study resumes where it stopped."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from wsdlab.cli import app
from wsdlab.study.plan import expand_plan
from wsdlab.study.resolve import Resolver
from wsdlab.study.runner import run_study
from wsdlab.study.executors import SequentialExecutor
from wsdlab.study.spec import find_study, load_study, parse_study
from wsdlab.train.checkpoint import list_checkpoints
from wsdlab.train.runstore import RunDir

runner = CliRunner()


def run_cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def complete(study: Path) -> dict[str, RunDir]:
    return {p.name.rsplit("-", 1)[0]: RunDir(p) for p in (study / "runs").iterdir() if (p / "COMPLETE").is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("name, expected", [
    ("universality", {"lm-wsd-seed0", "lm-wsd-seed1", "lm-cosine-seed0", "lm-cosine-seed1",
                      "cnn-wsd-seed0", "cnn-wsd-seed1", "cnn-cosine-seed0", "cnn-cosine-seed1",
                      "cnn-wso-seed0", "cnn-wso-seed1", "cnn-cd-5-seed0", "cnn-cd-10-seed0", "cnn-cd-5-seed1",
                      "cnn-cd-10-seed1"}),
    ("length-sweep", {"wso", "cd-2", "cd-4", "cd-6", "cosine"}),
    ("schedule-alpha", {f"{stage}-{k}-alpha{a}" for stage in ("pretrain", "mid")
                        for k, a in (("wso", 0), ("wsd", 0), ("wsd", 0.1), ("cosine", 0), ("cosine", 0.1),
                                     ("linear", 0), ("linear", 0.1))}),
])
def test_example_study_runs_quick(tmp_path: Path, name: str, expected: set[str]) -> None:
    torch.set_num_threads(1)
    out = tmp_path / name
    run_cli("study", "run", name, "--quick", "--out", str(out))
    runs = complete(out)
    assert set(runs) == expected
    assert (out / "report.html").is_file() and (out / "tables" / "runs.csv").is_file()
    if name == "universality":  # WSD runs keep the checkpoints at 80% and 100% of their stable phase
        spec = runs["lm-wsd-seed0"].spec  # 20 steps, warmup 2, cooldown 4: stable phase [2, 16]
        assert {2 + round(0.8 * 14), 16} <= set(runs["lm-wsd-seed0"].checkpoint_steps())
        assert spec.schedule.kind == "wsd" and runs["cnn-cosine-seed1"].spec.train.seed == 1
        assert runs["cnn-wsd-seed0"].spec.model.arch == "cnn"
        # the CNN's length sweep: 25% and 50% of the 20-step budget, branching from the WSO base
        assert [runs[f"cnn-cd-{n}-seed1"].spec.branch.parent_step for n in (5, 10)] == [15, 10]
        assert runs["cnn-cd-5-seed1"].spec.train.seed == 1  # each seed's sweep branches from its own base
        # one-step updates (Fig. 4): the step after a sampled snapshot is on disk
        assert {2, 3, 6, 7} <= set(runs["lm-wsd-seed0"].snapshot_steps())
        tables = {p.stem for p in (out / "tables").glob("*.csv")}
        assert {"universality_curves", "universality_norms", "universality_interpolate", "universality_sharpness",
                "universality_trajectory", "universality_length"} <= tables
        sharp = list(csv.DictReader((out / "tables" / "universality_sharpness.csv").open()))
        assert sharp and all(r["converged"] == "True" for r in sharp)  # lambda_1 solved to its tolerance
        curves = (out / "tables" / "universality_curves.csv").read_text()
        assert "accuracy" in curves.splitlines()[0]
        html = (out / "report.html").read_text()
        assert all(f'id="fig-{name}"' in html for name in ("univ_curves", "univ_interpolation", "univ_length"))
    if name == "length-sweep":  # every cooldown ends at step 20, branching where its length says
        for steps in (2, 4, 6):
            spec = runs[f"cd-{steps}"].spec
            assert spec.train.steps == 20 and spec.branch.parent_step == 20 - steps
            assert spec.schedule.cooldown_steps == steps
        assert {14, 16, 18} <= set(runs["wso"].checkpoint_steps())
    if name == "schedule-alpha":  # mid-training: the pre-training schedule goes on, on the other data half
        mid = runs["mid-cosine-alpha0.1"].spec
        assert mid.schedule.kind == "cosine" and mid.schedule.alpha == 0.1
        assert mid.schedule.mid.steps == 4 and mid.train.steps == 14 and mid.data.order.portion == 1
        assert runs["pretrain-cosine-alpha0.1"].spec.data.order.portion == 0
    # a second run trains nothing
    before = {k: r.path.stat().st_mtime_ns for k, r in runs.items()}
    run_cli("study", "run", name, "--quick", "--out", str(out))
    assert {k: r.path.stat().st_mtime_ns for k, r in complete(out).items()} == before


def test_plan_shows_runs_compute_and_progress(tmp_path: Path) -> None:
    text = run_cli("study", "plan", "length-sweep", "--quick", "--out", str(tmp_path / "none"),
                   "--device", "a100", "--mfu", "0.5")
    assert "cd-4" in text and "at.step=16" in text and "5 runs (5 distinct), 0 done, 5 left" in text
    assert "GPU-hours on one a100 at 50% MFU" in text
    assert not (tmp_path / "none").exists()  # nothing written
    bad = runner.invoke(app, ["study", "plan", "length-sweep", "--device", "tpu"])
    assert bad.exit_code == 2 and "unknown device 'tpu'" in bad.output


def test_list_names_every_builtin_study() -> None:
    text = run_cli("study", "list")
    for name in ("default", "universality", "length-sweep", "schedule-alpha", "paper-60M"):
        assert name in text
    assert "-quick" not in text


def test_find_study_by_name_path_and_quick(tmp_path: Path) -> None:
    assert find_study("universality", quick=True).name == "universality-quick.yaml"
    assert find_study(None).name == "default.yaml" and find_study(None, quick=True).name == "default-quick.yaml"
    spec = tmp_path / "mine.yaml"
    spec.write_text("name: mine\n")
    assert find_study(str(spec)) == spec
    with pytest.raises(ValueError, match="no quick variant"):
        find_study(str(spec), quick=True)
    with pytest.raises(ValueError, match="unknown built-in study 'nope'"):
        find_study("nope")


def tiny_study(name: str = "moved") -> dict:
    lm = {"model": {"vocab_size": 512, "seq_len": 32, "d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1,
                    "ffn_dim": 64},
          "data": {"source": "stdlib", "max_documents": 300, "vocab_size": 512, "seq_len": 32},
          "schedule": {"kind": "wso", "warmup_steps": 2},
          "train": {"steps": 6, "batch_size": 8, "eval_every": 3, "eval_batches": 1, "device": "cpu"}}
    return {"name": name, "stages": {
        "base": {"preset": "tiny", "spec": lm},
        "cd": {"from": "base", "at": {"step": 4}, "branch": {"steps": 6, "shape": "linear"},
               "overrides": {"train.checkpoint_every": 2}},
    }}


@pytest.mark.slow
def test_a_moved_half_finished_study_resumes(tmp_path: Path) -> None:
    """Kill-free version of 'move a half-finished study': the branch is cut back to a middle checkpoint
    (as a kill would leave it), the study folder moved, and the re-run finishes it from that checkpoint,
    to the same weights as an uninterrupted run, without retraining the parent."""
    torch.set_num_threads(1)
    study = parse_study(tiny_study())
    first = tmp_path / "first"
    run_study(study, first, executor=SequentialExecutor())
    runs = complete(first)
    cd = runs["cd"]
    assert cd.spec.branch.parent_step == 4 and cd.spec.train.steps == 10
    final = {k: v.clone() for k, v in cd.load_model().state_dict().items()}
    # leave it half-finished: drop COMPLETE and the checkpoints after step 6
    (cd.path / "COMPLETE").unlink()
    for step, path in list_checkpoints(cd.path).items():
        if step > 6:
            shutil.rmtree(path)
    moved = tmp_path / "elsewhere" / "study"
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))
    base_mtime = (moved / "runs" / runs["base"].path.name / "COMPLETE").stat().st_mtime_ns
    run_study(study, moved, executor=SequentialExecutor())
    again = complete(moved)
    assert set(again) == {"base", "cd"}
    assert (moved / "runs" / runs["base"].path.name / "COMPLETE").stat().st_mtime_ns == base_mtime
    rows = [json.loads(line) for line in (again["cd"].path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "split" not in r]
    assert steps == list(range(5, 11))  # steps 5-6 kept, 7-10 trained again once (no duplicate rows)
    for key, value in again["cd"].load_model().state_dict().items():
        assert torch.equal(value, final[key]), key
    plan = expand_plan(study)
    assert Resolver(plan, moved).resolve(plan["cd"]).path.name == cd.path.name  # same identity after the move


@pytest.mark.parametrize("name", ["wso-1b", "universality-gpu", "paper-60M", "paper-210M"])
def test_gpu_studies_ship_slurm_sections_that_can_finish(name: str) -> None:
    """Every job of a GPU study makes progress under Slurm: a checkpoint on the wall clock well inside the
    job's time limit, and SIGUSR1 (the loop's checkpoint-and-exit signal) some minutes before that limit."""
    study = load_study(find_study(name))
    slurm = study.slurm
    delay = slurm.signal_delay_s  # submitit's signal, handed to the loop's checkpoint-and-exit handler
    assert "slurm_signal_delay_s" not in slurm.additional and "slurm_additional_parameters" not in slurm.additional
    assert 60 <= delay <= 600 < 60 * slurm.timeout_min
    roots = [run.spec for run in expand_plan(study, num_train=10**9).runs if run.parent is None]
    assert roots  # (branches inherit their parent's train config)
    minutes = {spec.train.checkpoint_every_minutes for spec in roots}
    assert len(minutes) == 1 and next(iter(minutes)) * 2 <= slurm.timeout_min
